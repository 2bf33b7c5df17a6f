"""A third device for the tests, registered through the hook: "cpu_checked", the CPU's kernels with
their arguments checked on every call (dtype, contiguity, consistent shapes), and counted.

Registered as a plugin (``cnnrun_register_devices``); it adds no kernels of its own: every operation
is the CPU's (``kernels_from``), wrapped by :meth:`CheckedCpu.wrap_kernel`. No layer knows of it.
"""

from collections import Counter

import numpy as np

from cnnrun.engine import hookimpl
from cnnrun.engine.device import CpuDevice


class KernelArgumentError(AssertionError):
    """A kernel was called with arguments that do not fit together."""


def check_arguments(operation, args):
    """Every array argument C-contiguous and finite-shaped; the floating-point ones of one dtype;
    the arrays of an optimizer update (``*_update``) of one shape."""
    arrays = [a for a in args if isinstance(a, np.ndarray)]
    floats = [a for a in arrays if a.dtype.kind == "f"]
    for a in arrays:
        if not a.flags.c_contiguous:
            raise KernelArgumentError(f"{operation}: an argument of shape {a.shape} is not C-contiguous")
    if floats and any(a.dtype != floats[0].dtype for a in floats):
        raise KernelArgumentError(f"{operation}: mixed dtypes {sorted({a.dtype.str for a in floats})}")
    if operation.endswith("_update") and len({a.shape for a in arrays}) > 1:
        raise KernelArgumentError(f"{operation}: parameter and gradient shapes differ: {[a.shape for a in arrays]}")
    return floats[0].dtype if floats else None, arrays[0].shape[0] if arrays and arrays[0].ndim else None


def check_result(operation, result, dtype, batch):
    """Every floating-point array returned of the arguments' dtype and with their first dimension."""
    results = result if isinstance(result, tuple) else (result,)
    for a in (r for r in results if isinstance(r, np.ndarray)):
        if a.dtype.kind == "f" and dtype is not None and a.dtype != dtype:
            raise KernelArgumentError(f"{operation}: returned {a.dtype}, the arguments are {dtype}")
        if batch is not None and a.ndim and a.shape[0] != batch:
            raise KernelArgumentError(f"{operation}: returned first dimension {a.shape[0]}, expected {batch}")


class CheckedCpu(CpuDevice):
    """The CPU with every kernel's arguments checked; ``calls`` counts the calls per operation."""

    name = "cpu_checked"
    description = "the CPU kernels, with argument checks (tests)"
    kernels_from = "cpu"
    calls: Counter = Counter()

    def wrap_kernel(self, operation, function):
        calls = self.calls

        def checked(*args):
            dtype, batch = check_arguments(operation, args)
            calls[operation] += 1
            result = function(*args)
            check_result(operation, result, dtype, batch)
            return result

        return checked


@hookimpl
def cnnrun_register_devices(register):
    register(CheckedCpu)
