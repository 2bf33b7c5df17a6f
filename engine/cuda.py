"""The CUDA device: Numba CUDA device arrays, the backend the engine uses, and launch helpers.

Imported only by :meth:`cnnrun.plugins.devices.CudaDevice.open` and by the CUDA kernel modules, never
when cnnrun is imported. :func:`cuda_backend` checks that numba-cuda and a GPU are there and raises
one :class:`CnnrunError` line saying what to install when they are not.

Every kernel uses a grid-stride loop, ``for i in range(cuda.grid(1), n, cuda.gridsize(1))``, so a
capped grid still covers the whole array. The launch size comes from the environment, read at each
launch: ``CNNRUN_CUDA_BLOCK_SIZE`` threads per block (default 256, at most 1024) and at most
``CNNRUN_CUDA_MAX_BLOCKS`` blocks (default 65535). Tests set 32 and 2 so that several blocks and the
grid-stride paths run under Numba's simulator (``NUMBA_ENABLE_CUDASIM=1``).
"""

from __future__ import annotations

import importlib.util
import math
import os

import numpy as np
from numba import cuda

from .device import Device
from .errors import CnnrunError

DEFAULT_BLOCK_SIZE = 256
DEFAULT_MAX_BLOCKS = 65535
MAX_BLOCK_SIZE = 1024  # CUDA's limit of threads per block; also the size of reduction scratch

_CHECKED = False  # numba-cuda and a GPU (or the simulator) were found


def _env_int(name: str, default: int, high: int | None = None) -> int:
    text = os.environ.get(name)
    if text is None or text.strip() == "":
        return default
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1 or (high is not None and value > high):
        limit = f"from 1 to {high}" if high else "of at least 1"
        raise CnnrunError(f"{name} must be an integer {limit}; got {name}={text!r}")
    return value


def block_size() -> int:
    """Threads per block: ``CNNRUN_CUDA_BLOCK_SIZE`` (default 256, 1 to 1024)."""
    return _env_int("CNNRUN_CUDA_BLOCK_SIZE", DEFAULT_BLOCK_SIZE, MAX_BLOCK_SIZE)


def max_blocks() -> int:
    """The most blocks of one launch: ``CNNRUN_CUDA_MAX_BLOCKS`` (default 65535)."""
    return _env_int("CNNRUN_CUDA_MAX_BLOCKS", DEFAULT_MAX_BLOCKS)


def grid(n: int) -> tuple[int, int]:
    """``(blocks, threads)`` for a grid-stride loop over ``n`` items: enough blocks to give every
    item a thread, capped at :func:`max_blocks` (at least one block)."""
    threads = block_size()
    return max(1, min(math.ceil(n / threads), max_blocks())), threads


def blocks_for(n: int) -> int:
    """Blocks for ``n`` independent block-sized jobs (one block each, e.g. a per-channel
    reduction), capped at :func:`max_blocks`."""
    return max(1, min(n, max_blocks()))


def is_device_array(array) -> bool:
    """Whether ``array`` is a Numba CUDA device array (the simulator's fake ones included)."""
    return not isinstance(array, np.ndarray) and hasattr(array, "copy_to_host")


def flat(array):
    """A 1-D view of a C-contiguous device array."""
    return array.reshape(array.size)


