"""Inputs decoded on demand: a data source whose examples do not all fit in memory as float32
(a folder of images, the CIFAR bytes) returns :class:`LazyInputs` as ``Examples.x``.

``LazyInputs`` behaves like the float32 array it stands for where the engine reads inputs:
``shape``, ``ndim``, ``dtype``, ``len()``, and ``x[index]`` (a slice or an integer array) decodes
and returns those examples as a float32 ndarray. ``subset`` (splits), ``normalized`` (the
``normalize`` option) and ``channel_statistics`` keep it lazy; ``np.asarray(x)`` decodes everything.

A *store* holds the examples in their compact form; it has ``example_shape`` (``(C, H, W)``) and
``read(indices) -> float32 array (len(indices), C, H, W)``.
"""

from __future__ import annotations

import numpy as np

from .standardize import standardize

STATISTICS_CHUNK = 1024
"""Examples decoded at a time by :meth:`LazyInputs.channel_statistics`."""


class LazyInputs:
    """The examples ``indices`` of ``store``, decoded when indexed, then standardized with
    ``normalization`` (``{"mean": [...], "std": [...]}`` per channel) if given."""

    dtype = np.dtype(np.float32)

    def __init__(self, store, indices=None, normalization: dict | None = None):
        self.store = store
        self.indices = np.arange(store.count) if indices is None else np.asarray(indices, dtype=np.int64)
        self.normalization = normalization

    @property
    def shape(self) -> tuple:
        return (len(self.indices), *self.store.example_shape)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, key) -> np.ndarray:
        return standardize(self.store.read(self.indices[key]), self.normalization)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        x = self[:]
        return x if dtype is None else x.astype(dtype)

    def subset(self, index) -> "LazyInputs":
        """The examples at ``index`` (positions in this one), still lazy."""
        return LazyInputs(self.store, self.indices[index], self.normalization)

    def normalized(self, normalization: dict | None) -> "LazyInputs":
        """These examples standardized with ``normalization`` when decoded."""
        return LazyInputs(self.store, self.indices, normalization)

    def channel_statistics(self) -> dict[str, list[float]]:
        """:func:`cnnrun.engine.data.channel_statistics` of the decoded examples, computed
        ``STATISTICS_CHUNK`` examples at a time (float64 sums; a std of 0 is stored as 1)."""
        channels = self.shape[1]
        total, total_sq, count = np.zeros(channels), np.zeros(channels), 0
        for start in range(0, len(self), STATISTICS_CHUNK):
            x = self[start:start + STATISTICS_CHUNK].astype(np.float64)
            axes = (0, *range(2, x.ndim))
            total += x.sum(axis=axes)
            total_sq += (x * x).sum(axis=axes)
            count += x.size // channels
        mean = total / count
        std = np.sqrt(np.maximum(total_sq / count - mean * mean, 0.0))
        return {"mean": mean.tolist(), "std": np.where(std > 0, std, 1.0).tolist()}
