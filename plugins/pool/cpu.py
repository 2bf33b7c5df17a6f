"""Numba CPU kernels for window pooling, on planes: ``x`` is ``(P, H, W)`` with P = N * C.

Window ``(oh, ow)`` covers rows ``oh * sh - ph + i * dh`` for ``i < kh`` (``dh``: max pooling's
dilation) and columns alike, clipped to the input, as in PyTorch. Every kernel runs ``prange`` over
planes, so no two threads write the same array element (overlapping windows accumulate inside one
plane, in one thread). Maxima are tracked with selects rather than branches (random data defeats
branch prediction); the general average loop sums in float64.

kernel_size = stride = 2 with no padding and every window inside the input (the common case) takes
a specialised loop over row views that LLVM vectorizes; its backward writes each window's four
gradients (selected by the argmax's place in the window) instead of zeroing the plane first and
adding. A window covering the whole plane (global average pooling) sums and fills.

Outputs and input gradients are fresh arrays (the network holds them); reusing buffers would not
pay: NumPy asks for transparent huge pages for large arrays, so touching fresh memory costs no
more than overwriting old.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from cnnrun.engine.jit import cpu_kernel, launch, serial_kernel

from .window import bin_end, bin_start, taps, window


def _is_2x2(kernel, stride, padding, in_hw, out_hw) -> bool:
    """True for 2x2 windows, stride 2, no padding, all windows fully inside the input."""
    return (tuple(kernel) == tuple(stride) == (2, 2) and tuple(padding) == (0, 0)
            and 2 * out_hw[0] <= in_hw[0] and 2 * out_hw[1] <= in_hw[1])


def max_pool_forward(x, argmax, kernel, stride, padding, dilation) -> np.ndarray:
    """Max over each window of ``x`` ``(P, H, W)``; the output size is ``argmax.shape[1:]``.

    ``argmax`` (``int32``, filled here) receives the flat index ``ih * W + iw`` of each maximum: the
    first one in row-major window order; NaN wins (PyTorch: ``val > max || isnan(val)``). The window's
    taps are ``dilation`` apart; ``padding`` is the padding before (top, left).
    """
    x = np.ascontiguousarray(x)
    y = np.empty(argmax.shape, x.dtype)
    fast = _is_2x2(kernel, stride, padding, x.shape[1:], y.shape[1:]) and tuple(dilation) == (1, 1)
    launch(_max_forward, x.size + 2 * y.size, x, y, argmax, *kernel, *stride, *padding, *dilation, fast)
    return y


def max_pool_backward(grad_y, argmax, kernel, stride, padding, dilation, in_hw) -> np.ndarray:
    """The input gradient ``(P, H, W)``: each ``grad_y`` value added at its window's argmax."""
    grad_y = np.ascontiguousarray(grad_y)
    grad_x = np.empty((grad_y.shape[0], *in_hw), grad_y.dtype)
    fast = _is_2x2(kernel, stride, padding, in_hw, grad_y.shape[1:]) and tuple(dilation) == (1, 1)
    launch(_max_backward, grad_x.size + 2 * grad_y.size, grad_y, argmax, grad_x, fast)
    return grad_x


def avg_pool_forward(x, out_hw, kernel, stride, padding, padding_after, count_include_pad) -> np.ndarray:
    """Mean over each window of ``x`` ``(P, H, W)``, with PyTorch's divisor (see ``_window``); ``padding``
    and ``padding_after`` are the padding before (top, left) and after (bottom, right)."""
    x = np.ascontiguousarray(x)
    y = np.empty((x.shape[0], *out_hw), x.dtype)
    loop = _avg_loop(kernel, stride, padding, x.shape[1:], out_hw)
    launch(_avg_forward, x.size + y.size, x, y, *kernel, *stride, *padding, *padding_after, count_include_pad,
           loop)
    return y


def avg_pool_backward(grad_y, in_hw, kernel, stride, padding, padding_after, count_include_pad) -> np.ndarray:
    """The input gradient ``(P, H, W)``: each ``grad_y`` value / divisor added over its window."""
    grad_y = np.ascontiguousarray(grad_y)
    grad_x = np.empty((grad_y.shape[0], *in_hw), grad_y.dtype)
    loop = _avg_loop(kernel, stride, padding, in_hw, grad_y.shape[1:])
    launch(_avg_backward, grad_x.size + grad_y.size, grad_y, grad_x, *kernel, *stride, *padding, *padding_after,
           count_include_pad, loop)
    return grad_x


