"""CPU kernels of slice and permute (NumPy copies)."""

from __future__ import annotations

import numpy as np


def slice_forward(x, start, step, count):
    """Channels start, start + step, ... (``count`` of them) of x, as a new contiguous array."""
    return np.ascontiguousarray(x[:, start:start + (count - 1) * step + 1:step])


def slice_backward(grad, channels, start, step):
    """An array of ``channels`` channels, zero but for ``grad`` in channels start, start + step, ..."""
    dx = np.zeros((grad.shape[0], channels, *grad.shape[2:]), grad.dtype)
    dx[:, start:start + (grad.shape[1] - 1) * step + 1:step] = grad
    return dx


def permute(x, dims):
    """x with its axes in the order ``dims``, as a new contiguous array."""
    return np.ascontiguousarray(x.transpose(dims))


KERNELS = {"slice_forward": slice_forward, "slice_backward": slice_backward, "permute": permute}
