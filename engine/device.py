"""Devices: where a network's arrays live and the few array operations the engine does itself.

``get_backend("cpu")`` works with NumPy arrays; ``get_backend("cuda")`` with Numba CUDA device
arrays (:mod:`cnnrun.engine.cuda`, imported only when asked for, so cnnrun imports without a GPU).
Layers and optimizers compute on the device themselves (``forward_cuda`` and friends); the backend
only moves, allocates, adds and zeroes arrays for the engine.
"""

from __future__ import annotations

import numpy as np

from .errors import CnnrunError

DEVICES = ("cpu", "cuda")


class CpuBackend:
    """NumPy arrays in host memory."""

    name = "cpu"

    def asarray(self, x, dtype) -> np.ndarray:
        """``x`` (host array or list) as a C-contiguous array of ``dtype`` on this device."""
        return np.ascontiguousarray(x, dtype=dtype)

    def empty(self, shape, dtype) -> np.ndarray:
        return np.empty(shape, dtype)

    def zeros(self, shape, dtype) -> np.ndarray:
        return np.zeros(shape, dtype)

    def add(self, a, b) -> np.ndarray:
        """``a + b`` as a new array."""
        return a + b

    def fill(self, array, value) -> None:
        array[...] = value

    def copy_into(self, target, host: np.ndarray) -> None:
        """Overwrite ``target`` (an array on this device) with the host array ``host``."""
        target[...] = host

    def to_host(self, array) -> np.ndarray:
        """A host (NumPy) copy of ``array``."""
        return np.array(array, copy=True)

    def synchronize(self) -> None:
        """Wait until queued work is done (nothing to wait for on the CPU)."""


CPU = CpuBackend()


def get_backend(device: str):
    """The backend of ``device`` ("cpu" or "cuda"); a missing GPU, driver or numba-cuda is one clear
    :class:`CnnrunError` saying what to install."""
    if device == "cpu":
        return CPU
    if device == "cuda":
        try:
            from .cuda import cuda_backend
        except ImportError as exc:  # a Numba without any CUDA target
            raise CnnrunError(f"--device cuda needs numba-cuda, which cannot be imported ({exc}); "
                              f"`pip install 'cnnrun[cuda]'` (and an NVIDIA driver), or use --device cpu") from None
        return cuda_backend()
    raise CnnrunError(f"unknown device '{device}'; expected one of: {', '.join(DEVICES)}")


def backend_of(array):
    """The backend of the device that ``array`` lives on (a NumPy array: the CPU)."""
    return CPU if isinstance(array, np.ndarray) else get_backend("cuda")


def to_host(array) -> np.ndarray:
    """A NumPy copy of an array from any device (``net.forward`` on CUDA returns device arrays)."""
    if isinstance(array, np.ndarray):
        return array.copy()
    return array.copy_to_host()
