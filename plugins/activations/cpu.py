"""CPU kernels of the activations (NumPy: memory-bound, so no Numba loops of their own).

Each takes its inputs and returns a fresh output, as the CUDA kernels in :mod:`.cuda` do.
"""

from __future__ import annotations

import numpy as np


def relu_forward(x):
    return np.maximum(x, 0)


def relu_backward(x, grad):
    return grad * (x > 0)


def leaky_relu_forward(x, slope):
    return np.where(x > 0, x, x * x.dtype.type(slope))


def leaky_relu_backward(x, grad, slope):
    return np.where(x > 0, grad, grad * grad.dtype.type(slope))


def sigmoid_forward(x):
    return np.exp(-np.logaddexp(x.dtype.type(0), -x))  # no overflow for x << 0


def sigmoid_backward(y, grad):
    return grad * y * (1 - y)


def tanh_forward(x):
    return np.tanh(x)


def tanh_backward(y, grad):
    return grad * (1 - y ** 2)


def softmax_forward(x):
    """Softmax over axis 1."""
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def softmax_backward(y, grad):
    return y * (grad - np.sum(grad * y, axis=1, keepdims=True))


KERNELS = {f.__name__: f for f in (relu_forward, relu_backward, leaky_relu_forward, leaky_relu_backward,
                                   sigmoid_forward, sigmoid_backward, tanh_forward, tanh_backward,
                                   softmax_forward, softmax_backward)}