def global_avg_pool_forward(x) -> np.ndarray:
    """``y[p] = mean(x[p])`` for planes ``x`` ``(P, H, W)``; ``y`` is ``(P,)``."""
    hw = x.shape[1:]
    return avg_pool_forward(x, (1, 1), hw, hw, (0, 0), (0, 0), True).reshape(x.shape[0])


def global_avg_pool_backward(grad_y, in_hw) -> np.ndarray:
    """``grad_x[p] = grad_y[p] / (H * W)`` everywhere, for ``grad_y`` ``(P,)``; ``grad_x`` is ``(P, H, W)``."""
    return avg_pool_backward(grad_y.reshape(grad_y.shape[0], 1, 1), in_hw, in_hw, in_hw, (0, 0), (0, 0), True)


def adaptive_avg_pool_forward(x, out_hw) -> np.ndarray:
    """Mean over each adaptive bin of ``x`` ``(P, H, W)``: rows ``[floor(i H / OH), ceil((i + 1) H / OH))``."""
    x = np.ascontiguousarray(x)
    y = np.empty((x.shape[0], *out_hw), x.dtype)
    launch(_adaptive_avg_forward, x.size + y.size, x, y)
    return y


def adaptive_avg_pool_backward(grad_y, in_hw) -> np.ndarray:
    """The input gradient ``(P, H, W)``: each ``grad_y`` value / bin size added over its bin."""
    grad_y = np.ascontiguousarray(grad_y)
    grad_x = np.empty((grad_y.shape[0], *in_hw), grad_y.dtype)
    launch(_adaptive_avg_backward, grad_x.size + grad_y.size, grad_y, grad_x)
    return grad_x


def adaptive_max_pool_forward(x, argmax) -> np.ndarray:
    """Max over each adaptive bin of ``x`` ``(P, H, W)``; ``argmax`` as in :func:`max_pool_forward`."""
    x = np.ascontiguousarray(x)
    y = np.empty(argmax.shape, x.dtype)
    launch(_adaptive_max_forward, x.size + 2 * y.size, x, y, argmax)
    return y


def adaptive_max_pool_backward(grad_y, argmax, in_hw) -> np.ndarray:
    """The input gradient ``(P, H, W)``: each ``grad_y`` value added at its bin's argmax."""
    grad_y = np.ascontiguousarray(grad_y)
    grad_x = np.empty((grad_y.shape[0], *in_hw), grad_y.dtype)
    launch(_max_backward, grad_x.size + 2 * grad_y.size, grad_y, argmax, grad_x, False)
    return grad_x


GENERAL, TWO_BY_TWO, WHOLE_PLANE = 0, 1, 2
"""The average pool's loops: any windows, the 2x2 one, or one window covering the whole plane."""


def _avg_loop(kernel, stride, padding, in_hw, out_hw) -> int:
    if _is_2x2(kernel, stride, padding, in_hw, out_hw):
        return TWO_BY_TWO
    if tuple(out_hw) == (1, 1) and tuple(padding) == (0, 0) and tuple(kernel) == tuple(in_hw):
        return WHOLE_PLANE
    return GENERAL


