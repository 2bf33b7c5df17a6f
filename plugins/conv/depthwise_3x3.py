"""Depthwise 3x3 convolutions on the CPU (Numba): MobileNet's and EfficientNet's forward and weight
gradient (the input gradient: at stride 1 the forward of the rotated filter, else the general
kernel of :mod:`.depthwise`).

Per (sample, channel), the zero-padded input plane ``xp`` is copied into the thread's workspace
``planes[thread]`` ``(rows, sw, cols)`` with its columns split by stride phase (padded column ``s``
at ``[s % sw, s // sw]``): tap ``(ki, kj)`` of output ``(i, j)`` is then
``planes[i*sh + ki*dh, (kj*dw) % sw, j + (kj*dw) // sw]``, and every tap of a row of outputs is
a contiguous run whatever the stride, so the loops along a row vectorize:

- forward ``y[n, o, i, j] = base[o] + sum_{ki, kj} w[o, ki, kj] * xp[n, c, i*sh + ki*dh, j*sw + kj*dw]``
  (c = o // multiplier): the nine products of an output in one expression;
- weight gradient ``dw[n, o, ki, kj] = sum_{i, j} g[n, o, i, j] * xp[...]``: nine sums along each row,
  per sample (the caller adds the samples in order).

On narrow maps (:func:`.rules.depthwise_layout`) the forward runs instead in vectors along the
output rows straight from x (:func:`depthwise_rows_3x3`) or, one output channel per input
channel, along the channels of a sample's channels-last copy (:func:`depthwise_channels_last_3x3`:
a map of 8x8 or less gives a row a vector or less of outputs, its channels many).

Elements are indexed, never sliced: a view per row costs a reference count update (measured in
Winograd's transforms on small maps, :mod:`.winograd`). PyTorch: ``F.conv2d(x, w, groups=C)`` with a 3x3 kernel.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from cnnrun.engine.jit import cpu_kernel, serial_kernel

from .depthwise import span
from .direct import channels_last_row
from .vectors import channel_taps_3x3, depthwise_row, transposed_block, vector_lanes


@serial_kernel
def _load_plane(x, n, c, planes, t, ph, pw):
    """planes[t, r, phase, q] = x[n, c, r - ph, q*sw + phase - pw], zero outside x (sw = planes.shape[2])."""
    height, width = x.shape[2], x.shape[3]
    rows, sw, cols = planes.shape[1], planes.shape[2], planes.shape[3]
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


@serial_kernel
def _tap_places(i, j, sh, dh, c1, c2):
    """(r0, r1, r2, q0, q1, q2): the plane rows of output (i, j)'s three kernel rows and, within
    each tap's phase, the columns of its three kernel columns (``c1``, ``c2``: the shifts of kj = 1, 2)."""
    r0, q0 = np.uintp(i * sh), np.uintp(j)
    return r0, r0 + np.uintp(dh), r0 + np.uintp(2 * dh), q0, q0 + np.uintp(c1), q0 + np.uintp(c2)


