"""Read-only offset tables of the CPU convolutions' products (:mod:`cnnrun.plugins.products.cpu`
reads the rows of its second operand at given starts): cached per shape, so a layer's calls after
the first build none."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from cnnrun.plugins.common import round_up


@lru_cache(maxsize=256)
def tap_offsets(groups, channels, kh, kw, dh, dw, plane, width) -> np.ndarray:
    """offsets[g, (c*kh + ki)*kw + kj] = (g*channels + c)*plane + ki*dh*width + kj*dw, zero-padded
    to a multiple of 4 taps (read-only)."""
    c = np.arange(groups * channels).reshape(groups, channels, 1, 1) * plane
    taps = (c + np.arange(kh).reshape(kh, 1) * dh * width + np.arange(kw) * dw).reshape(groups, -1)
    offsets = np.zeros((groups, round_up(taps.shape[1], 4)), np.int64)
    offsets[:, :taps.shape[1]] = taps
    offsets.flags.writeable = False
    return offsets


@lru_cache(maxsize=256)
def column_rows(rows, tile) -> np.ndarray:
    """offsets[k] = k * tile: where row k of a ``(rows, tile)`` im2col buffer starts (read-only)."""
    offsets = np.arange(rows, dtype=np.int64) * tile
    offsets.flags.writeable = False
    return offsets


@lru_cache(maxsize=256)
def clamped_rows(rows, count, length) -> np.ndarray:
    """offsets[k] = min(k, count - 1) * length for k < rows: the rows of a ``(count, length)`` array,
    the padding rows repeating the last (read-only)."""
    offsets = np.minimum(np.arange(rows, dtype=np.int64), count - 1) * length
    offsets.flags.writeable = False
    return offsets


@lru_cache(maxsize=256)
def channel_rows(groups, per_group, rows, pixels) -> np.ndarray:
    """offsets[g, o] = (g*per_group + o) * pixels, the planes of group g's channels in a sample;
    0 for padding (read-only)."""
    offsets = np.zeros((groups, rows), np.int64)
    offsets[:, :per_group] = np.arange(groups * per_group).reshape(groups, per_group) * pixels
    offsets.flags.writeable = False
    return offsets
