"""The CPU kernels of the convolution family: the wrappers the layers call (``KERNELS``), and the
products by path, whose Numba kernels are in :mod:`.depthwise`, :mod:`.depthwise_3x3`, :mod:`.direct`
and :mod:`.im2col`.

Everything is 2-D (conv1d runs as ``(N, C, 1, L)``): ``y = conv(x, w)`` with x ``(N, C, H, W)``,
w ``(O, C/G, kh, kw)``, y ``(N, O, OH, OW)`` and, for ``o`` in group ``g``,

    y[n, o, i, j] = sum_{c, ki, kj} w[o, c, ki, kj] * x[n, g*C/G + c, i*sh - ph + ki*dh, j*sw - pw + kj*dw]

(zero outside x; ``ph``/``pw`` is the padding before, the padding after only shows in OH/OW). Three
products make both layers: *forward* (conv2d's forward, conv_transpose2d's input gradient),
*transpose* (conv2d's input gradient, conv_transpose2d's forward) and *weight* (both weight
gradients). They are computed by these kernels:

- **depthwise** (one input channel per group, several groups): per-plane loops; 3x3 kernels copy
  each zero-padded plane into a per-thread workspace, columns split by stride phase, and sum the
  nine products of an output at once (the forward, the weight gradient, the stride-1 transpose);
  on narrow maps the 3x3 forward runs in vectors along the rows, or, with one output channel per
  input channel and several samples, along the channels of each sample's channels-last copy.
- **shifted rows** (stride 1, few taps or a 1x1 kernel): x is laid out as zero-padded planes of
  width ``Wp = OW + (kw-1)*dw``, flattened, so output pixel ``q = i*Wp + j`` reads tap
  ``(c, ki, kj)`` at ``q + shift``, ``shift = c*plane + ki*dh*Wp + kj*dw``: every tap is the same
  contiguous run, shifted, and ``y[o, q] = sum_tap w[o, tap] * xp[q + shift(tap)]`` is a matrix
  product without im2col (the columns ``j >= OW`` are computed and dropped). The weight gradient
  ``dw[o, tap] = sum_q g[o, q] * xp[q + shift(tap)]`` dots g, spread to width Wp (zeros between its
  rows), with the same shifted runs.
- **pointwise** (1x1, stride 1, no padding, one group; a small map or many channels): x moved to channels-last
  ``(N, H, W, C)``, each output one dot product of a filter row with a pixel's C values (the
  forward, and the transpose with the transposed filter); the weight gradient
  ``dw = sum_n g_n @ x_n^T`` multiplies the output gradient's rows into the channels-last pixels.
- **channels-last patches** (many taps, >= 16 outputs per group, any stride: the weight
  gradient; very many at stride > 1: the forward): x moved to zero-padded ``(N, Hp, Wp, C)``,
  where one output pixel's taps of a kernel row are one run of ``kw*C`` values; the runs of a few
  dozen pixels are copied into rows. The weight gradient multiplies the output gradient's rows
  into them (accumulators along the taps); the forward dots them with the filter rows, 4 x 3 dot
  products at a time in registers.
- **im2col** (any stride): the columns of a tile of output pixels are gathered into a per-thread
  buffer, a block of taps at a time, and multiplied like shifted rows; the transpose multiplies
  back into columns and adds them where they were read (col2im).

At stride 1 the transpose is the forward product of the output gradient padded by
``(k-1)*d - p``, with the rotated filter (``w[o, c, kh-1-ki, kw-1-kj]``, channels swapped).
:func:`.rules.choose_path` maps the ``algorithm`` argument onto these. The multiply-adds are
:mod:`cnnrun.plugins.products.cpu`' register-blocked kernels (vector blocks written in LLVM IR),
which read contiguous runs: hence the stride-1 kernels and the copies into padded planes, patches
and columns. Work is split over (sample, tile of pixels); per-thread buffers are workspaces of the
layer (kept between calls), weight gradients are summed from the partial sums of fixed chunks of
that work (:data:`~cnnrun.engine.jit.REDUCTION_CHUNKS`: reproducible whatever the threads), and small
products run on one thread (:func:`cnnrun.engine.jit.launch`).
"""

from __future__ import annotations

import math

import numpy as np

from cnnrun.engine.jit import launch, num_threads, reduction_chunks
from cnnrun.plugins.common import Geometry, bias_grad, grouped, round_up

