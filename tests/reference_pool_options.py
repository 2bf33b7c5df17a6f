"""Naive float64 references for the pooling options of issue 12, one loop per output and window element:
per-side padding and dilation (ATen ``pooling_output_shape_pad_lr``, ``cpu/MaxPoolKernel.cpp`` with
dilation), adaptive pooling (``AdaptiveAvgPoolKernel.cpp``, ``AdaptiveMaxPoolKernel.cpp``: bin ``i`` is
``[floor(i * in / out), ceil((i + 1) * in / out))``) and global max pooling. Inputs are ``(N, C, H, W)``;
``pads`` is ``((top, bottom), (left, right))``.
"""

from __future__ import annotations

import math

import numpy as np


def output_size(size, kernel, stride, before, after, dilation, ceil_mode):
    rounding = math.ceil if ceil_mode else math.floor
    out = rounding((size + before + after - dilation * (kernel - 1) - 1) / stride) + 1
    if ceil_mode and (out - 1) * stride >= size + before:
        out -= 1
    return out


def same_pads(size, kernel, stride, dilation, lower):
    """ONNX SAME_UPPER / SAME_LOWER: output ceil(size / stride), the odd padded pixel after / before."""
    total = max((math.ceil(size / stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return (total - total // 2, total // 2) if lower else (total // 2, total - total // 2)


def max_pool2d(x, kernel, stride, pads, dilation, ceil_mode):
    """``(y, indices)``; ``indices`` the flat ``ih * W + iw`` of each window's first maximum (NaN wins)."""
    n, c, height, width = x.shape
    sizes = [output_size(i, k, s, b, a, d, ceil_mode) for i, k, s, (b, a), d in
             zip((height, width), kernel, stride, pads, dilation)]
    y = np.zeros((n, c, *sizes))
    indices = np.zeros((n, c, *sizes), dtype=np.int64)
    for b, ch, oh, ow in np.ndindex(*y.shape):
        ih0 = oh * stride[0] - pads[0][0]
        iw0 = ow * stride[1] - pads[1][0]
        ih1 = min(ih0 + (kernel[0] - 1) * dilation[0] + 1, height)
        iw1 = min(iw0 + (kernel[1] - 1) * dilation[1] + 1, width)
        while ih0 < 0:
            ih0 += dilation[0]
        while iw0 < 0:
            iw0 += dilation[1]
        best, at = -math.inf, ih0 * width + iw0
        for ih in range(ih0, ih1, dilation[0]):
            for iw in range(iw0, iw1, dilation[1]):
                v = float(x[b, ch, ih, iw])
                if v > best or math.isnan(v):
                    best, at = v, ih * width + iw
        y[b, ch, oh, ow], indices[b, ch, oh, ow] = best, at
    return y, indices


def avg_pool2d(x, kernel, stride, pads, ceil_mode, count_include_pad):
    """``(y, windows)``: the mean of each window cut at the end of the padding after (bottom, right), divided
    by that size (``count_include_pad``) or by the number of input elements; ``windows`` lists
    ``(oh, ow, rows, columns, divisor)``."""
    n, c, height, width = x.shape
    sizes = [output_size(i, k, s, b, a, 1, ceil_mode) for i, k, s, (b, a) in
             zip((height, width), kernel, stride, pads)]
    y = np.zeros((n, c, *sizes))
    windows = []
    for oh, ow in np.ndindex(*sizes):
        ih0, iw0 = oh * stride[0] - pads[0][0], ow * stride[1] - pads[1][0]
        ih1, iw1 = min(ih0 + kernel[0], height + pads[0][1]), min(iw0 + kernel[1], width + pads[1][1])
        padded = (ih1 - ih0) * (iw1 - iw0)
        rows, columns = range(max(ih0, 0), min(ih1, height)), range(max(iw0, 0), min(iw1, width))
        windows.append((oh, ow, rows, columns, padded if count_include_pad else len(rows) * len(columns)))
    for b, ch in np.ndindex(n, c):
        for oh, ow, rows, columns, divisor in windows:
            y[b, ch, oh, ow] = sum(float(x[b, ch, i, j]) for i in rows for j in columns) / divisor
    return y, windows


def avg_pool2d_backward(x, grad_y, kernel, stride, pads, ceil_mode, count_include_pad):
    _, windows = avg_pool2d(x, kernel, stride, pads, ceil_mode, count_include_pad)
    grad_x = np.zeros(x.shape)
    for b, ch in np.ndindex(*x.shape[:2]):
        for oh, ow, rows, columns, divisor in windows:
            for i in rows:
                for j in columns:
                    grad_x[b, ch, i, j] += grad_y[b, ch, oh, ow] / divisor
    return grad_x


def indices_backward(x, grad_y, indices):
    """Each output gradient added at the input element ``indices`` names (max pools)."""
    width = x.shape[3]
    grad_x = np.zeros(x.shape)
    for b, ch, oh, ow in np.ndindex(*grad_y.shape):
        index = indices[b, ch, oh, ow]
        grad_x[b, ch, index // width, index % width] += grad_y[b, ch, oh, ow]
    return grad_x


def bins(size, out):
    return [range(math.floor(i * size / out), math.ceil((i + 1) * size / out)) for i in range(out)]


def adaptive_avg_pool2d(x, out_hw):
    n, c, height, width = x.shape
    y = np.zeros((n, c, *out_hw))
    for b, ch in np.ndindex(n, c):
        for oh, rows in enumerate(bins(height, out_hw[0])):
            for ow, columns in enumerate(bins(width, out_hw[1])):
                y[b, ch, oh, ow] = np.mean([float(x[b, ch, i, j]) for i in rows for j in columns])
    return y


def adaptive_avg_pool2d_backward(x, grad_y):
    grad_x = np.zeros(x.shape)
    out_h, out_w = grad_y.shape[2:]
    for b, ch in np.ndindex(*x.shape[:2]):
        for oh, rows in enumerate(bins(x.shape[2], out_h)):
            for ow, columns in enumerate(bins(x.shape[3], out_w)):
                for i in rows:
                    for j in columns:
                        grad_x[b, ch, i, j] += grad_y[b, ch, oh, ow] / (len(rows) * len(columns))
    return grad_x


def adaptive_max_pool2d(x, out_hw):
    """``(y, indices)`` as :func:`max_pool2d`."""
    n, c, height, width = x.shape
    y = np.zeros((n, c, *out_hw))
    indices = np.zeros((n, c, *out_hw), dtype=np.int64)
    for b, ch in np.ndindex(n, c):
        for oh, rows in enumerate(bins(height, out_hw[0])):
            for ow, columns in enumerate(bins(width, out_hw[1])):
                best, at = -math.inf, rows[0] * width + columns[0]
                for i in rows:
                    for j in columns:
                        v = float(x[b, ch, i, j])
                        if v > best or math.isnan(v):
                            best, at = v, i * width + j
                y[b, ch, oh, ow], indices[b, ch, oh, ow] = best, at
    return y, indices
