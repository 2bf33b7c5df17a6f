"""The filter layouts of the CPU conv paths (:mod:`.cpu`), made once per filter (an inference
plan's frozen context keeps them): rows zero-padded to multiples of 4 for the register blocks of
:mod:`cnnrun.plugins.products.cpu`, transposed, channels-last or rotated."""

from __future__ import annotations

import numpy as np

from cnnrun.plugins.common import grouped, round_up


def padded_to_4(a):
    """``(G, R, K)`` zero-padded to R and K multiples of 4."""
    groups, rows, taps = a.shape
    packed = np.zeros((groups, round_up(rows, 4), round_up(taps, 4)), a.dtype)
    packed[:, :rows, :taps] = a
    return packed


def transposed_to_4(w, groups):
    """The filter as ``(G, taps, O/G)`` blocks, zero-padded to multiples of 4 (the transposes' rows)."""
    return padded_to_4(grouped(w, groups).transpose(0, 2, 1))


def channels_last_filter(w, groups, depth):
    """The filter rows of channels-last patches: ``(G, O/G, depth)``, taps in (ki, kj, c) order, zeros
    after the ``C/G*kh*kw`` taps."""
    out_channels, per_in, kh, kw = w.shape
    per_group, taps = out_channels // groups, per_in * kh * kw
    packed = np.zeros((groups, per_group, depth), w.dtype)
    packed[:, :, :taps] = w.reshape(groups, per_group, per_in, kh, kw).transpose(0, 1, 3, 4, 2).reshape(
        groups, per_group, taps)
    return packed


def rotated_filter(w, groups):
    """The direct transpose's filter ``(C, O/G, kh, kw)``, C-contiguous: the ``(O/G, C/G)`` blocks of
    each group swapped and every kernel rotated 180 degrees."""
    out_channels, per_group, kh, kw = w.shape
    grouped = w.reshape(groups, out_channels // groups, per_group, kh, kw)[..., ::-1, ::-1]
    rotated = grouped.transpose(0, 2, 1, 3, 4).reshape(groups * per_group, out_channels // groups, kh, kw)
    return np.ascontiguousarray(rotated)  # a depthwise filter's reshape is a view with negative strides
