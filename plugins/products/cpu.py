"""Register-blocked matrix products for the CPU kernels of conv (Winograd too) and linear layers (Numba).

The rows of the second operand are runs of one flat array, given by their start ``offsets``: rows
of a matrix (offsets ``k * stride``), columns of an im2col buffer, or shifted views of padded
image planes (a direct convolution, without im2col). All the kernels are serial: callers split the
work over threads.

- :func:`rows_product` ``out += a @ rows``: four output rows take four rows of input per pass over
  a run of pixels, so each output is loaded and stored once per 16 multiply-adds.
- :func:`row_dots` ``out += a_rows . b_rows``: blocks of 4 x 3 dot products over a run, in registers.
- :func:`matrix_product` and :func:`matrix_dots`: the same two products on plain row-major 2-D
  operands (Winograd's 16 products per tile position), with 4 x 4 and 4 x 2 register blocks.

Their inner loops index contiguous runs from 0, so LLVM vectorizes them (``fastmath`` lets it
reassociate the sums). Callers pass the same array layouts and no literal constants (``np.int64(0)``
instead of ``0``), so that each kernel compiles once per dtype.
"""

from __future__ import annotations

from cnnrun.engine.jit import serial_kernel


@serial_kernel
def rows_product(a, src, offsets, shift, m, out):
    """out[i, t] += sum_k a[i, k] * src[offsets[k] + shift + t] for t < m.

    ``a`` is ``(R, K)``, R and K multiples of 4 (zero-padded; padding taps read a real tap's values,
    so a non-finite input stays non-finite). Four rows of ``out`` take four taps per pass over the
    run: each output is loaded and stored once per 16 multiply-adds, the weights wait in registers.
    """
    rows, depth = a.shape
    for i in range(0, rows, 4):
        out0, out1, out2, out3 = out[i, :m], out[i + 1, :m], out[i + 2, :m], out[i + 3, :m]
        for k in range(0, depth, 4):
            s0, s1, s2, s3 = offsets[k] + shift, offsets[k + 1] + shift, offsets[k + 2] + shift, offsets[k + 3] + shift
            x0, x1, x2, x3 = src[s0:s0 + m], src[s1:s1 + m], src[s2:s2 + m], src[s3:s3 + m]
            w = a[i:i + 4, k:k + 4]
            w00, w01, w02, w03 = w[0, 0], w[0, 1], w[0, 2], w[0, 3]
            w10, w11, w12, w13 = w[1, 0], w[1, 1], w[1, 2], w[1, 3]
            w20, w21, w22, w23 = w[2, 0], w[2, 1], w[2, 2], w[2, 3]
            w30, w31, w32, w33 = w[3, 0], w[3, 1], w[3, 2], w[3, 3]
            for t in range(m):
                v0, v1, v2, v3 = x0[t], x1[t], x2[t], x3[t]
                out0[t] += w00 * v0 + w01 * v1 + w02 * v2 + w03 * v3
                out1[t] += w10 * v0 + w11 * v1 + w12 * v2 + w13 * v3
                out2[t] += w20 * v0 + w21 * v1 + w22 * v2 + w23 * v3
                out3[t] += w30 * v0 + w31 * v1 + w32 * v2 + w33 * v3


