"""The direct paths of the CPU convolutions (Numba), without an im2col buffer:

- **shifted rows** (stride 1): zero-padded planes of width Wp, flattened, so every tap is the same
  contiguous run shifted (``y[o, q] = sum_tap w[o, tap] * xp[q + shift(tap)]``), and its adjoint and
  weight gradient with the same runs;
- **channels-last patches** (many taps, any stride): x moved to ``(N, Hp, Wp, C)``, each output
  pixel's taps copied into one row and dotted with the filter rows; the weight gradient the output
  gradient's rows times the patches;
- **pointwise** (1x1, stride 1, no padding, one group): x moved to ``(N, H, W, C)``, each output
  one dot product over the channels, and the weight gradient ``sum_n g_n @ x_n^T``.

The wrappers in :mod:`.cpu` call these kernels (see its docstring for the layouts).
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from cnnrun.engine.jit import chunk_items, cpu_kernel, serial_kernel, tile_of
from cnnrun.plugins.merge.cpu import epilogue_run
from cnnrun.plugins.products.cpu import row_dots, rows_product

from .vectors import transposed_block, vector_lanes


@cpu_kernel
def shifted_product(src, packed, offsets, base, y, width, tile, acc, residual, add, relu, zero):
    """y[n, g*R + o, i, j] = base + sum_k packed[g, o, k] * src[n, offsets[g, k] + i*width + j]
    (R = y's channels per group), over tiles of the flattened pixels q = i*width + j.

    When the padded width is the output's (a 1x1 kernel without padding) and R is a multiple of 4,
    the run of a tile is a run of y's own planes: the products add straight into y, which starts
    at ``base``, and each tile then gets an inference plan's epilogue while in cache
    (:func:`cnnrun.plugins.merge.cpu.epilogue_run`: ``+ residual`` when ``add``, relu when
    ``relu``); returns whether it did (else the products go into the thread's ``acc`` rows, then
    into the planes, and the caller's epilogue runs on its own).
    """
    samples, channels, out_h, out_w = y.shape
    groups = packed.shape[0]
    per_group = channels // groups
    length = (out_h - 1) * width + out_w
    tiles = (length + tile - 1) // tile
    in_place = width == out_w and per_group % 4 == 0
    y_flat, residual_flat = y.reshape(y.size), residual.reshape(residual.size)
    for item in prange(samples * tiles):
        n, q0, m = tile_of(item, tiles, tile, length)
        for g in range(groups):
            if in_place:
                out = y[n].reshape(channels, length)[g * per_group:(g + 1) * per_group, q0:q0 + m]
                for o in range(per_group):
                    out[o, :] = base[g * per_group + o]
            else:
                out = acc[numba.get_thread_id(), :, :m]
                out[:, :] = 0
            rows_product(packed[g], src[n], offsets[g], q0, m, out)
            if not in_place:
                _rows_to_planes(out, per_group, y[n], g * per_group, base, q0, m, width)
            elif add or relu:
                for o in range(per_group):
                    first = (n * channels + g * per_group + o) * length + q0
                    epilogue_run(y_flat, residual_flat, first, first + m, add, relu, zero)
    return in_place and (add or relu)


@serial_kernel
def _rows_to_planes(out, count, yn, first, base, q0, m, width):
    """yn[first + o, i, j] = out[o, i*width + j - q0] + base[first + o] for o < count and the pixels
    (i, j < OW) of the run [q0, q0 + m)."""
    out_w = yn.shape[2]
    i0, i1 = q0 // width, (q0 + m - 1) // width
    for o in range(count):
        b = base[first + o]
        for i in range(i0, i1 + 1):
            j0, j1 = max(q0 - i * width, 0), min(q0 + m - i * width, out_w)
            if j0 < j1:
                row, values = yn[first + o, i, j0:j1], out[o, i * width + j0 - q0:i * width + j1 - q0]
                for t in range(j1 - j0):
                    row[t] = values[t] + b


@cpu_kernel
def direct_weight(spread, src, offsets, partial, plane, length, tile):
    """partial[chunk, g, o, k] += sum_q spread[n, (g*R + o)*plane + q] * src[n, offsets[g, k] + q]
    for q < length, over the (sample n, tile) items of each chunk (R = output channels per group;
    ``spread`` is the output gradient at the padded width, zero in the columns j >= OW)."""
    samples = spread.shape[0]
    chunks, groups = partial.shape[0], partial.shape[1]
    per_group = spread.shape[1] // (plane * groups)
    tiles = (length + tile - 1) // tile
    for chunk in prange(chunks):
        part = partial[chunk]
        first, last = chunk_items(samples * tiles, chunks, chunk)
        for item in range(first, last):
            n, q0, m = tile_of(item, tiles, tile, length)
            for g in range(groups):
                row_dots(spread[n], g * per_group * plane + q0, plane, per_group, src[n], offsets[g], q0, m,
                         part[g, :, 0:part.shape[2]])


@cpu_kernel
def shifted_transpose(spread, packed, rows, offsets, planes, length, taps, tile, acc):
    """planes[n, offsets[g, k] + q] += sum_o packed[g, k, o] * spread[n, rows[g, o] + q] for q < length
    and the ``taps`` taps k of every group g: the adjoint of :func:`shifted_product`, one sample per
    thread (the shifted runs of one sample's tiles overlap)."""
    samples = spread.shape[0]
    groups = packed.shape[0]
    for n in prange(samples):
        out = acc[numba.get_thread_id()]
        for q0 in range(0, length, tile):
            m = min(tile, length - q0)
            for g in range(groups):
                out[:, :m] = 0
                rows_product(packed[g, :, 0:packed.shape[2]], spread[n], rows[g], q0, m, out)
                for k in range(taps):
                    start = offsets[g, k] + q0
                    target, values = planes[n, start:start + m], out[k]
                    for t in range(m):
                        target[t] += values[t]


@cpu_kernel
def channels_last(x, out, top, left):
    """out[n, r, s, c] = x[n, c, r - top, s - left] inside x, else 0 (a negative top/left crops x):
    blocks of a vector of channels by a vector of columns transposed in registers
    (:func:`.vectors.transposed_block`; one value at a time this was about 0.9 ns a value). x and
    out C-contiguous."""
    samples, rows = x.shape[0], out.shape[1]
    for nr in prange(samples * rows):
        n = nr // rows
        channels_last_row(x, n, nr - n * rows, out[n], top, left)


@serial_kernel
def channels_last_row(x, n, r, image, top, left):
    """Row r of :func:`channels_last`'s sample n, into ``image`` ``(rows, cols, C)``."""
    channels, height, width = x.shape[1], x.shape[2], x.shape[3]
    cols = image.shape[1]
    lanes, plane = vector_lanes(x), height * width
    line = image[r]
    h = r - top
    if h < 0 or h >= height:
        line[:, :] = 0
        return
    s0 = min(max(left, 0), cols)  # the columns [s0, s1) of the row hold x's
    s1 = max(min(left + width, cols), s0)
    line[:s0] = 0
    line[s1:] = 0
    for s in range(s0, s1, lanes):
        for c in range(0, channels, lanes):
            transposed_block(x, ((n * channels + c) * height + h) * width + s - left, plane, min(lanes, channels - c),
                             image, (r * cols + s) * channels + c, channels, min(lanes, s1 - s))


@cpu_kernel
def patch_product(image, packed, offsets, base, y, kh, kw, sh, sw, dh, dw, patches, acc):
    """y[n, g*R + o, i, j] = base + packed[g, o] . patch(n, g, i, j): the patch is image[n]
    ``(Hp, Wp, C)`` at rows i*sh + ki*dh, columns j*sw + kj*dw and group g's channels, in (ki, kj, c)
    order, zero-padded like ``packed``'s rows (:func:`_fill_patches`); ``offsets[p]`` = p * depth (a
    patch row's start)."""
    samples, channels, out_h, out_w = y.shape
    groups, per_group, depth = packed.shape
    pixels = out_h * out_w
    tile = patches.shape[1]
    tiles = (pixels + tile - 1) // tile
    for item in prange(samples * tiles):
        n, q0, m = tile_of(item, tiles, tile, pixels)
        thread = numba.get_thread_id()
        patch, out = patches[thread], acc[thread, :, :m]
        flat = patch.reshape(patch.size)
        planes = y[n].reshape(channels, pixels)
        for g in range(groups):
            _fill_patches(image, n, g, groups, q0, m, out_w, kh, kw, sh, sw, dh, dw, patch)
            out[:, :] = 0
            row_dots(packed.reshape(packed.size), g * per_group * depth, depth, per_group, flat, offsets, np.int64(0),
                     depth, out)
            for o in range(per_group):
                b = base[g * per_group + o]
                target, values = planes[g * per_group + o, q0:q0 + m], out[o]
                for t in range(m):
                    target[t] = values[t] + b


@cpu_kernel
def patch_weight(image, spread, offsets, partial, kh, kw, sh, sw, dh, dw, out_w, patches):
    """partial[chunk, g, o, k] += sum_p spread[n, g*R + o, p] * patch(n, g, p)[k] over the (sample n,
    tile of output pixels p) items of each chunk: :func:`patch_product`'s weight gradient, its taps
    k in (ki, kj, c) order, by :func:`~cnnrun.plugins.products.cpu.rows_product` (accumulators in
    registers along the taps, no sums across lanes). ``spread`` is the output gradient
    ``(N, G*R, P)``, R = ``partial.shape[2]`` rows a group (O/G rounded up to 4, zero past it)."""
    samples, pixels = image.shape[0], spread.shape[2]
    chunks, groups, rows, taps = partial.shape
    tile = patches.shape[1]
    tiles = (pixels + tile - 1) // tile
    for chunk in prange(chunks):
        patch, part = patches[numba.get_thread_id()], partial[chunk]
        flat = patch.reshape(patch.size)
        first, last = chunk_items(samples * tiles, chunks, chunk)
        for item in range(first, last):
            n, q0, m = tile_of(item, tiles, tile, pixels)
            for g in range(groups):
                _fill_patches(image, n, g, groups, q0, m, out_w, kh, kw, sh, sw, dh, dw, patch)
                rows_product(spread[n, g * rows:(g + 1) * rows, q0:q0 + m], flat, offsets, np.int64(0), taps, part[g])


@serial_kernel
def _fill_patches(image, n, g, groups, q0, m, out_w, kh, kw, sh, sw, dh, dw, patch):
    """patch[p] = the taps of output pixel q0 + p (p < m) of sample n and group g: image[n] at rows
    i*sh + ki*dh, columns j*sw + kj*dw and the group's channels, in (ki, kj, c) order, zero past
    the taps; the kw taps of a kernel row are one run of kw*C values when dw == 1 and G == 1."""
    width, in_channels = image.shape[2], image.shape[3]
    per_in = in_channels // groups
    taps = per_in * kh * kw
    merged = dw == 1 and groups == 1
    run, runs = (kw * per_in, 1) if merged else (per_in, kw)
    for p in range(m):
        i = (q0 + p) // out_w
        j = q0 + p - i * out_w
        row = patch[p]
        at = 0
        for ki in range(kh):
            line = image[n, i * sh + ki * dh].reshape(width * in_channels)
            for kj in range(runs):
                start = (j * sw + kj * dw) * in_channels + g * per_in
                source, target = line[start:start + run], row[at:at + run]
                for t in range(run):
                    target[t] = source[t]
                at += run
        row[taps:] = 0


@cpu_kernel
def pointwise_product(image, w, offsets, base, y, acc):
    """y[n, o, i, j] = base[o] + sum_c w[o, c] * image[n, i, j, c]: a 1x1 conv as dot products of
    the filter rows ``w`` ``(O, C)`` with the channels-last pixels (``offsets[p] = p * C``), over
    tiles of ``acc.shape[2]`` pixels; each dot runs over all C channels, however small the map."""
    samples, channels, out_h, out_w = y.shape
    in_channels = w.shape[1]
    pixels = out_h * out_w
    tile = acc.shape[2]
    tiles = (pixels + tile - 1) // tile
    rows = w.reshape(w.size)
    for item in prange(samples * tiles):
        n, q0, m = tile_of(item, tiles, tile, pixels)
        out = acc[numba.get_thread_id(), :, :m]
        out[:, :] = 0
        row_dots(rows, np.int64(0), in_channels, channels, image[n].reshape(pixels * in_channels), offsets,
                 q0 * in_channels, in_channels, out)
        planes = y[n].reshape(channels, pixels)
        for o in range(channels):
            b = base[o]
            target, values = planes[o, q0:q0 + m], out[o]
            for t in range(m):
                target[t] = values[t] + b


@cpu_kernel
def pointwise_weight(spread, image, offsets, partial):
    """partial[chunk, 0, o, c] += sum_q spread[n, o, q] * image[n, q, c] over each chunk's samples n:
    the weight gradient of :func:`pointwise_product`, ``spread`` the output gradient ``(N, O, P)``
    zero-padded to multiples of 4, ``offsets[q] = min(q, P - 1) * C`` (P pixels, C channels)."""
    channels, chunks = image.shape[3], partial.shape[0]
    for chunk in prange(chunks):
        first, last = chunk_items(spread.shape[0], chunks, chunk)
        for n in range(first, last):
            rows_product(spread[n], image[n].reshape(image[n].size), offsets, np.int64(0), channels,
                         partial[chunk, 0])
