"""Per-channel standardization of an input array, shared by in-memory and lazily decoded inputs."""

from __future__ import annotations

import numpy as np

from .errors import CnnrunError, ShapeError
from .options import show


def standardize(x: np.ndarray, normalization: dict | None) -> np.ndarray:
    """``(x - mean[c]) / std[c]`` per channel (axis 1), as float32; ``x`` as float32 for ``None``.
    PyTorch: ``torchvision.transforms.Normalize(mean, std)``."""
    if normalization is None:
        return np.asarray(x, dtype=np.float32)
    mean = np.asarray(normalization["mean"], dtype=np.float64)
    std = np.asarray(normalization["std"], dtype=np.float64)
    if x.ndim < 2 or x.shape[1] != len(mean) or len(std) != len(mean):
        raise ShapeError(f"normalization has {len(mean)} channel means and {len(std)} stds but the "
                         f"inputs have shape {x.shape} (channels on axis 1)")
    if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()):
        raise CnnrunError(f"normalization needs finite means and stds > 0 for every channel; got "
                          f"mean={show(mean.tolist())[:60]}, std={show(std.tolist())[:60]}")
    shape = (1, len(mean)) + (1,) * (x.ndim - 2)
    return ((x - mean.reshape(shape)) / std.reshape(shape)).astype(np.float32)
