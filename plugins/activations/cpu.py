"""CPU kernels of the activations: NumPy, Numba kernels for relu (one pass each way), and Numba ufuncs of the scalar functions of :mod:`.scalar`.

Each takes its inputs and returns a fresh output, as the CUDA kernels in :mod:`.cuda` do. The ufuncs
compile on first use (``cache=True``) and compute in float64; the results are cast to the input's dtype.
"""

from __future__ import annotations

import numpy as np
from numba import prange, vectorize

from cnnrun.engine.jit import cpu_kernel, launch

from .scalar import kernel_table


def relu_forward(x):
    """max(x, 0), one pass (NaN stays NaN)."""
    x = np.ascontiguousarray(x)
    y = np.empty_like(x)
    launch(_relu, x.size, x.reshape(-1), y.reshape(-1))
    return y


def relu_backward(x, grad):
    """grad * (x > 0), one pass."""
    x, grad = np.ascontiguousarray(x), np.ascontiguousarray(grad)
    dx = np.empty_like(grad)
    launch(_relu_gradient, 2 * x.size, x.reshape(-1), grad.reshape(-1), dx.reshape(-1))
    return dx


@cpu_kernel
def _relu(x, y):
    for t in prange(x.size):
        v = x[t]
        y[t] = 0 if v < 0 else v


@cpu_kernel
def _relu_gradient(x, grad, dx):
    for t in prange(x.size):
        g = grad[t]
        dx[t] = g if x[t] > 0 else g * 0  # 0, or NaN for a non-finite gradient, as grad * False


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


def softmax_forward(x, axis):
    """Softmax over ``axis`` of the batch."""
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def softmax_backward(y, grad, axis):
    return y * (grad - np.sum(grad * y, axis=axis, keepdims=True))


def log_softmax_forward(x, axis):
    """x - max - log(sum(exp(x - max))) over ``axis``."""
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def log_softmax_backward(y, grad, axis):
    return grad - np.exp(y) * grad.sum(axis=axis, keepdims=True)


def _per_parameter(x, weight):
    """(x as (N, P, S), weight as (1, P, 1)): P = 1 (one slope) or the channel count."""
    return x.reshape(x.shape[0], weight.size, -1), weight.reshape(1, -1, 1)


def prelu_forward(x, weight):
    """y = x where x > 0, else weight[c] * x."""
    xs, w = _per_parameter(x, weight)
    return np.where(xs > 0, xs, w * xs).reshape(x.shape)


def prelu_backward(x, weight, grad, grad_weight):
    """dx = dy where x > 0, else weight[c] * dy; grad_weight[c] = sum of dy * x where x <= 0."""
    xs, w = _per_parameter(x, weight)
    gs = grad.reshape(xs.shape)
    negative = xs <= 0
    grad_weight[...] = np.sum(np.where(negative, gs * xs, 0), axis=(0, 2))
    return np.where(negative, w * gs, gs).reshape(x.shape)


def _elementwise_kernels(op, function, derivative):
    """``OP_forward(x, a, b)`` = f(x) and ``OP_backward(x, grad, a, b)`` = grad * f'(x)."""
    f, df = vectorize(cache=True)(function), vectorize(cache=True)(derivative)

    def forward(x, a, b):
        return f(x, a, b).astype(x.dtype, copy=False)

    def backward(x, grad, a, b):
        return grad * df(x, a, b).astype(grad.dtype, copy=False)

    forward.__name__, backward.__name__ = f"{op}_forward", f"{op}_backward"
    return forward, backward


KERNELS = kernel_table(globals(), _elementwise_kernels)
