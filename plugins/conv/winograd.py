"""Winograd F(2x2, 3x3) convolution (Lavin & Gray 2015, "Fast Algorithms for Convolutional Neural
Networks") for 3x3, stride-1, dilation-1 conv2d: the forward pass and both gradients.

1-D F(2, 3) gives two outputs of a 3-tap correlation of a 4-wide input tile ``d`` with the taps
``g`` in 4 multiplications instead of 6: ``y = A^T [(G g) * (B^T d)]`` with

    B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]
    G   = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]
    A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]

Nested, a 2x2 output tile comes from a 4x4 input tile (tiles overlap by 2) as ``Y = A^T [U * V] A``,
``U = G g G^T``, ``V = B^T d B``: 16 multiplications instead of 36. Summed over the input channels,
the element-wise products become 16 matrix products, one per tile position ``k = 4*xi + nu``:

    M[k] = U[k] @ V[k]        (O, C) @ (C, T)  per group, T tiles

Tile ``(n, ti, tj)`` makes output rows ``2ti, 2ti+1`` and columns ``2tj, 2tj+1`` from input rows
``2ti - top + (0..3)`` and columns ``2tj - left + (0..3)`` (zero outside x); outputs of the last
tiles that fall outside y are dropped. The gradients:

    dx = conv(dY, rot180(w)^T) with padding 2 - top, 2 - left: the same algorithm on the output
         gradient, with U made from the rotated filter, input and output channels swapped
    dW = G^T dU G,  dU[k] = sum over tiles dM[k] @ V[k]^T,  dM = A dY A^T per 2x2 tile of dY
         (the chain rule through M = U * V: every step is linear); here V is made tile-major,
         ``(T, C)``, from a channels-last copy of x, so that the sum is a product along the tiles

Each pass is one parallel loop over blocks of tile rows (those of all samples, in order): a thread
transforms the block's input tiles into its own buffer (about BLOCK_BYTES), makes the 16 products
with a register-blocked kernel (no BLAS) and transforms them into y, or adds dU into its own
partial sum (the partial sums are added at the end), so the tiles stay in cache.
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np
from numba import prange

from cnnrun.engine.jit import (REDUCTION_CHUNKS, chunk_items, cpu_kernel, launch, num_threads, reduction_chunks,
                               serial_kernel)

from cnnrun.plugins.common import Geometry, bias_grad, round_up
from cnnrun.plugins.products.cpu import matrix_product, rows_product

from .direct import channels_last
from .vectors import channel_tiles, gradient_tiles, input_tiles, output_tiles

BLOCK_BYTES = 1 << 20
"""Each thread's transformed tiles (V and M of a block of tile rows) take about this many bytes (half
an Emerald Rapids core's L2: 1 MiB against 4 MiB is 5-16 % faster at batch 128, 16-64 channels,
forward and backward; 256 KiB slower)..."""
MIN_TILES = 96
"""... and hold at least this many tiles (the products run along the tiles) ..."""

WEIGHT_MIN_TILES = 512
"""... at least this many in the weight gradient's pass (its products run into accumulators of dU
loaded and stored once a panel of tiles): 32->32 on 16x16 maps, batch 128, 5.2 ms against 6.2 with
blocks of 96 tiles (1 thread, 2026-12-02), even on 8x8 and 32x32 maps, 64->64 on 56x56, batch 32,
52 against 48 (set when these were dot products summed across lanes a block: 87 against 78-80)."""

WINOGRAD_MIN_CHANNELS = 64
"""auto picks Winograd when (C/G) * (O/G) reaches this, C/G reaches WINOGRAD_MIN_IN_CHANNELS ..."""
WINOGRAD_MIN_IN_CHANNELS = 4
WINOGRAD_MIN_SIZE = 8
"""... and the output is at least this tall and wide (see :func:`choose_algorithm`)."""

B_T = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float64)
G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float64)
A_T = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float64)
"""The transform matrices of F(2, 3), as in the paper; the kernels below spell them out."""


def fits(kernel, stride, dilation) -> bool:
    """Whether F(2x2, 3x3) computes this convolution: a 3x3 kernel, stride 1, dilation 1."""
    return tuple(kernel) == (3, 3) and tuple(stride) == (1, 1) and tuple(dilation) == (1, 1)


def choose_algorithm(channels: int, out_channels: int, geom: Geometry, out_hw) -> str | None:
    """conv2d's ``"auto"``: ``"winograd"`` for a 3x3, stride-1, dilation-1 conv that is not depthwise,
    with ``(C/G) * (O/G) >= WINOGRAD_MIN_CHANNELS``, ``C/G >= WINOGRAD_MIN_IN_CHANNELS`` and
    ``min(OH, OW) >= WINOGRAD_MIN_SIZE``; else ``None`` (:mod:`.cpu` chooses).

    Measured against :mod:`.cpu`'s direct path with the vectorized transforms (float32, forward +
    backward, 1 thread CPU time, Emerald Rapids, 2026-12-02): Winograd is 1.07x as fast at 16->16 on
    32x32 (batch 32; 1.23x on 2 threads), 1.38x at 16x16, 1.57x at 8->8, 1.35x at 8->16, 1.14x at
    4->16, 1.7x at 64->64 on 56x56; even at 3->32 (1.0x) and slower at 3->64 on 56x56 (0.54x: a
    reduction over 3 channels, padded to 4, is too short for the products) and, forward, on 4x4
    maps (0.6-0.77x). At batch 1, 16->16 on 32x32 is 0.93x (the wrappers' cost), not worth a rule
    of its own. (Before the transforms were vectorized, Winograd paid from 32 x 32 channels.)
    """
    per_group = (channels // geom.groups) * (out_channels // geom.groups)
    if (fits(geom.kernel, geom.stride, geom.dilation) and channels > geom.groups
            and channels // geom.groups >= WINOGRAD_MIN_IN_CHANNELS
            and per_group >= WINOGRAD_MIN_CHANNELS and min(out_hw) >= WINOGRAD_MIN_SIZE):
        return "winograd"
    return None


# -- public wrappers ------------------------------------------------------------------------------
def conv2d_forward(ctx, x, weight, bias, geom: Geometry, out_hw) -> np.ndarray:
    """``conv(x, weight) + bias`` of shape ``(N, O, *out_hw)`` by Winograd, for a ``geom`` that
    :func:`fits`."""
    x = np.ascontiguousarray(x)
    y = np.empty((x.shape[0], weight.shape[0], *out_hw), x.dtype)
    u = _filter(ctx, "winograd.u", weight, geom.groups, rotated=False)
    base = bias if bias is not None else np.zeros(y.shape[1], y.dtype)
    _convolve(ctx, x, u, base, y, *geom.padding)
    return y


def conv2d_backward(ctx, x, grad, weight, geom: Geometry, grad_weight, grad_bias, input_grad=True) -> np.ndarray | None:
    """The gradient of :func:`conv2d_forward` with respect to ``x`` (None, not computed, unless
    ``input_grad``); overwrites ``grad_weight`` and ``grad_bias`` (each ``None``: not computed)."""
    x, grad = np.ascontiguousarray(x), np.ascontiguousarray(grad, x.dtype)
    bias_grad(grad, grad_bias)
    groups, (top, left) = geom.groups, geom.padding
    if grad_weight is not None:
        tiles = _tiles(grad.shape[2:])
        buffers = _buffers(ctx, x, grad.shape[1], groups, tiles, weight_pass=True)
        blocks = -(-x.shape[0] * tiles[0] // buffers.rows)
        partial = ctx.workspace("winograd.du", (reduction_chunks(blocks), *_packed_shape(grad.shape[1], x.shape[1],
                                                                                         groups)), x.dtype)
        partial.fill(0)
        image = ctx.workspace("winograd.nhwc", (x.shape[0], 2 * tiles[0] + 2, 2 * tiles[1] + 2, x.shape[1]), x.dtype)
        launch(channels_last, image.size, x, image, top, left)
        rows = np.arange(buffers.rows * tiles[1], dtype=np.int64) * (groups * partial.shape[4])  # V's tile rows
        launch(_filter_gradient_sums, _work(x, grad.shape[1], groups, tiles), image, grad, *tiles, *buffers, rows,
               partial)
        du = ctx.workspace("winograd.du.sum", partial.shape[1:], x.dtype)
        np.sum(partial, axis=0, out=du)
        launch(_filter_gradient, grad_weight.size, du, grad_weight)
    if not input_grad:
        return None
    dx = np.empty(x.shape, x.dtype)
    u = _filter(ctx, "winograd.u.rotated", weight, groups, rotated=True)
    _convolve(ctx, grad, u, np.zeros(x.shape[1], x.dtype), dx, 2 - top, 2 - left)
    return dx


# -- helpers of the wrappers ----------------------------------------------------------------------
def _tiles(out_hw) -> tuple[int, int]:
    """Tiles down and across: ``ceil(OH / 2), ceil(OW / 2)``."""
    return -(-out_hw[0] // 2), -(-out_hw[1] // 2)


def _packed_shape(rows: int, cols: int, groups: int) -> tuple[int, int, int, int]:
    """``(16, G, R/G, C/G)`` with both per-group counts rounded up to multiples of 4."""
    return 16, groups, round_up(rows // groups), round_up(cols // groups)


def _filter(ctx, key, weight, groups, rotated):
    """U = G g G^T of every filter, ``(16, G, O/G, C/G)`` zero-padded to multiples of 4 (rotated:
    of the rotated filters, ``(16, G, C/G, O/G)``), in the workspace ``key``; computed once for a
    frozen context (an inference plan's)."""
    return ctx.derived(key, lambda: _transformed(ctx, key, weight, groups, rotated))


def _transformed(ctx, key, weight, groups, rotated):
    o, cg = weight.shape[:2]
    shape = _packed_shape(cg * groups, o, groups) if rotated else _packed_shape(o, cg * groups, groups)
    u = ctx.workspace(key, shape, weight.dtype)
    u.fill(0)
    launch(_filter_tiles, weight.size * 2, weight, u, rotated)
    return u


def _buffers(ctx, x, out_channels, groups, tiles, weight_pass=False):
    """A :class:`_Tiles` of per-thread buffers for the transformed input V (R = C/G rows a group)
    and the products M (R = O/G), R rounded up to a multiple of 4 and the padding rows zero,
    carved from one workspace: ``(threads, 16, plane)``, the rows of tile position k one after
    the other, ``(G, R, count)``, each row and each plane an odd number of cache lines long
    (:func:`_odd_lines`); the weight gradient's pass fills V's planes tile-major instead, ``(tiles,
    G*R)`` (:func:`_filter_gradient_sums`).

    A block holds about BLOCK_BYTES of tiles, at least MIN_TILES (WEIGHT_MIN_TILES in the
    ``weight_pass``); there are at least REDUCTION_CHUNKS
    blocks where the tiles allow it (else a small pass, e.g. 64 channels on 8x8 maps at batch 32,
    is one block: one thread); the blocks are evened out and, from REDUCTION_CHUNKS blocks up, made
    a multiple of it, so that the threads get even work and the blocks depend on the shapes alone
    (the weight gradient's sums over them are reproducible). Made once per shape
    (:meth:`~cnnrun.engine.layer.Context.per_shape`).
    """
    signature = (x.shape, x.dtype, out_channels, groups, tiles, weight_pass, num_threads(), BLOCK_BYTES,
                 MIN_TILES, WEIGHT_MIN_TILES)
    return ctx.per_shape("winograd.tiles", signature, lambda: _carved(ctx, x, out_channels, groups, tiles, weight_pass))


def _carved(ctx, x, out_channels, groups, tiles, weight_pass):
    """:func:`_buffers`' work, once per shape: the block size, the views, the padding rows zeroed."""
    in_channels, dtype = x.shape[1], x.dtype
    v_rows, m_rows = round_up(in_channels // groups), round_up(out_channels // groups)
    per_row = 16 * groups * (v_rows + m_rows) * tiles[1]  # values per tile row
    total, threads, budget = x.shape[0] * tiles[0], num_threads(), BLOCK_BYTES // dtype.itemsize
    least = -(-(WEIGHT_MIN_TILES if weight_pass else MIN_TILES) // tiles[1])  # tile rows
    rows = max(budget // per_row, least)
    blocks = max(-(-total // rows), min(REDUCTION_CHUNKS, total // least))  # enough for the threads
    if blocks >= REDUCTION_CHUNKS:
        blocks = -(-blocks // REDUCTION_CHUNKS) * REDUCTION_CHUNKS
    rows = -(-total // blocks)
    count = _odd_lines(rows * tiles[1], dtype)
    v_plane, m_plane = (_odd_lines(groups * r * count, dtype) for r in (v_rows, m_rows))
    v_size, m_size = threads * 16 * v_plane, threads * 16 * m_plane
    flat = ctx.workspace("winograd.tiles", (max(threads * budget, v_size + m_size),), dtype)  # one size, mostly
    v = flat[:v_size].reshape(threads, 16, v_plane)
    mm = flat[v_size:v_size + m_size].reshape(threads, 16, m_plane)
    for buffer, used, padded in ((v, in_channels // groups, v_rows), (mm, out_channels // groups, m_rows)):
        _rows_of(buffer, groups, padded, count)[..., used:, :] = 0
    return _Tiles(rows, count, v, mm)


class _Tiles(NamedTuple):
    """What :func:`_buffers` carves: tile rows per block, the row length, V and M."""

    rows: int
    count: int
    v: np.ndarray
    mm: np.ndarray


def _rows_of(buffer, groups, rows, count):
    """``buffer`` ``(threads, 16, plane)`` as ``(threads, 16, G, rows, count)`` (a view: the planes'
    padding left out)."""
    item = buffer.itemsize
    return np.lib.stride_tricks.as_strided(buffer, (*buffer.shape[:2], groups, rows, count),
                                           (*buffer.strides[:2], rows * count * item, count * item, item))


def _odd_lines(values: int, dtype) -> int:
    """``values`` rounded up to an odd number of 64-byte cache lines, the length of V's and M's rows
    and planes: rows a power of two apart map to the same few L1 sets, and the products read a
    panel of 96 of them at once (ResNet-20's 32-channel 16x16 convs at batch 32 have blocks of 1024
    tiles: 1.4x slower forward); planes of 64 such rows are a multiple of 64 lines, which put the
    16 values of every tile a transform stores (or loads) in one set (transforms 1.5-2.2x slower
    on 64 channels)."""
    per_line = 64 // np.dtype(dtype).itemsize
    lines = -(-values // per_line)
    return (lines + 1 - lines % 2) * per_line


def _work(x, out_channels, groups, tiles) -> int:
    """The work of a pass for :func:`cnnrun.engine.jit.launch`: per tile, 16 * (C/G) * (O/G) * G
    vectorized multiply-adds (1/8 each) and 16 * (C + O) transformed values."""
    channels = x.shape[1]
    per_tile = 2 * channels * (out_channels // groups) + 16 * (channels + out_channels)
    return x.shape[0] * tiles[0] * tiles[1] * per_tile


def _convolve(ctx, x, u, base, y, top, left):
    """y = base + conv(x, w) by F(2x2, 3x3), U = w's packed transformed filters (:func:`_filter`),
    x read from rows ``2ti - top`` and columns ``2tj - left`` (``top``/``left`` may be negative)."""
    tiles = _tiles(y.shape[2:])
    launch(_convolve_blocks, _work(x, y.shape[1], u.shape[1], tiles), x, u, base, y, top, left, *tiles,
           *_buffers(ctx, x, y.shape[1], u.shape[1], tiles))


# -- kernels --------------------------------------------------------------------------------------


@cpu_kernel
def _convolve_blocks(x, u, base, y, top, left, tiles_h, tiles_w, rows, count, v_all, m_all):
    """y[n, o] = base[o] + A^T (sum over the channels c of o's group: U[:, g, o, c] * V[:, c]) A for
    every tile; parallel over blocks of ``rows`` tile rows (of all samples, in order), each thread
    in its own V and M (:func:`_buffers`: rows ``count`` long)."""
    channels, out_channels = x.shape[1], y.shape[1]
    groups, m_rows, v_rows = u.shape[1], u.shape[2], u.shape[3]
    per_in, per_out = channels // groups, out_channels // groups
    total = x.shape[0] * tiles_h
    for block in prange((total + rows - 1) // rows):
        r0 = block * rows
        r1 = min(r0 + rows, total)
        thread = numba.get_thread_id()
        v, mm = v_all[thread], m_all[thread]
        for c in range(channels):
            g = c // per_in
            _input_block(x, c, v, (g * v_rows + c - g * per_in) * count, top, left, r0, r1, tiles_h, tiles_w)
        for k in range(16):
            v_k, m_k = _matrices(v, k, groups, v_rows, count), _matrices(mm, k, groups, m_rows, count)
            for g in range(groups):
                matrix_product(u[k, g], v_k[g], (r1 - r0) * tiles_w, m_k[g])
        for o in range(out_channels):
            g = o // per_out
            _output_block(mm, (g * m_rows + o - g * per_out) * count, base[o], y, o, r0, r1, tiles_h, tiles_w)


@cpu_kernel
def _filter_gradient_sums(image, grad, tiles_h, tiles_w, rows, count, v_all, m_all, offsets, partial):
    """partial[chunk, k, g, o, c] += sum over the tiles of the chunk's blocks of dM[k, o, t] * V[k, t, c],
    with dM = A dY A^T of the 2x2 tiles of grad and V = B^T d B of the tiles of ``image``, x
    channels-last and padded (tile (ti, tj) at rows 2ti + (0..3), columns 2tj + (0..3)), stored
    tile-major: V[k] is ``(tiles, G*R)``, group g's R columns from g*R (``offsets[t]`` = t*G*R), so
    each sum is :func:`~cnnrun.plugins.products.cpu.rows_product` of dM's rows into V's tile rows."""
    channels, out_channels, width = image.shape[3], grad.shape[1], image.shape[2]
    chunks, groups, m_rows, v_rows = partial.shape[0], partial.shape[2], partial.shape[3], partial.shape[4]
    per_in, per_out = channels // groups, out_channels // groups
    total = grad.shape[0] * tiles_h
    for chunk in prange(chunks):
        thread = numba.get_thread_id()
        v, mm, part = v_all[thread], m_all[thread], partial[chunk]
        first, last = chunk_items((total + rows - 1) // rows, chunks, chunk)
        for block in range(first, last):
            r0 = block * rows
            r1 = min(r0 + rows, total)
            for r_ in range(r0, r1):
                n = r_ // tiles_h
                line = ((n * image.shape[1] + 2 * (r_ - n * tiles_h)) * width) * channels
                for tj in range(tiles_w):
                    t = (r_ - r0) * tiles_w + tj
                    for g in range(groups):
                        channel_tiles(image, line + 2 * tj * channels + g * per_in, width * channels, channels,
                                      per_in, v, (t * groups + g) * v_rows, v.shape[1])
            for o in range(out_channels):
                g = o // per_out
                _gradient_block(grad, o, mm, (g * m_rows + o - g * per_out) * count, r0, r1, tiles_h, tiles_w)
            tiles = (r1 - r0) * tiles_w
            for k in range(16):
                m_k = _matrices(mm, k, groups, m_rows, count)
                for g in range(groups):
                    rows_product(m_k[g, :, :tiles], v[k], offsets, g * v_rows, per_in, part[k, g])


@serial_kernel
def _matrices(buffer, k, groups, rows, count):
    """Tile position k's ``(G, rows, count)`` matrices of a thread's V or M ``(16, plane)``."""
    return buffer[k, :groups * rows * count].reshape(groups, rows, count)


@serial_kernel
def _input_block(x, channel, v, first, top, left, r0, r1, tiles_h, tiles_w):
    """v[4*xi + nu, first + t] = (B^T d B)[xi, nu] for the tiles of the tile rows [r0, r1) (row r is
    tile row r % TH of sample r // TH; tile t = (r - r0) * TW + tj), d the 4x4 tile of
    x[n, channel] at rows 2ti - top + (0..3), columns 2tj - left + (0..3), zero outside x; a
    vector of tiles at a time (:func:`.vectors.input_tiles`). x and v ``(16, plane)`` C-contiguous."""
    height, width = x.shape[2], x.shape[3]
    k_stride = v.shape[1]
    for r_ in range(r0, r1):
        n = r_ // tiles_h
        r = 2 * (r_ - n * tiles_h) - top
        row = ((n * x.shape[1] + channel) * height + r) * width  # where row r would start
        inside = 0
        for a in range(4):
            if 0 <= r + a < height:
                inside |= 1 << a
        input_tiles(x, row, row + width, row + 2 * width, row + 3 * width, inside, width, -left,
                    v, first + (r_ - r0) * tiles_w, k_stride, tiles_w)


@serial_kernel
def _output_block(mm, first, b, y, channel, r0, r1, tiles_h, tiles_w):
    """y[n, channel, 2ti + i, 2tj + j] = b + (A^T M A)[i, j], M the 16 values mm[:, first + t] of the
    tile t = (r - r0) * TW + tj of tile row r = n*TH + ti as a 4x4 tile; outputs outside y dropped
    (:func:`.vectors.output_tiles`). mm ``(16, plane)`` and y C-contiguous."""
    height, width = y.shape[2], y.shape[3]
    k_stride = mm.shape[1]
    for r_ in range(r0, r1):
        n = r_ // tiles_h
        i = 2 * (r_ - n * tiles_h)
        row = ((n * y.shape[1] + channel) * height + i) * width
        output_tiles(mm, first + (r_ - r0) * tiles_w, k_stride, y, row, row + width, min(2, height - i), width, b,
                     tiles_w)


@serial_kernel
def _gradient_block(grad, channel, mm, first, r0, r1, tiles_h, tiles_w):
    """mm[4*xi + nu, first + t] = (A dY A^T)[xi, nu], dY the 2x2 tile of grad[n, channel] at rows
    2ti + (0, 1), columns 2tj + (0, 1) (zero outside) of tile t = (r - r0) * TW + tj, r = n*TH + ti
    (:func:`.vectors.gradient_tiles`). grad and mm ``(16, plane)`` C-contiguous."""
    height, width = grad.shape[2], grad.shape[3]
    k_stride = mm.shape[1]
    for r_ in range(r0, r1):
        n = r_ // tiles_h
        i = 2 * (r_ - n * tiles_h)
        row = ((n * grad.shape[1] + channel) * height + i) * width
        gradient_tiles(grad, row, row + width, min(2, height - i), width, mm, first + (r_ - r0) * tiles_w, k_stride,
                       tiles_w)


@cpu_kernel
def _filter_tiles(w, u, rotated):
    """u[4*xi + nu, g, o, c] = (G w[g*O/G + o, c] G^T)[xi, nu]; ``rotated``: u[k, g, c, o] of the
    filter rotated by 180 degrees (w[.., 2 - i, 2 - j]). ``u`` arrives zeroed (padding stays 0)."""
    out_channels, channels = w.shape[0], w.shape[1]
    groups = u.shape[1]
    per_out = out_channels // groups
    for oc in prange(out_channels * channels):
        o = oc // channels
        c = oc - o * channels
        g = o // per_out
        tile = np.empty((3, 3), w.dtype)
        for i in range(3):
            for j in range(3):
                tile[i, j] = w[o, c, 2 - i, 2 - j] if rotated else w[o, c, i, j]
        h = np.empty((4, 3), w.dtype)  # G g: rows g0, (g0 + g1 + g2)/2, (g0 - g1 + g2)/2, g2
        for j in range(3):
            g0, g1, g2 = tile[0, j], tile[1, j], tile[2, j]
            h[0, j] = g0
            h[1, j] = (g0 + g1 + g2) * 0.5
            h[2, j] = (g0 - g1 + g2) * 0.5
            h[3, j] = g2
        row, col = (c, o - g * per_out) if rotated else (o - g * per_out, c)
        for a in range(4):
            g0, g1, g2 = h[a, 0], h[a, 1], h[a, 2]
            u[4 * a, g, row, col] = g0
            u[4 * a + 1, g, row, col] = (g0 + g1 + g2) * 0.5
            u[4 * a + 2, g, row, col] = (g0 - g1 + g2) * 0.5
            u[4 * a + 3, g, row, col] = g2


@cpu_kernel
def _filter_gradient(du, dw):
    """dw[g*O/G + o, c] = G^T dU G, dU the 16 values du[:, g, o, c] as a 4x4 tile."""
    out_channels, channels = dw.shape[0], dw.shape[1]
    per_out = out_channels // du.shape[1]
    for oc in prange(out_channels * channels):
        o = oc // channels
        c = oc - o * channels
        g = o // per_out
        ol = o - g * per_out
        h = np.empty((3, 4), dw.dtype)  # G^T dU: rows d0 + (d1 + d2)/2, (d1 - d2)/2, (d1 + d2)/2 + d3
        for b in range(4):
            d0, d1, d2, d3 = du[b, g, ol, c], du[4 + b, g, ol, c], du[8 + b, g, ol, c], du[12 + b, g, ol, c]
            h[0, b] = d0 + (d1 + d2) * 0.5
            h[1, b] = (d1 - d2) * 0.5
            h[2, b] = (d1 + d2) * 0.5 + d3
        for i in range(3):
            d0, d1, d2, d3 = h[i, 0], h[i, 1], h[i, 2], h[i, 3]
            dw[o, c, i, 0] = d0 + (d1 + d2) * 0.5
            dw[o, c, i, 1] = (d1 - d2) * 0.5
            dw[o, c, i, 2] = (d1 + d2) * 0.5 + d3
