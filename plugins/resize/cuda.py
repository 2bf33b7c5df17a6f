"""CUDA kernels for the resizing layers (numba-cuda), on planes ``(P, H, W)`` with P = N * C: one
thread per output (forward) or per input element (backward, gathering through the inverse tables, no
atomics); the per-element work is :mod:`.sample`'s, as in :mod:`.cpu`. The shuffles are one thread per
output element."""

from __future__ import annotations

from numba import cuda

from cnnrun.engine.cuda import flat, grid

from . import sample


def resize_gather_forward(x, rows, cols, value):
    """``y[p, oh, ow] = x[p, rows[oh], cols[ow]]``, ``value`` where a table holds -1."""
    y = cuda.device_array((x.shape[0], rows.size, cols.size), x.dtype)
    _gather_forward[grid(y.size)](x, y, cuda.to_device(rows), cuda.to_device(cols), x.dtype.type(value))
    return y


def resize_gather_backward(grad_y, in_hw, row_starts, row_order, col_starts, col_order):
    """Each input sums the outputs that read it."""
    grad_x = cuda.device_array((grad_y.shape[0], *in_hw), grad_y.dtype)
    tables = [cuda.to_device(t) for t in (row_starts, row_order, col_starts, col_order)]
    _gather_backward[grid(grad_x.size)](grad_y, grad_x, *tables)
    return grad_x


def upsample_bilinear_forward(x, r0, r1, rw, c0, c1, cw):
    """Bilinear interpolation of planes ``x`` by per-axis tables."""
    y = cuda.device_array((x.shape[0], r0.size, c0.size), x.dtype)
    _bilinear_forward[grid(y.size)](x, y, *[cuda.to_device(t) for t in (r0, r1, rw, c0, c1, cw)])
    return y


def upsample_bilinear_backward(grad_y, in_hw, r0, r1, rw, row_lo, row_hi, c0, c1, cw, col_lo, col_hi):
    """The input gradient of :func:`upsample_bilinear_forward`."""
    grad_x = cuda.device_array((grad_y.shape[0], *in_hw), grad_y.dtype)
    tables = [cuda.to_device(t) for t in (r0, r1, rw, row_lo, row_hi, c0, c1, cw, col_lo, col_hi)]
    _bilinear_backward[grid(grad_x.size)](grad_y, grad_x, *tables)
    return grad_x


def pixel_shuffle(x, r: int):
    """``(N, C r^2, H, W) -> (N, C, H r, W r)``: ``y[n, c, h r + i, w r + j] = x[n, c r^2 + i r + j, h, w]``."""
    n, c, h, w = x.shape
    y = cuda.device_array((n, c // (r * r), h * r, w * r), x.dtype)
    _pixel_shuffle[grid(y.size)](x, y, r)
    return y


def pixel_unshuffle(x, r: int):
    """The inverse of :func:`pixel_shuffle`: ``(N, C, H r, W r) -> (N, C r^2, H, W)``."""
    n, c, h, w = x.shape
    y = cuda.device_array((n, c * r * r, h // r, w // r), x.dtype)
    _pixel_unshuffle[grid(y.size)](x, y, r)
    return y


def channel_shuffle(x, groups: int):
    """``y[:, j g + i] = x[:, i C/g + j]`` for ``(N, C, ...)`` arrays."""
    y = cuda.device_array(x.shape, x.dtype)
    positions = x.size // (x.shape[0] * x.shape[1])
    _channel_shuffle[grid(y.size)](flat(x), flat(y), x.shape[1], positions, groups)
    return y


@cuda.jit(cache=True)
def _gather_forward(x, y, rows, cols, value):
    out_h, out_w = y.shape[1], y.shape[2]
    for index in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        rest, ow = divmod(index, out_w)
        p, oh = divmod(rest, out_h)
        y[p, oh, ow] = _gathered(x, p, oh, ow, rows, cols, value)


@cuda.jit(cache=True)
def _gather_backward(grad_y, grad_x, row_starts, row_order, col_starts, col_order):
    height, width = grad_x.shape[1], grad_x.shape[2]
    for index in range(cuda.grid(1), grad_x.size, cuda.gridsize(1)):
        rest, iw = divmod(index, width)
        p, ih = divmod(rest, height)
        grad_x[p, ih, iw] = _gathered_grad(grad_y, p, ih, iw, row_starts, row_order, col_starts, col_order)


@cuda.jit(cache=True)
def _bilinear_forward(x, y, r0, r1, rw, c0, c1, cw):
    out_h, out_w = y.shape[1], y.shape[2]
    for index in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        rest, ow = divmod(index, out_w)
        p, oh = divmod(rest, out_h)
        y[p, oh, ow] = _bilinear(x, p, oh, ow, r0, r1, rw, c0, c1, cw)


@cuda.jit(cache=True)
def _bilinear_backward(grad_y, grad_x, r0, r1, rw, row_lo, row_hi, c0, c1, cw, col_lo, col_hi):
    height, width = grad_x.shape[1], grad_x.shape[2]
    for index in range(cuda.grid(1), grad_x.size, cuda.gridsize(1)):
        rest, iw = divmod(index, width)
        p, ih = divmod(rest, height)
        grad_x[p, ih, iw] = _bilinear_grad(grad_y, p, ih, iw, r0, r1, rw, row_lo, row_hi, c0, c1, cw, col_lo,
                                           col_hi)


@cuda.jit(cache=True)
def _pixel_shuffle(x, y, r):
    channels, out_h, out_w = y.shape[1], y.shape[2], y.shape[3]
    for index in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        rest, ow = divmod(index, out_w)
        rest, oh = divmod(rest, out_h)
        n, c = divmod(rest, channels)
        h, i = divmod(oh, r)
        w, j = divmod(ow, r)
        y[n, c, oh, ow] = x[n, (c * r + i) * r + j, h, w]


@cuda.jit(cache=True)
def _pixel_unshuffle(x, y, r):
    channels, out_h, out_w = y.shape[1], y.shape[2], y.shape[3]
    for index in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        rest, w = divmod(index, out_w)
        rest, h = divmod(rest, out_h)
        n, k = divmod(rest, channels)
        c, ij = divmod(k, r * r)
        i, j = divmod(ij, r)
        y[n, k, h, w] = x[n, c, h * r + i, w * r + j]


@cuda.jit(cache=True)
def _channel_shuffle(x, y, channels, positions, groups):
    per_group = channels // groups
    for index in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        rest, s = divmod(index, positions)
        n, k = divmod(rest, channels)
        j, i = divmod(k, groups)  # output channel k = j * groups + i reads input channel i * per_group + j
        y[index] = x[(n * channels + i * per_group + j) * positions + s]


_gathered = cuda.jit(device=True)(sample.gathered)
_gathered_grad = cuda.jit(device=True)(sample.gathered_grad)
_bilinear = cuda.jit(device=True)(sample.bilinear)
_bilinear_grad = cuda.jit(device=True)(sample.bilinear_grad)


KERNELS = {f.__name__: f for f in (resize_gather_forward, resize_gather_backward, upsample_bilinear_forward,
                                   upsample_bilinear_backward, pixel_shuffle, pixel_unshuffle, channel_shuffle)}