@cpu_kernel
def _max_forward(x, y, argmax, kh, kw, sh, sw, ph, pw, dh, dw, fast):
    planes, height, width = x.shape
    out_h, out_w = y.shape[1], y.shape[2]
    for p in prange(planes):
        xp, yp, ap = x[p], y[p], argmax[p]
        if fast:
            for oh in range(out_h):
                top, bottom, best_row, at_row = xp[2 * oh], xp[2 * oh + 1], yp[oh], ap[oh]
                first = 2 * oh * width
                check = xp[0, 0] - xp[0, 0]  # NaN if some value of the row is NaN (or inf - inf)
                for ow in range(out_w):  # NaN-blind and vectorized; a NaN sends the row to the exact loop
                    a, b, c, d = top[2 * ow], top[2 * ow + 1], bottom[2 * ow], bottom[2 * ow + 1]
                    check += a + b + c + d
                    take = b > a
                    best, at = (b if take else a), (1 if take else 0)
                    take = c > best
                    best, at = (c if take else best), (width if take else at)
                    take = d > best
                    best_row[ow] = d if take else best
                    at_row[ow] = first + 2 * ow + (width + 1 if take else at)
                if check != check:
                    for ow in range(out_w):
                        best, at = top[2 * ow], 0
                        others = ((top[2 * ow + 1], 1), (bottom[2 * ow], width), (bottom[2 * ow + 1], width + 1))
                        for v, place in others:
                            take = (v > best) | (v != v)
                            best, at = (v, place) if take else (best, at)
                        best_row[ow] = best
                        at_row[ow] = first + 2 * ow + at
        elif dh == 1 and dw == 1:  # unit steps: LLVM's loops stay as fast as before dilation existed
            for oh in range(out_h):
                h0 = oh * sh - ph
                h1 = min(h0 + kh, height)
                h0 = max(h0, 0)
                for ow in range(out_w):
                    w0 = ow * sw - pw
                    w1 = min(w0 + kw, width)
                    w0 = max(w0, 0)
                    best, at = xp[h0, w0], h0 * width + w0
                    for ih in range(h0, h1):
                        for iw in range(w0, w1):
                            v = xp[ih, iw]
                            take = (v > best) | (v != v)
                            best, at = (v, ih * width + iw) if take else (best, at)
                    yp[oh, ow] = best
                    ap[oh, ow] = at
        else:
            for oh in range(out_h):
                h0, h1 = _taps(oh * sh - ph, kh, dh, height)
                for ow in range(out_w):
                    w0, w1 = _taps(ow * sw - pw, kw, dw, width)
                    best, at = xp[h0, w0], h0 * width + w0
                    for ih in range(h0, h1, dh):
                        for iw in range(w0, w1, dw):
                            v = xp[ih, iw]
                            take = (v > best) | (v != v)
                            best, at = (v, ih * width + iw) if take else (best, at)
                    yp[oh, ow] = best
                    ap[oh, ow] = at


@cpu_kernel
def _max_backward(grad_y, argmax, grad_x, fast):
    planes, out_h, out_w = grad_y.shape
    height, width = grad_x.shape[1], grad_x.shape[2]
    for p in prange(planes):
        gy, ap, gx = grad_y[p], argmax[p], grad_x[p]
        flat = gx.reshape(height * width)
        if fast:
            for oh in range(out_h):
                top = 2 * oh * width
                for ow in range(out_w):
                    i = top + 2 * ow
                    flat[i] = 0
                    flat[i + 1] = 0
                    flat[i + width] = 0
                    flat[i + width + 1] = 0
                    flat[ap[oh, ow]] = gy[oh, ow]
                for i in range(top + 2 * out_w, top + width):  # odd width: the unused last column
                    flat[i] = 0
                    flat[i + width] = 0
            flat[2 * out_h * width:] = 0  # odd height: the unused last row
        else:
            flat[:] = 0
            for oh in range(out_h):
                for ow in range(out_w):
                    flat[ap[oh, ow]] += gy[oh, ow]


@cpu_kernel
def _avg_forward(x, y, kh, kw, sh, sw, ph, pw, pb, pr, count_include_pad, loop):
    planes, height, width = x.shape
    out_h, out_w = y.shape[1], y.shape[2]
    for p in prange(planes):
        xp, yp = x[p], y[p]
        if loop == 2:  # WHOLE_PLANE
            flat = xp.reshape(height * width)
            total = 0.0
            for i in range(height * width):
                total += flat[i]
            yp[0, 0] = total / (height * width)
        elif loop == 1:  # TWO_BY_TWO
            for oh in range(out_h):
                ih = 2 * oh
                for ow in range(out_w):
                    iw = 2 * ow
                    yp[oh, ow] = (xp[ih, iw] + xp[ih, iw + 1] + xp[ih + 1, iw] + xp[ih + 1, iw + 1]) * 0.25
        else:
            for oh in range(out_h):
                for ow in range(out_w):
                    h0, h1, w0, w1, divisor = _window(oh, ow, height, width, kh, kw, sh, sw, ph, pw, pb,
                                                      pr, count_include_pad)
                    total = 0.0
                    for ih in range(h0, h1):
                        for iw in range(w0, w1):
                            total += xp[ih, iw]
                    yp[oh, ow] = total / divisor


