"""The built-in devices, "cpu" and "cuda", and the engine's own kernels (the training losses).

Each layer family registers its own kernels in its package (``cnnrun.plugins.<family>``).
"""

from cnnrun.engine import hookimpl
from cnnrun.engine.device import CpuDevice, CudaDevice


@hookimpl
def cnnrun_register_devices(register):
    register(CpuDevice)
    register(CudaDevice)


@hookimpl
def cnnrun_register_kernels(register):
    register("cpu", "cnnrun.engine.losses")
    register("cuda", "cnnrun.engine.losses_cuda")
