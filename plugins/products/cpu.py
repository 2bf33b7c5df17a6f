"""Register-blocked matrix products for the CPU kernels of conv (Winograd too) and linear layers (Numba).

The rows of the second operand are runs of one flat array, given by their start ``offsets``: rows
of a matrix (offsets ``k * stride``), columns of an im2col buffer, or shifted views of padded
image planes (a direct convolution, without im2col). All the kernels are serial: callers split the
work over threads.

- :func:`rows_product` ``out += a @ rows``: blocks of 4 output rows x a few vectors of pixels held
  in registers over all the taps (:mod:`.blocks`, written in LLVM IR).
- :func:`row_dots` ``out += a_rows . b_rows``: blocks of 4 x 4 dot products over a run, in vector
  registers, summed across lanes at the end.
- :func:`matrix_product`: the first on plain row-major 2-D operands (Winograd's 16 products per
  tile position).

The blocks are :mod:`.blocks`' (LLVM IR: vectors of the CPU's widest width, fused multiply-adds,
masked tails); the loops here only walk over them. Their sums run in a fixed order whatever the
array layouts, so a result does not depend on which specialization a kernel was compiled for.
Callers pass no literal constants (``np.int64(0)`` instead of ``0``), so that each kernel
compiles once per dtype.
"""

from __future__ import annotations

import numpy as np

from cnnrun.engine.jit import serial_kernel

from .blocks import BLOCK_VECTORS, block_width, dots_block, narrow_block, narrow_rows, rows_block

PANEL_TAPS = 96
"""Taps per panel: a panel's input rows for one block of pixels (96 x 64 float32 = 24 KiB with
512-bit vectors) stay in L1 while every block of output rows passes over them."""


@serial_kernel
def rows_product(a, src, offsets, shift, m, out):
    """out[i, t] += sum_k a[i, k] * src[offsets[k] + shift + t] for t < m.

    ``a`` is ``(R, K)``, R a multiple of 4 (zero-padded), its rows and ``out``'s contiguous. Blocks
    of 4 rows x :func:`~.blocks.block_width` pixels stay in vector registers over PANEL_TAPS taps
    (:func:`~.blocks.rows_block`), all the row blocks in turn over one panel of input (in L1); the
    last block of a row is masked to the m pixels. A run of at most one vector (m pixels) takes
    blocks of :data:`~.blocks.NARROW_ROWS` rows instead (:func:`~.blocks.narrow_block`), the rows
    left over 4 at a time: the same sums in the same order.
    """
    width, narrow = block_width(a), narrow_rows(a)
    rows, depth = a.shape
    narrow_end = rows - rows % narrow if m <= width // BLOCK_VECTORS else 0  # a run of one vector
    for k0 in range(0, depth, PANEL_TAPS):
        k1 = min(k0 + PANEL_TAPS, depth)
        panel, starts = a[:, k0:k1], offsets[k0:k1]
        for i in range(0, narrow_end, narrow):
            narrow_block(panel, i, src, starts, shift, np.int64(0), m, out)
        for t in range(0, m, width):
            count = min(width, m - t)
            for i in range(narrow_end, rows, 4):
                rows_block(panel, i, src, starts, shift, t, count, out)


@serial_kernel
def row_dots(a, a_start, a_stride, rows, b, offsets, shift, m, out):
    """out[i, k] += sum_{t<m} a[a_start + i*a_stride + t] * b[offsets[k] + shift + t] for i < rows,
    k < out.shape[1], in blocks of 4 x 4 dot products that accumulate in vector registers
    (:func:`~.blocks.dots_block`).

    ``out`` has ``rows`` rounded up to 4 rows; the extra rows repeat the last row of ``a``.
    """
    depth = out.shape[1]
    last_row, last_tap = rows - 1, depth - 1
    for i in range(0, rows, 4):
        r0 = a_start + i * a_stride
        r1 = a_start + min(i + 1, last_row) * a_stride
        r2 = a_start + min(i + 2, last_row) * a_stride
        r3 = a_start + min(i + 3, last_row) * a_stride
        for k in range(0, depth, 4):
            s0, s1 = offsets[k] + shift, offsets[min(k + 1, last_tap)] + shift
            s2, s3 = offsets[min(k + 2, last_tap)] + shift, offsets[min(k + 3, last_tap)] + shift
            dots_block(a, r0, r1, r2, r3, b, s0, s1, s2, s3, m, out, i, k, min(4, depth - k))


@serial_kernel
def matrix_product(a, b, count, out):
    """out[i, t] = sum_k a[i, k] * b[k, t] for t < count; ``a`` ``(R, K)``, R a multiple of 4, rows
    contiguous, ``b`` C-contiguous: :func:`rows_product` over b's rows."""
    out[:, :count] = 0
    starts = np.arange(b.shape[0]) * b.shape[1]
    rows_product(a, b.reshape(b.size), starts, np.int64(0), count, out)