@cpu_kernel
def _avg_backward(grad_y, grad_x, kh, kw, sh, sw, ph, pw, pb, pr, count_include_pad, loop):
    planes, out_h, out_w = grad_y.shape
    height, width = grad_x.shape[1], grad_x.shape[2]
    for p in prange(planes):
        gy, gx = grad_y[p], grad_x[p]
        if loop == 2:  # WHOLE_PLANE
            gx[:, :] = gy[0, 0] / (height * width)
        elif loop == 1:  # TWO_BY_TWO
            for oh in range(out_h):
                ih = 2 * oh
                for ow in range(out_w):
                    iw = 2 * ow
                    g = gy[oh, ow] * 0.25
                    gx[ih, iw] = g
                    gx[ih, iw + 1] = g
                    gx[ih + 1, iw] = g
                    gx[ih + 1, iw + 1] = g
                for iw in range(2 * out_w, width):  # odd width: the unused last column
                    gx[ih, iw] = 0
                    gx[ih + 1, iw] = 0
            for ih in range(2 * out_h, height):  # odd height: the unused last row
                for iw in range(width):
                    gx[ih, iw] = 0
        else:
            for ih in range(height):
                for iw in range(width):
                    gx[ih, iw] = 0
            for oh in range(out_h):
                for ow in range(out_w):
                    h0, h1, w0, w1, divisor = _window(oh, ow, height, width, kh, kw, sh, sw, ph, pw, pb,
                                                      pr, count_include_pad)
                    g = gy[oh, ow] / divisor
                    for ih in range(h0, h1):
                        for iw in range(w0, w1):
                            gx[ih, iw] += g


@cpu_kernel
def _adaptive_avg_forward(x, y):
    planes, height, width = x.shape
    out_h, out_w = y.shape[1], y.shape[2]
    for p in prange(planes):
        for oh in range(out_h):
            h0, h1 = _bin_start(oh, out_h, height), _bin_end(oh, out_h, height)
            for ow in range(out_w):
                w0, w1 = _bin_start(ow, out_w, width), _bin_end(ow, out_w, width)
                total = 0.0
                for ih in range(h0, h1):
                    for iw in range(w0, w1):
                        total += x[p, ih, iw]
                y[p, oh, ow] = total / ((h1 - h0) * (w1 - w0))


@cpu_kernel
def _adaptive_avg_backward(grad_y, grad_x):
    planes, out_h, out_w = grad_y.shape
    height, width = grad_x.shape[1], grad_x.shape[2]
    for p in prange(planes):
        gx = grad_x[p]
        gx[:, :] = 0
        for oh in range(out_h):
            h0, h1 = _bin_start(oh, out_h, height), _bin_end(oh, out_h, height)
            for ow in range(out_w):
                w0, w1 = _bin_start(ow, out_w, width), _bin_end(ow, out_w, width)
                g = grad_y[p, oh, ow] / ((h1 - h0) * (w1 - w0))
                for ih in range(h0, h1):
                    for iw in range(w0, w1):
                        gx[ih, iw] += g


@cpu_kernel
def _adaptive_max_forward(x, y, argmax):
    planes, height, width = x.shape
    out_h, out_w = y.shape[1], y.shape[2]
    for p in prange(planes):
        xp = x[p]
        for oh in range(out_h):
            h0, h1 = _bin_start(oh, out_h, height), _bin_end(oh, out_h, height)
            for ow in range(out_w):
                w0, w1 = _bin_start(ow, out_w, width), _bin_end(ow, out_w, width)
                best, at = xp[h0, w0], h0 * width + w0
                for ih in range(h0, h1):
                    for iw in range(w0, w1):
                        v = xp[ih, iw]
                        take = (v > best) | (v != v)
                        best, at = (v, ih * width + iw) if take else (best, at)
                y[p, oh, ow] = best
                argmax[p, oh, ow] = at


_bin_start, _bin_end = serial_kernel(bin_start), serial_kernel(bin_end)
"""The CPU builds of :func:`.window.bin_start` and :func:`.window.bin_end`."""

_window = serial_kernel(window)
"""The CPU build of :func:`.window.window`."""

_taps = serial_kernel(taps)
"""The CPU build of :func:`.window.taps`."""


KERNELS = {f.__name__: f for f in (max_pool_forward, max_pool_backward, avg_pool_forward, avg_pool_backward,
                                   global_avg_pool_forward, global_avg_pool_backward, adaptive_avg_pool_forward,
                                   adaptive_avg_pool_backward, adaptive_max_pool_forward, adaptive_max_pool_backward)}
