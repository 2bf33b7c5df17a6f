"""Devices: where a network's arrays live, and the kernels its layers call there.

A device is a :class:`Device` subclass registered through the ``cnnrun_register_devices`` hook. It
does the few array operations the engine needs itself (move, allocate, add, fill) and holds a
:class:`Kernels` table: one function per operation ("conv2d_forward", "relu_backward", "sgd_update",
"cross_entropy", ...), gathered from the modules that plugins register for it through
``cnnrun_register_kernels``. A layer writes its math once and calls ``ctx.kernels.OPERATION(...)``;
the table is resolved once, when a network moves to the device (:meth:`Network.to`).

Built-in devices (registered by :mod:`cnnrun.plugins.devices`): "cpu" (:class:`CpuDevice`, NumPy
arrays) and "cuda" (Numba CUDA device arrays; :mod:`cnnrun.engine.cuda` is imported only when the
device is opened, so cnnrun imports without a GPU). An opened device comes from the registry:
:func:`cnnrun.engine.plugins.get_backend`.
"""

from __future__ import annotations

from typing import Callable, ClassVar

import numpy as np

from .errors import CnnrunError


class Kernels:
    """A device's kernel table: one attribute per operation (``kernels.conv2d_forward(...)``)."""

    def __init__(self, device: str, table: dict[str, Callable]):
        self.__dict__.update(table)
        self._device = device

    def __contains__(self, operation: str) -> bool:
        return operation in self.__dict__ and not operation.startswith("_")

    def __getattr__(self, operation: str):  # only reached for a missing operation
        if operation.startswith("__"):
            raise AttributeError(operation)
        raise CnnrunError(f"no kernel '{operation}' on device '{self._device}'")


class Device:
    """Base class of devices. Subclasses set ``name`` (the ``--device`` value) and ``description``
    (one line for ``--help``) and implement the array operations below.

    - ``host_arrays``: True when the device's arrays are NumPy arrays (a layer that declares no
      ``kernels`` computes with NumPy itself and runs only on such devices);
    - ``kernels_from``: another device whose kernels serve the operations this one registers none for
      (each passed through :meth:`wrap_kernel`);
    - :meth:`open`: the instance to use, or a :class:`CnnrunError` saying what is missing (a GPU).
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    host_arrays: ClassVar[bool] = False
    kernels_from: ClassVar[str | None] = None

    kernels: Kernels

    @classmethod
    def open(cls) -> "Device":
        """A working instance of this device; raise :class:`CnnrunError` when it cannot run here."""
        return cls()

    def wrap_kernel(self, operation: str, function: Callable) -> Callable:
        """The function this device calls for ``operation`` (``function`` itself by default)."""
        return function

    # -- array operations ----------------------------------------------------------------------
    def asarray(self, x, dtype):
        """``x`` (a host array, a list, or an array of this device) as a C-contiguous array of ``dtype`` here."""
        raise NotImplementedError

    def empty(self, shape, dtype):
        raise NotImplementedError

    def zeros(self, shape, dtype):
        raise NotImplementedError

    def add(self, a, b):
        """``a + b`` as a new array."""
        raise NotImplementedError

    def fill(self, array, value) -> None:
        raise NotImplementedError

    def copy_into(self, target, host: np.ndarray) -> None:
        """Overwrite ``target`` (an array on this device) with the host array ``host``."""
        raise NotImplementedError

    def to_host(self, array) -> np.ndarray:
        """A host (NumPy) copy of ``array``."""
        raise NotImplementedError

    def holds(self, array) -> bool:
        """Whether ``array`` is an array of this device."""
        raise NotImplementedError

    def synchronize(self) -> None:
        """Wait until queued work is done."""

    def __repr__(self) -> str:
        return f"<device {self.name}>"


class CpuDevice(Device):
    """NumPy arrays in host memory; kernels are NumPy code and Numba CPU kernels."""

    name = "cpu"
    description = "the CPU (NumPy arrays, Numba kernels)"
    host_arrays = True

    def asarray(self, x, dtype) -> np.ndarray:
        return np.ascontiguousarray(x, dtype=dtype)

    def empty(self, shape, dtype) -> np.ndarray:
        return np.empty(shape, dtype)

    def zeros(self, shape, dtype) -> np.ndarray:
        return np.zeros(shape, dtype)

    def add(self, a, b) -> np.ndarray:
        return a + b

    def fill(self, array, value) -> None:
        array[...] = value

    def copy_into(self, target, host: np.ndarray) -> None:
        target[...] = host

    def to_host(self, array) -> np.ndarray:
        return np.array(array, copy=True)

    def holds(self, array) -> bool:
        return isinstance(array, np.ndarray)