@cpu_kernel
def depthwise_forward_3x3(x, w, base, y, sh, sw, ph, pw, dh, dw, planes):
    """y = conv(x, w) + base (module docstring), parallel over (sample, output channel)."""
    channels, out_channels = x.shape[1], w.shape[0]
    samples, oh_n, ow_n = y.shape[0], y.shape[2], y.shape[3]
    multiplier = out_channels // channels
    p1, p2, c1, c2 = dw % sw, (2 * dw) % sw, dw // sw, (2 * dw) // sw  # taps kj = 1, 2: phase, shift
    for no in prange(samples * out_channels):
        n = no // out_channels
        o = no - n * out_channels
        t = numba.get_thread_id()
        _load_plane(x, n, o // multiplier, planes, t, ph, pw)
        b = base[o]
        w00, w01, w02 = w[o, 0, 0, 0], w[o, 0, 0, 1], w[o, 0, 0, 2]
        w10, w11, w12 = w[o, 0, 1, 0], w[o, 0, 1, 1], w[o, 0, 1, 2]
        w20, w21, w22 = w[o, 0, 2, 0], w[o, 0, 2, 1], w[o, 0, 2, 2]
        for i in range(oh_n):
            for j in range(ow_n):
                r0, r1, r2, q0, q1, q2 = _tap_places(i, j, sh, dh, c1, c2)
                y[n, o, i, q0] = (b + w00 * planes[t, r0, 0, q0] + w01 * planes[t, r0, p1, q1]
                                  + w02 * planes[t, r0, p2, q2] + w10 * planes[t, r1, 0, q0]
                                  + w11 * planes[t, r1, p1, q1] + w12 * planes[t, r1, p2, q2]
                                  + w20 * planes[t, r2, 0, q0] + w21 * planes[t, r2, p1, q1]
                                  + w22 * planes[t, r2, p2, q2])


@cpu_kernel
def depthwise_rows_3x3(x, w, base, y, sh, sw, ph, pw, dh, dw):
    """The forward of :func:`depthwise_forward_3x3` for column strides 1 and 2: each row of outputs
    in vectors straight from three rows of x (:func:`.vectors.depthwise_row`; no padded copy), so
    that small maps do not run one output at a time. x, w and y C-contiguous."""
    channels, out_channels = x.shape[1], w.shape[0]
    samples, oh_n, ow_n = y.shape[0], y.shape[2], y.shape[3]
    height, width = x.shape[2], x.shape[3]
    multiplier = out_channels // channels
    for no in prange(samples * out_channels):
        n = no // out_channels
        o = no - n * out_channels
        plane = (n * channels + o // multiplier) * height
        out = (n * out_channels + o) * oh_n
        b = base[o]
        for i in range(oh_n):
            r = i * sh - ph
            inside = 0
            for ki in range(3):
                if 0 <= r + ki * dh < height:
                    inside |= 1 << ki
            row = (plane + r) * width  # where input row r would start
            depthwise_row(x, row, row + dh * width, row + 2 * dh * width, inside, width, -pw, sw, dw, w, o * 9, b,
                          y, (out + i) * ow_n, ow_n)


@cpu_kernel
def depthwise_weight_3x3(x, y, partial, sh, sw, ph, pw, dh, dw, planes):
    """partial[n, o, ki, kj] = sum_{i, j} y[n, o, i, j] * xp[n, c, i*sh + ki*dh, j*sw + kj*dw]
    (module docstring), parallel over (sample, output channel)."""
    channels = x.shape[1]
    samples, out_channels, oh_n, ow_n = y.shape
    multiplier = out_channels // channels
    p1, p2, c1, c2 = dw % sw, (2 * dw) % sw, dw // sw, (2 * dw) // sw
    for no in prange(samples * out_channels):
        n = no // out_channels
        o = no - n * out_channels
        t = numba.get_thread_id()
        _load_plane(x, n, o // multiplier, planes, t, ph, pw)
        s00 = s01 = s02 = s10 = s11 = s12 = s20 = s21 = s22 = y.dtype.type(0)
        for i in range(oh_n):
            for j in range(ow_n):
                r0, r1, r2, q0, q1, q2 = _tap_places(i, j, sh, dh, c1, c2)
                g = y[n, o, i, q0]
                s00 += g * planes[t, r0, 0, q0]
                s01 += g * planes[t, r0, p1, q1]
                s02 += g * planes[t, r0, p2, q2]
                s10 += g * planes[t, r1, 0, q0]
                s11 += g * planes[t, r1, p1, q1]
                s12 += g * planes[t, r1, p2, q2]
                s20 += g * planes[t, r2, 0, q0]
                s21 += g * planes[t, r2, p1, q1]
                s22 += g * planes[t, r2, p2, q2]
        partial[n, o, 0, 0], partial[n, o, 0, 1], partial[n, o, 0, 2] = s00, s01, s02
        partial[n, o, 1, 0], partial[n, o, 1, 1], partial[n, o, 1, 2] = s10, s11, s12
        partial[n, o, 2, 0], partial[n, o, 2, 1], partial[n, o, 2, 2] = s20, s21, s22


@cpu_kernel
def depthwise_channels_last_3x3(x, taps, base, y, sh, sw, ph, pw, dh, dw, images, rows):
    """The forward of :func:`depthwise_forward_3x3` (one output channel per input channel) along
    the channels: per sample, x moved into the thread's zero-padded channels-last ``images[t]``
    ``(Hp, Wp, C)`` (:func:`.direct.channels_last_row`: it stays in L2), then a row of outputs at a
    time ``out[j, c] = base[c] + sum_{ki, kj} taps[3*ki + kj, c] * image[i*sh + ki*dh, j*sw + kj*dw, c]``,
    four outputs at once (:func:`.vectors.channel_taps_3x3`), into ``rows[t]`` ``(OW, C)``, then
    transposed into y's planes (:func:`.vectors.transposed_block`). ``taps`` is ``(9, C)``; parallel
    over the samples."""
    samples, channels, oh_n, ow_n = y.shape
    width = images.shape[2]
    taps_flat, y_flat = taps.reshape(taps.size), y.reshape(y.size)
    lanes = vector_lanes(y)
    for n in prange(samples):
        t = numba.get_thread_id()
        image = images[t]
        for r in range(image.shape[0]):
            channels_last_row(x, n, r, image, ph, pw)
        flat, out = image.reshape(image.size), rows[t].reshape(ow_n * channels)
        for i in range(oh_n):
            corner = i * sh * width * channels
            for j in range(0, ow_n, 4):
                channel_taps_3x3(flat, corner + j * sw * channels, dh * width * channels, dw * channels,
                                 sw * channels, min(4, ow_n - j), taps_flat, base, out, j * channels, channels)
            for j in range(0, ow_n, lanes):
                for c in range(0, channels, lanes):
                    transposed_block(out, j * channels + c, channels, min(lanes, ow_n - j), y_flat,
                                     ((n * channels + c) * oh_n + i) * ow_n + j, oh_n * ow_n, min(lanes, channels - c))
