"""Per-axis index tables of the resizing layers, computed on the host in float64 (O(H + W) work).

A gather along one axis is ``source[o]``: the input index output ``o`` reads (-1: none, a constant).
Its gradient gathers back through the inverse, ``order[starts[i]:starts[i + 1]]``: the outputs that
read input ``i`` (in increasing order), so backward kernels gather instead of scattering (no atomics).
"""

from __future__ import annotations

import math

import numpy as np


def inverse(source: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``(starts, order)`` (int32): the outputs reading input ``i`` are ``order[starts[i]:starts[i + 1]]``."""
    order = np.argsort(source, kind="stable").astype(np.int32)
    order = order[source[order] >= 0]
    starts = np.searchsorted(source[order], np.arange(size + 1)).astype(np.int32)
    return starts, order


def padded_source(size: int, before: int, after: int, mode: str) -> np.ndarray:
    """The input index each of ``before + size + after`` outputs reads under a pad ``mode``:
    constant -1 outside; reflect mirrors without repeating the edge; replicate repeats it;
    circular wraps around."""
    j = np.arange(-before, size + after)
    if mode == "constant":
        return np.where((j >= 0) & (j < size), j, -1).astype(np.int32)
    if mode == "reflect":
        period = 2 * (size - 1)
        j = np.abs(j) % period if period else np.zeros_like(j)
        return np.where(j < size, j, period - j).astype(np.int32)
    if mode == "replicate":
        return np.clip(j, 0, size - 1).astype(np.int32)
    return (j % size).astype(np.int32)  # circular


def nearest_source(size: int, out: int, scale) -> np.ndarray:
    """PyTorch's ``nearest`` (``nearest_idx``): ``o`` when ``out == size``, ``o // 2`` when ``out == 2 size``,
    else ``min(floor(o * s), size - 1)``, ``s = 1 / scale_factor`` when one is given, else ``size / out``."""
    o = np.arange(out)
    if out == size or out == 2 * size:
        return (o // (out // size)).astype(np.int32)
    s = 1.0 / scale if scale is not None else size / out
    return np.minimum(np.floor(o * s), size - 1).astype(np.int32)


def linear_source(size: int, out: int, scale, align_corners: bool):
    """PyTorch's ``bilinear`` along one axis: ``(first, second, weight)``, output ``o`` being
    ``(1 - weight) * x[first] + weight * x[second]``.

    ``src = o * (size - 1) / (out - 1)`` with ``align_corners`` (0 when ``out == 1``), else
    ``max((o + 0.5) * s - 0.5, 0)`` with ``s`` as in :func:`nearest_source`; ``first = floor(src)``,
    ``second = first + 1`` (``first`` at the last row), ``weight = src - first``.
    """
    o = np.arange(out, dtype=np.float64)
    if align_corners:
        src = o * ((size - 1) / (out - 1) if out > 1 else 0.0)
    else:
        s = 1.0 / scale if scale is not None else size / out
        src = np.maximum((o + 0.5) * s - 0.5, 0.0)
    first = np.minimum(np.floor(src), size - 1).astype(np.int32)
    second = np.minimum(first + 1, size - 1).astype(np.int32)
    return first, second, src - first


def linear_inverse(first: np.ndarray, second: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``(lo, hi)`` (int32): the outputs reading input ``i`` (as first or second) are ``range(lo[i], hi[i])``
    (``first`` and ``second`` never decrease, so they are contiguous)."""
    i = np.arange(size)
    return (np.searchsorted(second, i, side="left").astype(np.int32),
            np.searchsorted(first, i, side="right").astype(np.int32))


def scaled_size(size: int, scale: float) -> int:
    """PyTorch's output size for a scale factor: floor(size * scale)."""
    return math.floor(size * scale)