def channel_view(array):
    """A C-contiguous (N, C, ...) device array as (N, C, S), S the product of the other axes
    (1 for (N, C))."""
    n, c = array.shape[0], array.shape[1]
    return array.reshape(n, c, array.size // (n * c))


@cuda.jit(device=True)
def block_sum(partial, value):
    """The sum of ``value`` over the threads of a 1-D block, returned to every thread.

    ``partial``: a shared float64 array of at least ``blockDim.x`` values (allocate
    ``cuda.shared.array(MAX_BLOCK_SIZE, float64)`` in the kernel). Every thread of the block must
    call it (it synchronizes); any block size works, not only powers of two.
    """
    tid, size = cuda.threadIdx.x, cuda.blockDim.x
    partial[tid] = value
    cuda.syncthreads()
    step = 1
    while step < size:
        if tid % (2 * step) == 0 and tid + step < size:
            partial[tid] += partial[tid + step]
        step *= 2
        cuda.syncthreads()
    total = partial[0]
    cuda.syncthreads()  # everyone has read partial[0] before the next call overwrites it
    return total


@cuda.jit(device=True)
def strided_index(i, shape, strides):
    """The element offset ``sum_d k_d * strides[d]`` of flat C-order index ``i`` of an array of
    ``shape`` (k its multi-index): with ``strides`` of another array (0 on broadcast axes, permuted
    for a transpose) it gathers that array's element for output element ``i``."""
    offset = 0
    for d in range(shape.size - 1, -1, -1):
        offset += (i % shape[d]) * strides[d]
        i //= shape[d]
    return offset


def index_array(values):
    """Small int64 device array (shapes and strides handed to kernels)."""
    return cuda.to_device(np.asarray(values, dtype=np.int64))


@cuda.jit
def _fill(out, value):
    for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        out[i] = value


@cuda.jit
def _add(out, a, b):
    for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        out[i] = a[i] + b[i]


class CudaBackend(Device):
    """Numba CUDA device arrays in GPU memory (the array operations of :class:`~cnnrun.engine.device.Device`):
    the opened "cuda" device."""

    name = "cuda"  # the device registered as :class:`cnnrun.plugins.devices.CudaDevice`

    def asarray(self, x, dtype):
        """``x`` as a C-contiguous device array of ``dtype``: a host array (or list) is copied to the
        device; a device array of that dtype is returned as it is (one of another dtype, or not
        contiguous, is converted through the host)."""
        dtype = np.dtype(dtype)
        if is_device_array(x):
            if x.dtype == dtype and x.is_c_contiguous():
                return x
            x = x.copy_to_host()
        return cuda.to_device(np.ascontiguousarray(x, dtype=dtype))

    def empty(self, shape, dtype):
        return cuda.device_array(shape, np.dtype(dtype))

    def zeros(self, shape, dtype):
        array = self.empty(shape, dtype)
        self.fill(array, 0)
        return array

    def add(self, a, b):
        """``a + b`` as a new device array."""
        out = self.empty(a.shape, a.dtype)
        if out.size:
            _add[grid(out.size)](flat(out), flat(a), flat(b))
        return out

    def fill(self, array, value) -> None:
        if array.size:
            _fill[grid(array.size)](flat(array), array.dtype.type(value))

    def copy_into(self, target, host: np.ndarray) -> None:
        """Overwrite the device array ``target`` with the host array ``host``."""
        target.copy_to_device(np.ascontiguousarray(np.broadcast_to(host, target.shape), dtype=target.dtype))

    def to_host(self, array) -> np.ndarray:
        """A host (NumPy) copy of ``array``."""
        return array.copy() if isinstance(array, np.ndarray) else array.copy_to_host()

    def holds(self, array) -> bool:
        return is_device_array(array)

    def synchronize(self) -> None:
        """Wait until the queued kernels and copies are done."""
        cuda.synchronize()


def cuda_backend() -> CudaBackend:
    """A CUDA device, after checking (once) that numba-cuda and a GPU with its driver are there (or
    that Numba's simulator is on); else one :class:`CnnrunError` line saying what to do."""
    global _CHECKED
    if not _CHECKED:
        if importlib.util.find_spec("numba_cuda") is None:
            raise CnnrunError("--device cuda needs numba-cuda, which is not installed; "
                              "`pip install 'cnnrun[cuda]'` (and an NVIDIA driver), or use --device cpu")
        if not cuda.is_available():
            raise CnnrunError(f"no CUDA GPU or driver found (numba-cuda could not initialize CUDA: "
                              f"{_why_unavailable()}); install an NVIDIA driver and "
                              f"`pip install 'cnnrun[cuda]'`, or use --device cpu")
        _CHECKED = True
    return CudaBackend()


def _why_unavailable() -> str:
    """Numba's own reason, on one line."""
    try:
        cuda.current_context()
    except Exception as exc:  # numba raises CudaSupportError, CudaDriverError, ...
        reason = " ".join(str(exc).split()).rstrip(":").strip()
        return reason or type(exc).__name__
    return "no GPU found"
