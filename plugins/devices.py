"""The built-in devices, "cpu" and "cuda", and the engine's own kernels (the training losses).

Each layer family registers its own kernels in its package (``cnnrun.plugins.<family>``).
"""

from cnnrun.engine import hookimpl
from cnnrun.engine.device import CpuDevice, Device
from cnnrun.engine.errors import CnnrunError


class CudaDevice(Device):
    """An NVIDIA GPU through numba-cuda: :meth:`open` imports :mod:`cnnrun.engine.cuda` (only then, so
    cnnrun imports without a GPU) and checks for a GPU; the opened device is its ``CudaBackend``."""

    name = "cuda"
    description = "an NVIDIA GPU (needs `pip install 'cnnrun[cuda]'` and a driver)"

    @classmethod
    def open(cls) -> Device:
        try:
            from cnnrun.engine.cuda import cuda_backend
        except ImportError as exc:  # a Numba without any CUDA target
            raise CnnrunError(f"--device cuda needs numba-cuda, which cannot be imported ({exc}); "
                              f"`pip install 'cnnrun[cuda]'` (and an NVIDIA driver), or use --device cpu") from None
        return cuda_backend()


@hookimpl
def cnnrun_register_devices(register):
    register(CpuDevice)
    register(CudaDevice)


@hookimpl
def cnnrun_register_kernels(register):
    register("cpu", "cnnrun.engine.losses")
    register("cuda", "cnnrun.engine.losses_cuda")
