"""The depthwise path of the CPU convolutions (Numba): one input channel per group, per-plane loops;
3x3 kernels (MobileNet's, EfficientNet's) a whole output row at a time, nine multiply-adds per
pixel held in registers. The wrappers in :mod:`.cpu` call these kernels."""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from cnnrun.engine.jit import cpu_kernel

from .im2col import span


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
def depthwise_forward_3x3(x, w, base, y, sh, sw, ph, pw, dh, dw, planes):
    """:func:`depthwise_forward` for a 3x3 kernel. Per (sample, channel), the zero-padded input
    plane is copied into the thread's ``planes[thread]`` ``(rows, sw, cols)``, its columns split by
    phase (padded column ``s`` at ``[s % sw, s // sw]``), so that every tap of a row of outputs is
    a contiguous run, whatever the stride; then each output is the nine products summed in one
    expression, vectorized along the row. Elements are indexed, never sliced: a view per row would
    cost a reference count update on the arrays shared by all threads."""
    m, channels, height, width = x.shape
    out_channels = w.shape[0]
    oh_n, ow_n = y.shape[2], y.shape[3]
    multiplier = out_channels // channels
    rows, cols = planes.shape[1], planes.shape[3]
    # tap kj of output column j reads phase (kj*dw) % sw, column j + (kj*dw) // sw
    p1, p2, c1, c2 = dw % sw, (2 * dw) % sw, dw // sw, (2 * dw) // sw
    for no in prange(m * out_channels):
        n = no // out_channels
        o = no - n * out_channels
        c = o // multiplier
        t = numba.get_thread_id()
        for r in range(rows):
            h = r - ph
            for phase in range(sw):
                lo, hi = span(phase - pw, sw, width, cols) if 0 <= h < height else (cols, cols)
                for q in range(lo):
                    planes[t, r, phase, q] = 0
                for q in range(lo, hi):
                    planes[t, r, phase, np.uintp(q)] = x[n, c, h, np.uintp(q * sw + phase - pw)]
                for q in range(hi, cols):
                    planes[t, r, phase, q] = 0
        b = base[o]
        w00, w01, w02 = w[o, 0, 0, 0], w[o, 0, 0, 1], w[o, 0, 0, 2]
        w10, w11, w12 = w[o, 0, 1, 0], w[o, 0, 1, 1], w[o, 0, 1, 2]
        w20, w21, w22 = w[o, 0, 2, 0], w[o, 0, 2, 1], w[o, 0, 2, 2]
        for i in range(oh_n):
            r0 = np.uintp(i * sh)
            r1, r2 = r0 + np.uintp(dh), r0 + np.uintp(2 * dh)
            for j in range(ow_n):
                q0 = np.uintp(j)
                q1, q2 = q0 + np.uintp(c1), q0 + np.uintp(c2)
                y[n, o, i, q0] = (b + w00 * planes[t, r0, 0, q0] + w01 * planes[t, r0, p1, q1]
                                  + w02 * planes[t, r0, p2, q2] + w10 * planes[t, r1, 0, q0]
                                  + w11 * planes[t, r1, p1, q1] + w12 * planes[t, r1, p2, q2]
                                  + w20 * planes[t, r2, 0, q0] + w21 * planes[t, r2, p1, q1]
                                  + w22 * planes[t, r2, p2, q2])


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