@serial_kernel
def row_dots(a, a_start, a_stride, rows, b, offsets, shift, m, out):
    """out[i, k] += sum_{t<m} a[a_start + i*a_stride + t] * b[offsets[k] + shift + t] for i < rows,
    k < out.shape[1], in blocks of 4 x 3 dot products that accumulate in registers.

    ``out`` has ``rows`` rounded up to 4 rows; the extra rows repeat the last row of ``a``.
    """
    zero = out.dtype.type(0)
    depth = out.shape[1]
    for i in range(0, rows, 4):
        r0 = a_start + i * a_stride
        r1 = a_start + min(i + 1, rows - 1) * a_stride
        r2 = a_start + min(i + 2, rows - 1) * a_stride
        r3 = a_start + min(i + 3, rows - 1) * a_stride
        a0, a1, a2, a3 = a[r0:r0 + m], a[r1:r1 + m], a[r2:r2 + m], a[r3:r3 + m]
        for k in range(0, depth - 2, 3):
            s0, s1, s2 = offsets[k] + shift, offsets[k + 1] + shift, offsets[k + 2] + shift
            b0, b1, b2 = b[s0:s0 + m], b[s1:s1 + m], b[s2:s2 + m]
            c00 = c01 = c02 = c10 = c11 = c12 = c20 = c21 = c22 = c30 = c31 = c32 = zero
            for t in range(m):
                v0, v1, v2 = b0[t], b1[t], b2[t]
                u = a0[t]
                c00 += u * v0
                c01 += u * v1
                c02 += u * v2
                u = a1[t]
                c10 += u * v0
                c11 += u * v1
                c12 += u * v2
                u = a2[t]
                c20 += u * v0
                c21 += u * v1
                c22 += u * v2
                u = a3[t]
                c30 += u * v0
                c31 += u * v1
                c32 += u * v2
            out[i, k] += c00
            out[i, k + 1] += c01
            out[i, k + 2] += c02
            out[i + 1, k] += c10
            out[i + 1, k + 1] += c11
            out[i + 1, k + 2] += c12
            out[i + 2, k] += c20
            out[i + 2, k + 1] += c21
            out[i + 2, k + 2] += c22
            out[i + 3, k] += c30
            out[i + 3, k + 1] += c31
            out[i + 3, k + 2] += c32
        for k in range(depth - depth % 3, depth):
            s0 = offsets[k] + shift
            b0 = b[s0:s0 + m]
            c00 = c10 = c20 = c30 = zero
            for t in range(m):
                v0 = b0[t]
                c00 += a0[t] * v0
                c10 += a1[t] * v0
                c20 += a2[t] * v0
                c30 += a3[t] * v0
            out[i, k] += c00
            out[i + 1, k] += c10
            out[i + 2, k] += c20
            out[i + 3, k] += c30


@serial_kernel
def matrix_product(a, b, count, out):
    """out[i, t] = sum_k a[i, k] * b[k, t] for t < count; ``a`` ``(R, K)``, R and K multiples of 4.

    Four rows of ``out`` take four terms per pass over the run, so each output is loaded and stored
    once per 16 multiply-adds while the 16 coefficients wait in registers.
    """
    rows, depth = a.shape
    for i in range(0, rows, 4):
        out0, out1, out2, out3 = out[i, :count], out[i + 1, :count], out[i + 2, :count], out[i + 3, :count]
        out0[:] = 0
        out1[:] = 0
        out2[:] = 0
        out3[:] = 0
        for k in range(0, depth, 4):
            b0, b1, b2, b3 = b[k, :count], b[k + 1, :count], b[k + 2, :count], b[k + 3, :count]
            w = a[i:i + 4, k:k + 4]
            w00, w01, w02, w03 = w[0, 0], w[0, 1], w[0, 2], w[0, 3]
            w10, w11, w12, w13 = w[1, 0], w[1, 1], w[1, 2], w[1, 3]
            w20, w21, w22, w23 = w[2, 0], w[2, 1], w[2, 2], w[2, 3]
            w30, w31, w32, w33 = w[3, 0], w[3, 1], w[3, 2], w[3, 3]
            for t in range(count):
                v0, v1, v2, v3 = b0[t], b1[t], b2[t], b3[t]
                out0[t] += w00 * v0 + w01 * v1 + w02 * v2 + w03 * v3
                out1[t] += w10 * v0 + w11 * v1 + w12 * v2 + w13 * v3
                out2[t] += w20 * v0 + w21 * v1 + w22 * v2 + w23 * v3
                out3[t] += w30 * v0 + w31 * v1 + w32 * v2 + w33 * v3


@serial_kernel
def matrix_dots(a, b, count, out):
    """out[i, k] += sum_{t < count} a[i, t] * b[k, t]; ``out`` ``(R, K)``, R and K multiples of 4,
    in blocks of 4 x 2 dot products that accumulate in registers."""
    rows, depth = out.shape
    zero = out.dtype.type(0)
    for i in range(0, rows, 4):
        a0, a1, a2, a3 = a[i, :count], a[i + 1, :count], a[i + 2, :count], a[i + 3, :count]
        for k in range(0, depth, 2):
            b0, b1 = b[k, :count], b[k + 1, :count]
            c00 = c01 = c10 = c11 = c20 = c21 = c30 = c31 = zero
            for t in range(count):
                v0, v1 = b0[t], b1[t]
                c00 += a0[t] * v0
                c01 += a0[t] * v1
                c10 += a1[t] * v0
                c11 += a1[t] * v1
                c20 += a2[t] * v0
                c21 += a2[t] * v1
                c30 += a3[t] * v0
                c31 += a3[t] * v1
            out[i, k] += c00
            out[i, k + 1] += c01
            out[i + 1, k] += c10
            out[i + 1, k + 1] += c11
            out[i + 2, k] += c20
            out[i + 2, k + 1] += c21
            out[i + 3, k] += c30
            out[i + 3, k + 1] += c31
