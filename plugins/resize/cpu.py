"""Numba CPU kernels for the resizing layers, on planes ``(P, H, W)`` with P = N * C, each ``prange``
over planes; the per-element work is :mod:`.sample`'s (shared with :mod:`.cuda`). The shuffles are
NumPy reshapes and transposes."""

from __future__ import annotations

import numpy as np
from numba import prange

from cnnrun.engine.jit import cpu_kernel, launch, serial_kernel

from . import sample


def resize_gather_forward(x, rows, cols, value) -> np.ndarray:
    """``y[p, oh, ow] = x[p, rows[oh], cols[ow]]``, ``value`` where a table holds -1 (pad, nearest)."""
    x = np.ascontiguousarray(x)
    y = np.empty((x.shape[0], rows.size, cols.size), x.dtype)
    launch(_gather_forward, 2 * y.size, x, y, rows, cols, x.dtype.type(value))
    return y


def resize_gather_backward(grad_y, in_hw, row_starts, row_order, col_starts, col_order) -> np.ndarray:
    """The input gradient of :func:`resize_gather_forward`: each input sums the outputs that read it (tables of
    :func:`.tables.inverse`)."""
    grad_y = np.ascontiguousarray(grad_y)
    grad_x = np.empty((grad_y.shape[0], *in_hw), grad_y.dtype)
    launch(_gather_backward, grad_x.size + grad_y.size, grad_y, grad_x, row_starts, row_order, col_starts,
           col_order)
    return grad_x


def upsample_bilinear_forward(x, r0, r1, rw, c0, c1, cw) -> np.ndarray:
    """Bilinear interpolation of planes ``x`` by per-axis tables (:func:`.tables.linear_source`)."""
    x = np.ascontiguousarray(x)
    y = np.empty((x.shape[0], r0.size, c0.size), x.dtype)
    launch(_bilinear_forward, 8 * y.size, x, y, r0, r1, rw, c0, c1, cw)
    return y


def upsample_bilinear_backward(grad_y, in_hw, r0, r1, rw, row_lo, row_hi, c0, c1, cw, col_lo,
                               col_hi) -> np.ndarray:
    """The input gradient of :func:`upsample_bilinear_forward` (``row_lo``, ``row_hi``, ``col_lo``, ``col_hi``:
    :func:`.tables.linear_inverse`)."""
    grad_y = np.ascontiguousarray(grad_y)
    grad_x = np.empty((grad_y.shape[0], *in_hw), grad_y.dtype)
    launch(_bilinear_backward, grad_x.size + 4 * grad_y.size, grad_y, grad_x, r0, r1, rw, row_lo, row_hi,
           c0, c1, cw, col_lo, col_hi)
    return grad_x


def pixel_shuffle(x, r: int) -> np.ndarray:
    """``(N, C r^2, H, W) -> (N, C, H r, W r)``: ``y[n, c, h r + i, w r + j] = x[n, c r^2 + i r + j, h, w]``."""
    n, c, h, w = x.shape
    y = x.reshape(n, c // (r * r), r, r, h, w).transpose(0, 1, 4, 2, 5, 3)
    return np.ascontiguousarray(y).reshape(n, c // (r * r), h * r, w * r)


def pixel_unshuffle(x, r: int) -> np.ndarray:
    """The inverse of :func:`pixel_shuffle`: ``(N, C, H r, W r) -> (N, C r^2, H, W)``."""
    n, c, h, w = x.shape
    y = x.reshape(n, c, h // r, r, w // r, r).transpose(0, 1, 3, 5, 2, 4)
    return np.ascontiguousarray(y).reshape(n, c * r * r, h // r, w // r)


def channel_shuffle(x, groups: int) -> np.ndarray:
    """``(N, C, ...)``: channels viewed as ``(groups, C / groups)``, transposed: ``y[:, j g + i] = x[:, i C/g + j]``."""
    n, c = x.shape[:2]
    y = x.reshape(n, groups, c // groups, -1).transpose(0, 2, 1, 3)
    return np.ascontiguousarray(y).reshape(x.shape)


@cpu_kernel
def _gather_forward(x, y, rows, cols, value):
    planes, out_h, out_w = y.shape
    for p in prange(planes):
        for oh in range(out_h):
            for ow in range(out_w):
                y[p, oh, ow] = _gathered(x, p, oh, ow, rows, cols, value)


@cpu_kernel
def _gather_backward(grad_y, grad_x, row_starts, row_order, col_starts, col_order):
    planes, height, width = grad_x.shape
    for p in prange(planes):
        for ih in range(height):
            for iw in range(width):
                grad_x[p, ih, iw] = _gathered_grad(grad_y, p, ih, iw, row_starts, row_order, col_starts, col_order)


@cpu_kernel
def _bilinear_forward(x, y, r0, r1, rw, c0, c1, cw):
    planes, out_h, out_w = y.shape
    for p in prange(planes):
        for oh in range(out_h):
            for ow in range(out_w):
                y[p, oh, ow] = _bilinear(x, p, oh, ow, r0, r1, rw, c0, c1, cw)


@cpu_kernel
def _bilinear_backward(grad_y, grad_x, r0, r1, rw, row_lo, row_hi, c0, c1, cw, col_lo, col_hi):
    planes, height, width = grad_x.shape
    for p in prange(planes):
        for ih in range(height):
            for iw in range(width):
                grad_x[p, ih, iw] = _bilinear_grad(grad_y, p, ih, iw, r0, r1, rw, row_lo, row_hi, c0, c1, cw,
                                                   col_lo, col_hi)


_gathered, _gathered_grad = serial_kernel(sample.gathered), serial_kernel(sample.gathered_grad)
_bilinear, _bilinear_grad = serial_kernel(sample.bilinear), serial_kernel(sample.bilinear_grad)


KERNELS = {f.__name__: f for f in (resize_gather_forward, resize_gather_backward, upsample_bilinear_forward,
                                   upsample_bilinear_backward, pixel_shuffle, pixel_unshuffle, channel_shuffle)}
