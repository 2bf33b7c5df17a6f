"""Naive float64 references for the resizing layers, transcribed from PyTorch's definitions (ATen
``UpSample.h``: ``area_pixel_compute_scale``, ``area_pixel_compute_source_index``,
``nearest_neighbor_compute_source_index``; ``UpSampleKernel.cpp``; ``PadNd.cpp``; ``PixelShuffle.cpp``;
``ChannelShuffle.cpp``), one loop per output element. Inputs are ``(N, C, H, W)``; each backward
scatters every output gradient back to the inputs its forward read."""

from __future__ import annotations

import math

import numpy as np


def _scale(size, out, align_corners, scale_factor):
    if align_corners:
        return (size - 1) / (out - 1) if out > 1 else 0.0
    return 1.0 / scale_factor if scale_factor is not None else size / out


def nearest_index(o, size, out, scale_factor):
    """ATen's nearest_idx."""
    if out == size:
        return o
    if out == 2 * size:
        return o >> 1
    return min(math.floor(o * _scale(size, out, False, scale_factor)), size - 1)


def _linear(o, size, out, align_corners, scale_factor):
    """``(i0, i1, lambda0, lambda1)`` of output ``o`` along one axis."""
    scale = _scale(size, out, align_corners, scale_factor)
    src = scale * o if align_corners else max(scale * (o + 0.5) - 0.5, 0.0)
    i0 = int(src)
    i1 = i0 + (1 if i0 < size - 1 else 0)
    lam1 = src - i0
    return i0, i1, 1.0 - lam1, lam1


def upsample_nearest(x, out_hw, scale_factor, grad_y=None):
    n, c, h, w = x.shape
    y = np.zeros((n, c, *out_hw))
    grad_x = np.zeros(x.shape)
    sh, sw = scale_factor or (None, None)
    for b, ch, oh, ow in np.ndindex(*y.shape):
        ih, iw = nearest_index(oh, h, out_hw[0], sh), nearest_index(ow, w, out_hw[1], sw)
        y[b, ch, oh, ow] = x[b, ch, ih, iw]
        if grad_y is not None:
            grad_x[b, ch, ih, iw] += grad_y[b, ch, oh, ow]
    return y if grad_y is None else grad_x


def upsample_bilinear(x, out_hw, scale_factor, align_corners, grad_y=None):
    n, c, h, w = x.shape
    y = np.zeros((n, c, *out_hw))
    grad_x = np.zeros(x.shape)
    sh, sw = scale_factor or (None, None)
    for b, ch, oh, ow in np.ndindex(*y.shape):
        h0, h1, h0l, h1l = _linear(oh, h, out_hw[0], align_corners, sh)
        w0, w1, w0l, w1l = _linear(ow, w, out_hw[1], align_corners, sw)
        y[b, ch, oh, ow] = (h0l * (w0l * x[b, ch, h0, w0] + w1l * x[b, ch, h0, w1])
                            + h1l * (w0l * x[b, ch, h1, w0] + w1l * x[b, ch, h1, w1]))
        if grad_y is not None:
            g = grad_y[b, ch, oh, ow]
            for i, li in ((h0, h0l), (h1, h1l)):
                for j, lj in ((w0, w0l), (w1, w1l)):
                    grad_x[b, ch, i, j] += g * li * lj
    return y if grad_y is None else grad_x


def _pad_index(j, size, mode):
    """The input index padded position ``j`` (may be < 0 or >= size) reads; None: the constant."""
    if 0 <= j < size:
        return j
    if mode == "constant":
        return None
    if mode == "reflect":
        return -j if j < 0 else 2 * (size - 1) - j
    if mode == "replicate":
        return 0 if j < 0 else size - 1
    return j + size if j < 0 else j - size  # circular


def pad(x, pads, mode, value, grad_y=None):
    """``pads`` ``((top, bottom), (left, right))``."""
    (top, bottom), (left, right) = pads
    n, c, h, w = x.shape
    y = np.zeros((n, c, h + top + bottom, w + left + right))
    grad_x = np.zeros(x.shape)
    for b, ch, oh, ow in np.ndindex(*y.shape):
        ih, iw = _pad_index(oh - top, h, mode), _pad_index(ow - left, w, mode)
        if ih is None or iw is None:
            y[b, ch, oh, ow] = value
        else:
            y[b, ch, oh, ow] = x[b, ch, ih, iw]
            if grad_y is not None:
                grad_x[b, ch, ih, iw] += grad_y[b, ch, oh, ow]
    return y if grad_y is None else grad_x


def pixel_shuffle(x, r):
    n, c, h, w = x.shape
    y = np.zeros((n, c // (r * r), h * r, w * r))
    for b, oc, oh, ow in np.ndindex(*y.shape):
        y[b, oc, oh, ow] = x[b, oc * r * r + (oh % r) * r + ow % r, oh // r, ow // r]
    return y


def pixel_unshuffle(x, r):
    n, c, h, w = x.shape
    y = np.zeros((n, c * r * r, h // r, w // r))
    for b, oc, oh, ow in np.ndindex(*y.shape):
        c_in, offset = divmod(oc, r * r)
        y[b, oc, oh, ow] = x[b, c_in, oh * r + offset // r, ow * r + offset % r]
    return y


def channel_shuffle(x, groups):
    y = np.zeros(x.shape)
    per_group = x.shape[1] // groups
    for oc in range(x.shape[1]):
        y[:, oc] = x[:, (oc % groups) * per_group + oc // groups]
    return y
