"""The depthwise path of the CPU convolutions (Numba): one input channel per group, per-plane loops,
for any kernel but 3x3 (:mod:`.depthwise_3x3`). The wrappers in :mod:`.cpu` call these kernels."""

from __future__ import annotations

import numpy as np
from numba import prange

from cnnrun.engine.jit import cpu_kernel, serial_kernel

# Inner-loop indices are cast to ``np.uintp``: Numba then drops its negative-index wraparound and
# the loops vectorize (about 4x faster). Only values known to be >= 0 are cast.


@serial_kernel
def span(offset, stride, size, count):
    """The range [lo, hi) of i < count with 0 <= i*stride + offset < size."""
    lo = 0 if offset >= 0 else (-offset + stride - 1) // stride
    hi = (size - 1 - offset) // stride + 1
    lo = min(lo, count)
    hi = max(min(hi, count), lo)
    return lo, hi


@cpu_kernel
def depthwise_forward(x, w, base, y, sh, sw, ph, pw, dh, dw):
    """y = conv(x, w) + base when each output channel o reads the single input channel o // (O/C)."""
    m, channels, height, width = x.shape
    out_channels, _, kh, kw = w.shape
    oh_n, ow_n = y.shape[2], y.shape[3]
    multiplier = out_channels // channels
    for no in prange(m * out_channels):
        n = no // out_channels
        o = no - n * out_channels
        c = o // multiplier
        y[n, o] = base[o]
        for ki in range(kh):
            top = ki * dh - ph
            h0, h1 = span(top, sh, height, oh_n)
            for kj in range(kw):
                left = kj * dw - pw
                w0, w1 = span(left, sw, width, ow_n)
                weight = w[o, 0, ki, kj]
                for i in range(h0, h1):
                    ih = np.uintp(i * sh + top)
                    for j in range(w0, w1):
                        y[n, o, np.uintp(i), np.uintp(j)] += weight * x[n, c, ih, np.uintp(j * sw + left)]


@cpu_kernel
def depthwise_transpose(y, w, base, x, sh, sw, ph, pw, dh, dw):
    """x = conv^T(y, w) + base for a depthwise w; parallel over (sample, input channel), race-free."""
    m, channels, height, width = x.shape
    out_channels, _, kh, kw = w.shape
    oh_n, ow_n = y.shape[2], y.shape[3]
    multiplier = out_channels // channels
    for nc in prange(m * channels):
        n = nc // channels
        c = nc - n * channels
        x[n, c] = base[c]
        for o in range(c * multiplier, (c + 1) * multiplier):
            for ki in range(kh):
                top = ki * dh - ph
                h0, h1 = span(top, sh, height, oh_n)
                for kj in range(kw):
                    left = kj * dw - pw
                    w0, w1 = span(left, sw, width, ow_n)
                    weight = w[o, 0, ki, kj]
                    for i in range(h0, h1):
                        ih = np.uintp(i * sh + top)
                        for j in range(w0, w1):
                            x[n, c, ih, np.uintp(j * sw + left)] += weight * y[n, o, np.uintp(i), np.uintp(j)]


@cpu_kernel
def depthwise_weight(x, y, partial, sh, sw, ph, pw, dh, dw):
    """partial[n, o, ki, kj] = sum_{i, j} y[n, o, i, j] * x[n, c, i*sh - ph + ki*dh, j*sw - pw + kj*dw]:
    one sample's share of the weight gradient, summed over n by the caller."""
    m, channels, height, width = x.shape
    out_channels, kh, kw = partial.shape[1], partial.shape[2], partial.shape[3]
    oh_n, ow_n = y.shape[2], y.shape[3]
    multiplier = out_channels // channels
    for no in prange(m * out_channels):
        n = no // out_channels
        o = no - n * out_channels
        c = o // multiplier
        for ki in range(kh):
            top = ki * dh - ph
            h0, h1 = span(top, sh, height, oh_n)
            for kj in range(kw):
                left = kj * dw - pw
                w0, w1 = span(left, sw, width, ow_n)
                total = 0.0
                for i in range(h0, h1):
                    ih = np.uintp(i * sh + top)
                    for j in range(w0, w1):
                        total += y[n, o, np.uintp(i), np.uintp(j)] * x[n, c, ih, np.uintp(j * sw + left)]
                partial[n, o, ki, kj] = total