from . import rules, winograd
from .depthwise import depthwise_forward, depthwise_transpose, depthwise_weight
from .depthwise_3x3 import (depthwise_channels_last_3x3, depthwise_forward_3x3, depthwise_rows_3x3,
                             depthwise_weight_3x3)
from .direct import (channels_last, direct_weight, patch_product, patch_weight, pointwise_product, pointwise_weight,
                     shifted_product, shifted_transpose)
from .filters import channels_last_filter, padded_to_4, rotated_filter, transposed_to_4
from .im2col import im2col_forward, im2col_transpose, im2col_weight
from .offsets import channel_rows, clamped_rows, column_rows, tap_offsets

WORKSPACE_BYTES = 192 << 10
"""Each thread works on tiles of output pixels whose rows (outputs and im2col columns) fit in about
this many bytes, so they stay in its L2 cache."""

TILE_ALIGN = 16
"""Tiles are a multiple of this many pixels (two AVX vectors of float32), when they can be."""

PATCH_TILE = 48
"""The channels-last path copies the patches of this many output pixels at a time (a multiple of 3)."""

TAP_BLOCK = 16
"""The im2col paths gather their columns this many taps at a time (a multiple of 4), into rows that
stay in L1. (The shifted-rows products take all the taps at once: ``rows_product`` cuts them
into panels itself.)"""


# -- public wrappers ------------------------------------------------------------------------------
def conv2d_forward(ctx, x, weight, bias, geom: Geometry, out_hw, algorithm=None) -> np.ndarray:
    """``conv(x, weight) + bias``, of shape ``(N, O, *out_hw)``. PyTorch: ``F.conv2d``.

    ``algorithm`` (the layer's option): "winograd" (:mod:`.winograd`), "im2col", "direct" (stride 1
    only), or "auto" / ``None``: :func:`.rules.resolve_algorithm` (depthwise and 1x1 convs always take their
    own path).
    """
    algorithm = rules.resolve_algorithm(algorithm, x.shape[1], weight.shape[0], geom, out_hw)
    if algorithm == "winograd":
        return winograd.conv2d_forward(ctx, x, weight, bias, geom, out_hw)
    x = np.ascontiguousarray(x)
    y = np.empty((x.shape[0], weight.shape[0], *out_hw), x.dtype)
    _forward(ctx, x, weight, bias, y, geom, rules.choose_path(weight.shape, geom, algorithm))
    return y


def conv2d_backward(ctx, x, grad, weight, geom: Geometry, grad_weight, grad_bias, algorithm=None,
                    input_grad=True) -> np.ndarray | None:
    """The gradient of :func:`conv2d_forward` with respect to ``x`` (None, not computed, unless
    ``input_grad``); overwrites ``grad_weight`` and ``grad_bias`` (each ``None``: not computed;
    without a bias, or a frozen layer)."""
    algorithm = rules.resolve_algorithm(algorithm, x.shape[1], weight.shape[0], geom, grad.shape[2:])
    if algorithm == "winograd":
        return winograd.conv2d_backward(ctx, x, grad, weight, geom, grad_weight, grad_bias, input_grad)
    x, grad = np.ascontiguousarray(x), np.ascontiguousarray(grad, x.dtype)
    path = rules.choose_path(weight.shape, geom, algorithm)
    bias_grad(grad, grad_bias)
    if grad_weight is not None:
        _weight(ctx, x, grad, geom, grad_weight, path)
    if not input_grad:
        return None
    dx = np.empty(x.shape, x.dtype)
    _transpose(ctx, grad, weight, None, dx, geom, path)
    return dx


def conv_transpose2d_forward(ctx, x, weight, bias, geom: Geometry, out_hw, algorithm=None) -> np.ndarray:
    """``conv^T(x, weight) + bias``, of shape ``(N, weight.shape[1] * G, *out_hw)``: x plays the
    output of a conv whose input is the result. PyTorch: ``F.conv_transpose2d``."""
    x = np.ascontiguousarray(x)
    y = np.empty((x.shape[0], weight.shape[1] * geom.groups, *out_hw), x.dtype)
    _transpose(ctx, x, weight, bias, y, geom, rules.choose_path(weight.shape, geom, algorithm))
    return y


