"""Per-element functions of the resizing kernels: plain Python, compiled by :mod:`.cpu` as Numba CPU
functions and by :mod:`.cuda` as CUDA device functions (one definition for both targets)."""


def gathered(x, p, oh, ow, rows, cols, value):
    """``x[p, rows[oh], cols[ow]]``, or ``value`` where a table says -1 (a constant pad)."""
    r, c = rows[oh], cols[ow]
    if r < 0 or c < 0:
        return value
    return x[p, r, c]


def gathered_grad(grad_y, p, ih, iw, row_starts, row_order, col_starts, col_order):
    """The sum of ``grad_y[p, oh, ow]`` over the outputs that read ``(ih, iw)``."""
    total = grad_y.dtype.type(0)
    for a in range(row_starts[ih], row_starts[ih + 1]):
        oh = row_order[a]
        for b in range(col_starts[iw], col_starts[iw + 1]):
            total += grad_y[p, oh, col_order[b]]
    return total


def bilinear(x, p, oh, ow, r0, r1, rw, c0, c1, cw):
    """PyTorch's bilinear sample: ``h0l * (w0l * x00 + w1l * x01) + h1l * (w0l * x10 + w1l * x11)``."""
    a, b = rw[oh], cw[ow]
    top = (1 - b) * x[p, r0[oh], c0[ow]] + b * x[p, r0[oh], c1[ow]]
    bottom = (1 - b) * x[p, r1[oh], c0[ow]] + b * x[p, r1[oh], c1[ow]]
    return (1 - a) * top + a * bottom


def bilinear_grad(grad_y, p, ih, iw, r0, r1, rw, row_lo, row_hi, c0, c1, cw, col_lo, col_hi):
    """The input gradient at ``(ih, iw)``: grad_y times each reading output's weights of it, summed (an
    output whose two taps are both ``ih`` gives it both weights)."""
    total = grad_y.dtype.type(0)
    for oh in range(row_lo[ih], row_hi[ih]):
        a = (1 - rw[oh] if r0[oh] == ih else 0) + (rw[oh] if r1[oh] == ih else 0)
        for ow in range(col_lo[iw], col_hi[iw]):
            b = (1 - cw[ow] if c0[ow] == iw else 0) + (cw[ow] if c1[ow] == iw else 0)
            total += grad_y[p, oh, ow] * (a * b)
    return total
