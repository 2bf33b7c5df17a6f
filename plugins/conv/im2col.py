"""The im2col path of the CPU convolutions (Numba): the columns of a tile of output pixels are
gathered into a per-thread buffer, a block of taps at a time, and multiplied by
:func:`~cnnrun.plugins.products.cpu.rows_product`; the transpose multiplies back into columns and adds
them where they were read (col2im). Any stride. The wrappers in :mod:`.cpu` call these kernels.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from cnnrun.engine.jit import chunk_items, cpu_kernel, serial_kernel, tile_of
from cnnrun.plugins.products.cpu import row_dots, rows_product

from .vectors import add_strided_row, strided_row


@cpu_kernel
def im2col_forward(x, packed, rows, base, y, kh, kw, sh, sw, ph, pw, dh, dw, tile, cols, acc):
    """y = conv(x, w) + base over tiles of output pixels: per group and block of taps, the tile's
    columns (``rows[k]``: where column k starts in a ``cols`` buffer), then
    :func:`~cnnrun.plugins.products.cpu.rows_product`
    with ``packed`` ``(G, O/G, taps)`` (both rounded up to 4)."""
    samples, channels = x.shape[0], x.shape[1]
    out_channels, out_h, out_w = y.shape[1], y.shape[2], y.shape[3]
    groups, depth, block = packed.shape[0], packed.shape[2], cols.shape[1]
    per_in, per_out = channels // groups, out_channels // groups
    pixels = out_h * out_w
    tiles = (pixels + tile - 1) // tile
    for item in prange(samples * tiles):
        n, q0, m = tile_of(item, tiles, tile, pixels)
        thread = numba.get_thread_id()
        col, out = cols[thread], acc[thread]
        planes = y[n].reshape(out_channels, pixels)
        for g in range(groups):
            out[:, :m] = 0
            for k0 in range(0, depth, block):
                count = min(block, depth - k0)
                _fill_columns(x[n], g * per_in, per_in, col, k0, count, q0, m, kh, kw, sh, sw, ph, pw, dh, dw, out_w)
                rows_product(packed[g, :, k0:k0 + count], col.reshape(col.size), rows, np.int64(0), m, out)
            for o in range(per_out):
                b = base[g * per_out + o]
                row, values = planes[g * per_out + o, q0:q0 + m], out[o]
                for t in range(m):
                    row[t] = values[t] + b


@cpu_kernel
def im2col_transpose(g, packed, rows, base, x, kh, kw, sh, sw, ph, pw, dh, dw, tile, cols):
    """x = conv^T(g, w) + base, one sample per thread: per tile of g's pixels and group, columns =
    w^T @ g by :func:`~cnnrun.plugins.products.cpu.rows_product` with ``packed`` ``(G, taps, O/G)`` (rounded up to 4), added
    back where im2col reads them."""
    samples, channels = x.shape[0], x.shape[1]
    groups, depth, block = packed.shape[0], packed.shape[1], cols.shape[1]
    per_in = channels // groups
    taps = per_in * kh * kw
    out_w = g.shape[3]
    pixels = g.shape[2] * out_w
    for n in prange(samples):
        col = cols[numba.get_thread_id()]
        xn = x[n]
        for c in range(channels):
            xn[c] = base[c]
        flat = g[n].reshape(g.shape[1] * pixels)
        for q0 in range(0, pixels, tile):
            m = min(tile, pixels - q0)
            for grp in range(groups):
                for k0 in range(0, depth, block):
                    col[:, :m] = 0
                    rows_product(packed[grp, k0:k0 + block, 0:packed.shape[2]], flat, rows[grp], q0, m, col)
                    _add_columns(col, xn, grp * per_in, k0, min(block, taps - k0), q0, m, kh, kw, sh, sw, ph, pw,
                                 dh, dw, out_w)


@cpu_kernel
def im2col_weight(x, g, partial, rows, kh, kw, sh, sw, ph, pw, dh, dw, tile, cols):
    """partial[chunk, grp, o, k] += the dot of g's row o (of group grp) with im2col row k, over the
    (sample, tile of output pixels) items of each chunk."""
    samples, channels = x.shape[0], x.shape[1]
    chunks, groups, taps, block = partial.shape[0], partial.shape[1], partial.shape[3], cols.shape[1]
    per_in, per_out = channels // groups, g.shape[1] // groups
    out_w = g.shape[3]
    pixels = g.shape[2] * out_w
    tiles = (pixels + tile - 1) // tile
    for chunk in prange(chunks):
        col, part = cols[numba.get_thread_id()], partial[chunk]
        first, last = chunk_items(samples * tiles, chunks, chunk)
        for item in range(first, last):
            n, q0, m = tile_of(item, tiles, tile, pixels)
            flat = g[n].reshape(g.shape[1] * pixels)
            for grp in range(groups):
                for k0 in range(0, taps, block):
                    count = min(block, taps - k0)
                    _fill_columns(x[n], grp * per_in, per_in, col, k0, count, q0, m, kh, kw, sh, sw, ph, pw, dh, dw,
                                  out_w)
                    row_dots(flat, grp * per_out * pixels + q0, pixels, per_out, col.reshape(col.size), rows,
                             np.int64(0), m, part[grp, :, k0:k0 + count])


@serial_kernel
def _fill_columns(xn, first, channels, col, k0, count, q0, m, kh, kw, sh, sw, ph, pw, dh, dw, out_w):
    """col[r, t] = xn[first + c, i*sh - ph + ki*dh, j*sw - pw + kj*dw] (0 outside) for the taps
    k0 + r = (c*kh + ki)*kw + kj, r < count (0 past the last tap), and the pixels q0 + t = i*OW + j,
    t < m: a row of pixels at a time (:func:`.vectors.strided_row`). xn and col C-contiguous."""
    height, width, tile = xn.shape[1], xn.shape[2], col.shape[1]
    i0, i1 = q0 // out_w, (q0 + m - 1) // out_w
    for r in range(count):
        tap = k0 + r
        if tap >= channels * kh * kw:
            col[r, :m] = 0
            continue
        plane = first + tap // (kh * kw)
        ki, kj = (tap // kw) % kh, tap % kw
        top, left = ki * dh - ph, kj * dw - pw
        for i in range(i0, i1 + 1):
            ja, jb = max(q0 - i * out_w, 0), min(q0 + m - i * out_w, out_w)
            ih = i * sh + top
            strided_row(xn, (plane * height + ih) * width, 1 if 0 <= ih < height else 0, width, ja * sw + left, sw,
                        col, r * tile + i * out_w - q0 + ja, jb - ja)


@serial_kernel
def _add_columns(col, xn, first, k0, count, q0, m, kh, kw, sh, sw, ph, pw, dh, dw, out_w):
    """xn[first + c, i*sh - ph + ki*dh, j*sw - pw + kj*dw] += col[r, t] inside xn for the taps
    k0 + r = (c*kh + ki)*kw + kj, r < count, and the pixels q0 + t = i*OW + j, t < m (col2im): a row
    of pixels at a time (:func:`.vectors.add_strided_row`). col and xn C-contiguous."""
    height, width, tile = xn.shape[1], xn.shape[2], col.shape[1]
    i0, i1 = q0 // out_w, (q0 + m - 1) // out_w
    for r in range(count):
        tap = k0 + r
        plane = first + tap // (kh * kw)
        ki, kj = (tap // kw) % kh, tap % kw
        top, left = ki * dh - ph, kj * dw - pw
        for i in range(i0, i1 + 1):
            ih = i * sh + top
            if 0 <= ih < height:
                ja, jb = max(q0 - i * out_w, 0), min(q0 + m - i * out_w, out_w)
                add_strided_row(col, r * tile + i * out_w - q0 + ja, jb - ja, xn, (plane * height + ih) * width, width,
                                ja * sw + left, sw)
