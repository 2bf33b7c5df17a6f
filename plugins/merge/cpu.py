"""CPU kernels of the merge layers (NumPy): broadcasting element-wise operations, the sum of a
gradient over broadcast axes, and channel concatenation; and the inference plans' epilogue (Numba)."""

from __future__ import annotations

import numpy as np
from numba import prange

from cnnrun.engine.jit import cpu_kernel, launch, serial_kernel

EPILOGUE_CHUNK = 1 << 14
"""The epilogue's threads take runs of this many values."""

OPERATIONS = {"add": np.add, "sub": np.subtract, "mul": np.multiply}


def add_forward(inputs):
    """x_1 + x_2 + ... (same shapes), as a new array."""
    y = inputs[0] + inputs[1]
    for x in inputs[2:]:
        y += x
    return y


def elementwise(op, a, b):
    """``a OP b`` ("add", "sub" or "mul") for arrays of one rank, size-1 dimensions broadcast; a new array."""
    return OPERATIONS[op](a, b)


def reduced_axes(shape, target) -> tuple[int, ...]:
    """The axes along which ``target`` (size 1 there) was broadcast to ``shape``."""
    return tuple(d for d, (n, t) in enumerate(zip(shape, target)) if t == 1 and n != 1)


def sum_to_shape(x, shape, factor, out=None):
    """factor * x summed over the axes where ``shape`` is 1 and x is not (the gradient of a broadcast
    input), shaped ``shape``; into ``out`` (any array of that size) when given. x itself when nothing
    is summed, factor is 1 and no ``out``."""
    axes = reduced_axes(x.shape, shape)
    if not axes and factor == 1 and out is None:
        return x
    result = np.sum(x, axis=axes, keepdims=True) if axes else x
    result = result * x.dtype.type(factor)
    if out is None:
        return np.ascontiguousarray(result)
    out.reshape(shape)[...] = result
    return out


def concat_forward(inputs):
    """The inputs stacked along axis 1."""
    return np.concatenate(inputs, axis=1)


def concat_backward(grad, channels):
    """``grad`` split along axis 1 into contiguous arrays of ``channels[i]`` channels each."""
    return tuple(np.ascontiguousarray(g) for g in np.split(grad, np.cumsum(channels[:-1]), axis=1))


def epilogue(y, residual, relu: bool):
    """``y = relu(y + residual)`` in place, in one pass (``residual`` None: no sum; ``relu`` False:
    no relu); returns y. An inference plan's post-op after a conv or linear (:mod:`cnnrun.engine.plan`).
    PyTorch: ``torch.relu_(y.add_(residual))``."""
    y = np.ascontiguousarray(y)
    flat = y.reshape(-1)
    other = flat if residual is None else np.ascontiguousarray(residual, y.dtype).reshape(-1)
    launch(_epilogue, flat.size, flat, other, residual is not None, relu, y.dtype.type(0))
    return y


@cpu_kernel
def _epilogue(y, residual, add, relu, zero):
    """y[i] = max(y[i] + residual[i], 0), the sum when ``add``, the max when ``relu`` (NaN stays NaN),
    in runs of EPILOGUE_CHUNK values (:func:`epilogue_run`)."""
    size = y.size
    for chunk in prange((size + EPILOGUE_CHUNK - 1) // EPILOGUE_CHUNK):
        epilogue_run(y, residual, chunk * EPILOGUE_CHUNK, min(size, (chunk + 1) * EPILOGUE_CHUNK), add, relu, zero)


@serial_kernel
def epilogue_run(y, residual, first, last, add, relu, zero):
    """y[i] = max(y[i] + residual[i], 0) for first <= i < last of the flat arrays, the sum when
    ``add``, the max when ``relu`` (NaN stays NaN): also the conv kernels' epilogue, on the outputs
    they have just written (still in cache). The flags are tested outside the loops, ``zero`` has
    y's dtype and the indices are unsigned, so each loop vectorizes (one loop with the tests inside,
    an integer 0 and signed indices ran one value at a time: add and relu of 2 MB took 0.45 ms, now
    0.17, NumPy's add alone 0.16)."""
    if add and relu:
        for i in range(first, last):
            j = np.uintp(i)
            value = y[j] + residual[j]
            y[j] = zero if value < zero else value
    elif add:
        for i in range(first, last):
            y[np.uintp(i)] += residual[np.uintp(i)]
    elif relu:
        for i in range(first, last):
            value = y[np.uintp(i)]
            y[np.uintp(i)] = zero if value < zero else value


KERNELS = {"epilogue": epilogue, "add_forward": add_forward, "elementwise": elementwise, "sum_to_shape": sum_to_shape,
           "concat_forward": concat_forward, "concat_backward": concat_backward}
