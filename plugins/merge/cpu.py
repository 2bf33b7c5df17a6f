"""CPU kernels of the merge layers (NumPy): element-wise sum and channel concatenation."""

from __future__ import annotations

import numpy as np


def add_forward(inputs):
    """x_1 + x_2 + ... (same shapes), as a new array."""
    y = inputs[0] + inputs[1]
    for x in inputs[2:]:
        y += x
    return y


def concat_forward(inputs):
    """The inputs stacked along axis 1."""
    return np.concatenate(inputs, axis=1)


def concat_backward(grad, channels):
    """``grad`` split along axis 1 into contiguous arrays of ``channels[i]`` channels each."""
    return tuple(np.ascontiguousarray(g) for g in np.split(grad, np.cumsum(channels[:-1]), axis=1))


KERNELS = {"add_forward": add_forward, "concat_forward": concat_forward, "concat_backward": concat_backward}
