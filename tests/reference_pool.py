"""Naive float64 pooling, as literal as PyTorch's definitions: one loop per output and window element.

Transcribed from ATen (``Pool.h: pooling_output_shape``, ``cpu/MaxPoolKernel.cpp``,
``cpu/AvgPoolKernel.cpp``) with dilation 1. Inputs are ``(N, C, H, W)``; the 1-D versions run the 2-D
ones on ``(N, C, 1, L)``, as ``torch.nn.functional.max_pool1d`` / ``avg_pool1d`` do.
"""

from __future__ import annotations

import math

import numpy as np


def output_size(size, kernel, stride, padding, ceil_mode):
    """floor_or_ceil((size + 2 padding - kernel) / stride) + 1; in ceil mode, drop a last window that
    would start in the right padding."""
    rounding = math.ceil if ceil_mode else math.floor
    out = rounding((size + 2 * padding - kernel) / stride) + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def _sizes(x, kernel, stride, padding, ceil_mode):
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    n, c, height, width = x.shape
    return (n, c, height, width, output_size(height, kh, sh, ph, ceil_mode),
            output_size(width, kw, sw, pw, ceil_mode))


def max_pool2d_with_indices(x, kernel, stride, padding, ceil_mode):
    """``(y, indices)``; ``indices`` holds the flat position ``ih * W + iw`` of each window's maximum."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    n, c, height, width, out_h, out_w = _sizes(x, kernel, stride, padding, ceil_mode)
    y = np.zeros((n, c, out_h, out_w))
    indices = np.zeros((n, c, out_h, out_w), dtype=np.int64)
    for b in range(n):
        for ch in range(c):
            for oh in range(out_h):
                for ow in range(out_w):
                    ih0 = oh * sh - ph
                    iw0 = ow * sw - pw
                    ih1 = min(ih0 + kh, height)
                    iw1 = min(iw0 + kw, width)
                    while ih0 < 0:
                        ih0 += 1
                    while iw0 < 0:
                        iw0 += 1
                    maxindex = ih0 * width + iw0
                    maxval = -math.inf
                    for ih in range(ih0, ih1):
                        for iw in range(iw0, iw1):
                            val = float(x[b, ch, ih, iw])
                            if val > maxval or math.isnan(val):
                                maxval = val
                                maxindex = ih * width + iw
                    y[b, ch, oh, ow] = maxval
                    indices[b, ch, oh, ow] = maxindex
    return y, indices


def max_pool2d(x, kernel, stride, padding, ceil_mode):
    return max_pool2d_with_indices(x, kernel, stride, padding, ceil_mode)[0]


def max_pool2d_backward(x, grad_y, kernel, stride, padding, ceil_mode):
    """Each output gradient added at its window's maximum."""
    _, indices = max_pool2d_with_indices(x, kernel, stride, padding, ceil_mode)
    width = x.shape[3]
    grad_x = np.zeros(x.shape)
    for b, ch, oh, ow in np.ndindex(*grad_y.shape):
        index = indices[b, ch, oh, ow]
        grad_x[b, ch, index // width, index % width] += grad_y[b, ch, oh, ow]
    return grad_x


def _avg_window(oh, ow, height, width, kernel, stride, padding, count_include_pad):
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    ih0 = oh * sh - ph
    iw0 = ow * sw - pw
    ih1 = min(ih0 + kh, height + ph)
    iw1 = min(iw0 + kw, width + pw)
    pool_size = (ih1 - ih0) * (iw1 - iw0)
    ih0 = max(ih0, 0)
    iw0 = max(iw0, 0)
    ih1 = min(ih1, height)
    iw1 = min(iw1, width)
    divide_factor = pool_size if count_include_pad else (ih1 - ih0) * (iw1 - iw0)
    return ih0, ih1, iw0, iw1, divide_factor


def avg_pool2d(x, kernel, stride, padding, ceil_mode, count_include_pad):
    n, c, height, width, out_h, out_w = _sizes(x, kernel, stride, padding, ceil_mode)
    y = np.zeros((n, c, out_h, out_w))
    for b in range(n):
        for ch in range(c):
            for oh in range(out_h):
                for ow in range(out_w):
                    ih0, ih1, iw0, iw1, divide_factor = _avg_window(oh, ow, height, width, kernel, stride,
                                                                    padding, count_include_pad)
                    if ih0 >= ih1 or iw0 >= iw1:
                        continue
                    total = 0.0
                    for ih in range(ih0, ih1):
                        for iw in range(iw0, iw1):
                            total += float(x[b, ch, ih, iw])
                    y[b, ch, oh, ow] = total / divide_factor
    return y


def avg_pool2d_backward(x, grad_y, kernel, stride, padding, ceil_mode, count_include_pad):
    """Each output gradient / divisor added over its window."""
    n, c, height, width, out_h, out_w = _sizes(x, kernel, stride, padding, ceil_mode)
    grad_x = np.zeros(x.shape)
    for b in range(n):
        for ch in range(c):
            for oh in range(out_h):
                for ow in range(out_w):
                    ih0, ih1, iw0, iw1, divide_factor = _avg_window(oh, ow, height, width, kernel, stride,
                                                                    padding, count_include_pad)
                    for ih in range(ih0, ih1):
                        for iw in range(iw0, iw1):
                            grad_x[b, ch, ih, iw] += grad_y[b, ch, oh, ow] / divide_factor
    return grad_x


def max_pool1d(x, kernel, stride, padding, ceil_mode):
    return max_pool2d(x[:, :, None], (1, kernel), (1, stride), (0, padding), ceil_mode)[:, :, 0]


def max_pool1d_backward(x, grad_y, kernel, stride, padding, ceil_mode):
    return max_pool2d_backward(x[:, :, None], grad_y[:, :, None], (1, kernel), (1, stride), (0, padding),
                               ceil_mode)[:, :, 0]


def avg_pool1d(x, kernel, stride, padding, ceil_mode, count_include_pad):
    return avg_pool2d(x[:, :, None], (1, kernel), (1, stride), (0, padding), ceil_mode,
                      count_include_pad)[:, :, 0]


def avg_pool1d_backward(x, grad_y, kernel, stride, padding, ceil_mode, count_include_pad):
    return avg_pool2d_backward(x[:, :, None], grad_y[:, :, None], (1, kernel), (1, stride), (0, padding),
                               ceil_mode, count_include_pad)[:, :, 0]


def global_avg_pool(x):
    """``adaptive_avg_pool(x, 1)``: the mean over every position of each plane, kept as size-1 axes."""
    n, c = x.shape[:2]
    y = np.zeros((n, c) + (1,) * (x.ndim - 2))
    for b in range(n):
        for ch in range(c):
            y[b, ch] = np.sum(x[b, ch], dtype=np.float64) / x[b, ch].size
    return y


def global_avg_pool_backward(x, grad_y):
    grad_x = np.zeros(x.shape)
    for b in range(x.shape[0]):
        for ch in range(x.shape[1]):
            grad_x[b, ch] = grad_y[b, ch].reshape(()) / x[b, ch].size
    return grad_x