def conv_transpose2d_backward(ctx, x, grad, weight, geom: Geometry, grad_weight, grad_bias,
                              algorithm=None) -> np.ndarray:
    """The gradient of :func:`conv_transpose2d_forward` with respect to ``x``; overwrites
    ``grad_weight`` and ``grad_bias`` (``None`` without a bias)."""
    x, grad = np.ascontiguousarray(x), np.ascontiguousarray(grad, x.dtype)
    path = rules.choose_path(weight.shape, geom, algorithm)
    bias_grad(grad, grad_bias)
    _weight(ctx, grad, x, geom, grad_weight, path)
    dx = np.empty(x.shape, x.dtype)
    _forward(ctx, grad, weight, None, dx, geom, path)
    return dx


# -- the three products, by path ------------------------------------------------------------------
def _forward(ctx, x, w, bias, y, geom, path):
    """y = conv(x, w) + bias."""
    if path == "depthwise" and tuple(geom.kernel) == (3, 3):
        _depthwise_forward_3x3(ctx, "conv.forward", x, w, _base(bias, y), y, geom)
    elif path == "depthwise":
        launch(depthwise_forward, _work(y.size, *geom.kernel), x, w, _base(bias, y), y, *geom.stride,
               *geom.padding, *geom.dilation)
    elif path == "strided" and rules.many_taps(w, geom, rules.PATCH_FORWARD_MIN_TAPS):
        _patches(ctx, "conv.forward", x, w, _base(bias, y), y, geom)
    elif path == "direct":
        _direct(ctx, "conv.forward", x, w, _base(bias, y), y, geom)
    else:
        groups, taps = geom.groups, w.shape[1] * _taps(geom)
        packed = ctx.derived("conv.forward.im2col", lambda: padded_to_4(grouped(w, groups)))  # (G, O/G, taps)
        tile = _tile(TAP_BLOCK + packed.shape[1], x.dtype, y.shape[2] * y.shape[3])
        cols = ctx.workspace("conv.forward.cols", (_threads(), TAP_BLOCK, tile), x.dtype)
        acc = ctx.workspace("conv.forward.acc", (_threads(), packed.shape[1], tile), x.dtype)
        launch(im2col_forward, _work(y.shape[0], y.shape[2], y.shape[3], taps, groups, packed.shape[1] + 8) // 8,
               x, packed, column_rows(TAP_BLOCK, tile), _base(bias, y), y, *_args(geom), tile, cols, acc)


def _transpose(ctx, y, w, bias, x, geom, path):
    """x = conv^T(y, w) + bias: each y value times w added back where conv read it."""
    if path == "depthwise" and tuple(geom.kernel) == (3, 3) and tuple(geom.stride) == (1, 1) and w.shape[0] == x.shape[1]:
        # one output channel per input channel: the conv of y padded by 2*d - p with the rotated filter
        (dh, dw), (ph, pw) = geom.dilation, geom.padding
        rotated_geom = geom._replace(padding=(2 * dh - ph, 2 * dw - pw))
        _depthwise_forward_3x3(ctx, "conv.transpose", y, rotated_filter(w, geom.groups), _base(bias, x), x, rotated_geom)
    elif path == "depthwise":
        launch(depthwise_transpose, _work(y.size, *geom.kernel), y, w, _base(bias, x), x, *geom.stride,
               *geom.padding, *geom.dilation)
    elif path == "direct" and (w.shape[1] >= rules.PATCH_MIN_ROWS or tuple(geom.kernel) == (1, 1)):
        # the conv of y padded by (k-1)*d - p with the rotated, transposed filter
        (kh, kw), (dh, dw), (ph, pw) = geom.kernel, geom.dilation, geom.padding
        rotated_geom = geom._replace(padding=((kh - 1) * dh - ph, (kw - 1) * dw - pw))
        rotated = ctx.derived("conv.transpose.rotated", lambda: rotated_filter(w, geom.groups))
        _direct(ctx, "conv.transpose", y, rotated, _base(bias, x), x, rotated_geom)
    elif path == "direct":
        _direct_transpose(ctx, y, w, _base(bias, x), x, geom)
    else:
        groups, per_group = geom.groups, w.shape[0] // geom.groups
        packed = ctx.derived("conv.transpose.im2col", lambda: transposed_to_4(w, groups))  # (G, taps, O/G)
        tile = _tile(TAP_BLOCK + per_group, x.dtype, y.shape[2] * y.shape[3])
        cols = ctx.workspace("conv.transpose.cols", (_threads(), TAP_BLOCK, tile), x.dtype)
        rows = channel_rows(groups, per_group, packed.shape[2], y.shape[2] * y.shape[3])
        work = _work(y.shape[0], y.shape[2], y.shape[3], packed.shape[1], groups, packed.shape[2] + 8) // 8
        launch(im2col_transpose, work, y, packed, rows, _base(bias, x), x, *_args(geom), tile, cols)


def _weight(ctx, x, g, geom, grad_w, path):
    """``grad_w`` = the weight gradient of y = conv(x, w) for the output gradient ``g``."""
    n, out_channels, kh, kw = x.shape[0], grad_w.shape[0], *geom.kernel
    if path == "depthwise":
        partial = ctx.workspace("conv.weight.partial", (n, out_channels, kh, kw), x.dtype)
        if (kh, kw) == (3, 3):
            launch(depthwise_weight_3x3, _work(g.size, 9), x, g, partial, *_depthwise_args(ctx, g, geom))
        else:
            launch(depthwise_weight, _work(g.size, kh, kw), x, g, partial, *geom.stride, *geom.padding, *geom.dilation)
        np.sum(partial, axis=0, out=grad_w.reshape(out_channels, kh, kw))
        return
    if path in ("strided", "direct") and rules.many_taps(grad_w, geom, rules.PATCH_MIN_TAPS):
        _patch_weight(ctx, x, g, geom, grad_w)
        return
    groups = geom.groups
    per_group, taps = out_channels // groups, grad_w.shape[1] * kh * kw
    pointwise = path == "direct" and rules.pointwise_fits(grad_w, geom, g, rules.POINTWISE_WEIGHT_MAX_PIXELS)
    shifted = path == "direct" and not pointwise
    if shifted:  # the products run over the flattened padded planes
        height, width, offsets = _planes(grad_w.shape, g.shape, geom)
        length = (g.shape[2] - 1) * width + g.shape[3]
    else:
        length = g.shape[2] * g.shape[3]
    tile = _tile(round_up(per_group, 4) if shifted else TAP_BLOCK + per_group, x.dtype, length)
    items = n if pointwise else n * -(-length // tile)  # a sample, or a (sample, tile of pixels), each
    partial = ctx.workspace("conv.weight.partial", (reduction_chunks(items), groups, round_up(per_group, 4), taps),
                            x.dtype)
    partial.fill(0)
    if pointwise:
        pixels = g.shape[2] * g.shape[3]
        image = ctx.workspace("conv.forward.nhwc", (n, x.shape[2], x.shape[3], x.shape[1]), x.dtype)
        launch(channels_last, image.size, x, image, 0, 0)
        spread = ctx.workspace("conv.weight.spread", (n, partial.shape[2], round_up(pixels, 4)), x.dtype)
        spread.fill(0)
        spread[:, :out_channels, :pixels] = g.reshape(n, out_channels, pixels)
        launch(pointwise_weight, _work(n, pixels, out_channels, taps) // 8, spread, image,
               clamped_rows(spread.shape[2], pixels, taps), partial)
    elif shifted:
        src = _padded(ctx, "conv.forward.x", x, height, width, *geom.padding)
        spread = _padded(ctx, "conv.weight.grad", g, g.shape[2], width, 0, 0)
        launch(direct_weight, _work(n, length, groups, partial.shape[2], taps) // 8, spread, src, offsets, partial,
               g.shape[2] * width, length, tile)
    else:
        cols = ctx.workspace("conv.weight.cols", (_threads(), TAP_BLOCK, tile), x.dtype)
        launch(im2col_weight, _work(n, g.shape[2], g.shape[3], taps, groups, partial.shape[2] + 8) // 8,
               x, g, partial, column_rows(TAP_BLOCK, tile), *_args(geom), tile, cols)
    np.sum(partial[:, :, :per_group], axis=0, out=grad_w.reshape(groups, per_group, taps))


def _direct_transpose(ctx, g, w, base, x, geom):
    """x = base + conv^T(g, w) at stride 1 as the adjoint of the shifted-rows product: per tile of
    the flattened padded pixels, the columns ``w^T @ g`` (g spread to width Wp) are added into the
    padded planes at each tap's shift, then the planes are cropped to x."""
    height, width, offsets = _planes(w.shape, g.shape, geom)
    spread = _padded(ctx, "conv.weight.grad", g, g.shape[2], width, 0, 0)
    groups, per_group = geom.groups, w.shape[0] // geom.groups
    packed = transposed_to_4(w, groups)  # (G, taps, O/G); never frozen: the gradient of a conv
    length = (g.shape[2] - 1) * width + g.shape[3]
    tile = _tile(packed.shape[1], x.dtype, length)
    acc = ctx.workspace("conv.transpose.acc", (_threads(), packed.shape[1], tile), x.dtype)
    planes = ctx.workspace("conv.transpose.planes", (x.shape[0], x.shape[1], height, width), x.dtype)
    planes.fill(0)
    channels = channel_rows(groups, per_group, packed.shape[2], g.shape[2] * width)
    launch(shifted_transpose, _work(x.shape[0], length, *packed.shape) // 8, spread, packed, channels, offsets,
           planes.reshape(x.shape[0], -1), length, w.shape[1] * _taps(geom), tile, acc)
    (top, left), (h, w_) = geom.padding, x.shape[2:]
    rows, cols = min(h, height - top), min(w_, width - left)  # rows and columns past them: base only
    if (rows, cols) != (h, w_):
        x[...] = base.reshape(-1, 1, 1)
    np.add(planes[:, :, top:top + rows, left:left + cols], base.reshape(-1, 1, 1), out=x[:, :, :rows, :cols])


def _depthwise_forward_3x3(ctx, key, x, w, base, y, geom):
    """y = base + the depthwise 3x3 conv of x: from a channels-last copy along the channels
    (:func:`.depthwise_3x3.depthwise_channels_last_3x3`), in vectors along the output rows
    (:func:`.depthwise_3x3.depthwise_rows_3x3`) or over padded planes, as :func:`.rules.depthwise_layout` says."""
    layout = rules.depthwise_layout(x.shape[1], w.shape[0], y, geom)
    if layout == "channels_last":
        (sh, sw), (dh, dw) = geom.stride, geom.dilation
        channels = x.shape[1]
        height, width = (y.shape[2] - 1) * sh + 2 * dh + 1, (y.shape[3] - 1) * sw + 2 * dw + 1
        images = ctx.workspace("conv.depthwise.nhwc", (_threads(), height, width, channels), x.dtype)
        taps = ctx.derived(key + ".taps", lambda: np.ascontiguousarray(w.reshape(channels, 9).T))
        rows = ctx.workspace("conv.depthwise.rows", (_threads(), y.shape[3], channels), x.dtype)
        launch(depthwise_channels_last_3x3, _work(y.size, 9), np.ascontiguousarray(x), taps, base, y, sh, sw,
               *geom.padding, dh, dw, images, rows)
    elif layout == "rows":
        launch(depthwise_rows_3x3, _work(y.size, 9), np.ascontiguousarray(x), np.ascontiguousarray(w), base, y,
               *geom.stride, *geom.padding, *geom.dilation)
    else:
        launch(depthwise_forward_3x3, _work(y.size, 9), x, w, base, y, *_depthwise_args(ctx, y, geom))


def _depthwise_args(ctx, y, geom):
    """The geometry and the per-thread padded planes ``(rows, sw, cols)`` of :mod:`.depthwise_3x3`'s
    kernels for a conv with output ``y``."""
    (sh, sw), (dh, dw) = geom.stride, geom.dilation
    rows, cols = (y.shape[2] - 1) * sh + 2 * dh + 1, (y.shape[3] - 1) * sw + 2 * dw + 1
    planes = ctx.workspace("conv.depthwise.planes", (_threads(), rows, sw, -(-cols // sw)), y.dtype)
    return sh, sw, *geom.padding, dh, dw, planes


def _patch_weight(ctx, x, g, geom, grad_w):
    """``grad_w`` by channels-last patches (:func:`.direct.patch_weight`): the output gradient's rows
    (zero-padded to 4 a group) times each tile's patches, the taps in (ki, kj, c) order, then
    reordered to (c, ki, kj)."""
    (kh, kw), (sh, sw), (dh, dw) = geom.kernel, geom.stride, geom.dilation
    n, groups, per_in = x.shape[0], geom.groups, grad_w.shape[1]
    per_group, taps, pixels = grad_w.shape[0] // groups, per_in * kh * kw, g.shape[2] * g.shape[3]
    rows, depth = round_up(per_group, 4), round_up(taps, 8)
    height, width = (g.shape[2] - 1) * sh + (kh - 1) * dh + 1, (g.shape[3] - 1) * sw + (kw - 1) * dw + 1
    image = ctx.workspace("conv.forward.nhwc", (n, height, width, x.shape[1]), x.dtype)
    launch(channels_last, image.size, x, image, *geom.padding)
    spread = np.ascontiguousarray(g).reshape(n, groups * per_group, pixels)
    if rows != per_group:
        spread = ctx.workspace("conv.weight.spread", (n, groups * rows, pixels), x.dtype)
        spread.fill(0)
        spread.reshape(n, groups, rows, pixels)[:, :, :per_group] = g.reshape(n, groups, per_group, pixels)
    tile = min(PATCH_TILE, pixels)
    patches = ctx.workspace("conv.weight.patches", (_threads(), tile, depth), x.dtype)
    partial = ctx.workspace("conv.weight.partial", (reduction_chunks(n * -(-pixels // tile)), groups, rows, taps),
                            x.dtype)
    partial.fill(0)
    launch(patch_weight, _work(n, pixels, groups, taps, rows + 8) // 8, image, spread, column_rows(tile, depth),
           partial, kh, kw, sh, sw, dh, dw, g.shape[3], patches)
    total = partial.sum(axis=0)[:, :per_group].reshape(groups, per_group, kh, kw, per_in)
    grad_w.reshape(groups, per_group, per_in, kh, kw)[...] = total.transpose(0, 1, 4, 2, 3)


def _patches(ctx, key, x, w, base, y, geom):
    """y = base + conv(x, w) by channels-last patches: x moved into zero-padded ``(N, Hp, Wp, C)``,
    each output pixel's taps copied into one row (runs of kw*C/G values), dotted with the filter
    rows (taps in (ki, kj, c) order)."""
    (kh, kw), (sh, sw), (dh, dw) = geom.kernel, geom.stride, geom.dilation
    height, width = (y.shape[2] - 1) * sh + (kh - 1) * dh + 1, (y.shape[3] - 1) * sw + (kw - 1) * dw + 1
    image = ctx.workspace(key + ".nhwc", (x.shape[0], height, width, x.shape[1]), x.dtype)
    launch(channels_last, image.size, x, image, *geom.padding)
    groups, per_group, taps = geom.groups, w.shape[0] // geom.groups, w.shape[1] * kh * kw
    depth = round_up(taps, 8)
    packed = ctx.derived(key + ".packed", lambda: channels_last_filter(w, groups, depth))
    tile = min(PATCH_TILE, y.shape[2] * y.shape[3])
    patches = ctx.workspace(key + ".patches", (_threads(), tile, depth), x.dtype)
    acc = ctx.workspace(key + ".acc", (_threads(), round_up(per_group, 4), tile), x.dtype)
    launch(patch_product, _work(y.shape[0], y.shape[2], y.shape[3], groups, depth, per_group + 8) // 8,
           image, packed, column_rows(tile, depth), base, y, kh, kw, sh, sw, dh, dw, patches, acc)


def _direct(ctx, key, x, w, base, y, geom):
    """y = base + the stride-1 conv of x with w, x placed at ``geom.padding`` (top, left; negative:
    cropped) in zero planes of OH + (kh-1)*dh rows and Wp = OW + (kw-1)*dw columns; a 1x1 conv that
    :func:`_pointwise_fits` by :func:`_pointwise`."""
    if rules.pointwise_fits(w, geom, y):
        _pointwise(ctx, key, x, w, base, y)
        return
    height, width, offsets = _planes(w.shape, y.shape, geom)
    src = _padded(ctx, key + ".x", x, height, width, *geom.padding)
    packed = ctx.derived(key + ".packed", lambda: padded_to_4(grouped(w, geom.groups)))
    tile = _tile(packed.shape[1], x.dtype, (y.shape[2] - 1) * width + y.shape[3])
    acc = ctx.workspace(key + ".acc", (_threads(), packed.shape[1], tile), x.dtype)
    residual, add, relu = _post_arguments(ctx.post, y)
    ctx.post_applied = launch(shifted_product, _work(y.shape[0], src.shape[1] // x.shape[1], *packed.shape) // 8,
                              src, packed, offsets, base, y, width, tile, acc, residual, add, relu, y.dtype.type(0))


def _pointwise(ctx, key, x, w, base, y):
    """y = base + w @ x per sample for a 1x1, unpadded, ungrouped conv: x moved to channels-last
    ``(N, H, W, C)`` so each output is one dot product over the C channels (the shifted-rows product
    runs over the pixels instead, which a small map leaves too few of)."""
    image = ctx.workspace(key + ".nhwc", (x.shape[0], x.shape[2], x.shape[3], x.shape[1]), x.dtype)
    launch(channels_last, image.size, x, image, 0, 0)
    rows = ctx.derived(key + ".rows", lambda: np.ascontiguousarray(w.reshape(w.shape[0], w.shape[1])))
    pixels = y.shape[2] * y.shape[3]
    tile = _tile(x.shape[1], x.dtype, pixels)
    acc = ctx.workspace(key + ".acc", (_threads(), round_up(w.shape[0], 4), tile), x.dtype)
    launch(pointwise_product, _work(y.shape[0], pixels, x.shape[1], w.shape[0] + 8) // 8,
           image, rows, column_rows(tile, x.shape[1]), base, y, acc)


# -- helpers of the wrappers ----------------------------------------------------------------------
def _planes(w_shape, y_shape, geom):
    """(Hp, Wp, offsets) of the direct path: the padded planes that make output ``y_shape`` from a
    filter ``w_shape``, and each tap's offset into a sample's flattened planes."""
    (kh, kw), (dh, dw) = geom.kernel, geom.dilation
    height, width = y_shape[2] + (kh - 1) * dh, y_shape[3] + (kw - 1) * dw
    return height, width, tap_offsets(geom.groups, w_shape[1], kh, kw, dh, dw, height * width, width)


def _padded(ctx, key, x, height, width, top, left):
    """x placed at (top, left) in zero planes ``(N, C, height, width)`` (a negative top/left crops
    x), flattened per sample: x itself when it already is, else the workspace ``key`` (NumPy copies
    rows as fast as a kernel would)."""
    n, c, h, w = x.shape
    if top == 0 and left == 0 and (h, w) == (height, width):
        return x.reshape(n, -1)
    out = ctx.workspace(key, (n, c, height, width), x.dtype)
    r0, r1 = min(max(top, 0), height), max(min(top + h, height), 0)
    s0, s1 = min(max(left, 0), width), max(min(left + w, width), 0)
    r1, s1 = max(r1, r0), max(s1, s0)
    out[:, :, :r0] = 0
    out[:, :, r1:] = 0
    out[:, :, r0:r1, :s0] = 0
    out[:, :, r0:r1, s1:] = 0
    out[:, :, r0:r1, s0:s1] = x[:, :, r0 - top:r1 - top, s0 - left:s1 - left]
    return out.reshape(n, -1)


def _tile(rows, dtype, pixels) -> int:
    """Pixels per tile: ``rows`` values each in about WORKSPACE_BYTES, a multiple of TILE_ALIGN when
    that is possible, at most ``pixels``."""
    tile = max(1, WORKSPACE_BYTES // (rows * np.dtype(dtype).itemsize))
    if tile > TILE_ALIGN:
        tile -= tile % TILE_ALIGN
    return min(tile, pixels)


def _work(*factors) -> int:
    """The product of ``factors``, for :func:`~cnnrun.engine.jit.launch`: callers count multiply-adds
    over 8 (one vector), and a product whose inputs are copied first (im2col columns, patches) as
    ``(copied values) * (rows + 8) // 8``."""
    return int(math.prod(factors))  # not np.prod: 7 us a call, 27 calls a MobileNet pass


def _post_arguments(post, y):
    """``(residual, add, relu)`` for a kernel applying an inference plan's epilogue ``post``
    (:class:`cnnrun.engine.layer.Post`, or None) to ``y``: the residual contiguous in y's dtype (y
    itself, unread, when there is none)."""
    if post is None:
        return y, False, False
    if post.residual is None:
        return y, False, post.relu
    return np.ascontiguousarray(post.residual, y.dtype), True, post.relu


def _threads() -> int:
    return num_threads()


def _taps(geom) -> int:
    return geom.kernel[0] * geom.kernel[1]


def _base(bias, out):
    """What each channel of ``out`` starts from: the bias, or zeros."""
    return bias if bias is not None else np.zeros(out.shape[1], out.dtype)


def _args(geom):
    return (*geom.kernel, *geom.stride, *geom.padding, *geom.dilation)


KERNELS = {"conv2d_forward": conv2d_forward, "conv2d_backward": conv2d_backward,
           "conv_transpose2d_forward": conv_transpose2d_forward, "conv_transpose2d_backward": conv_transpose2d_backward}

