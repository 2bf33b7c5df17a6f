"""The CUDA kernels of the swish layer (numba-cuda): one thread per value, grid-stride loops.

cnnrun imports this module only when a network moves to "cuda", so importing the plugin never
imports numba.cuda. The launch size follows cnnrun's settings (``cnnrun.engine.cuda.grid``).
"""

import math

from numba import cuda

from cnnrun.engine.cuda import flat, grid


@cuda.jit
def _forward(x, beta, y, s):
    """s = sigmoid(beta * x), y = x * s."""
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        z = beta * x[i]
        if z >= 0:
            sig = 1 / (1 + math.exp(-z))
        else:  # exp(z) cannot overflow here
            e = math.exp(z)
            sig = e / (1 + e)
        s[i] = sig
        y[i] = x[i] * sig


@cuda.jit
def _backward(x, s, grad, beta, dx):
    """dx = dy * (s + beta * x * s * (1 - s))."""
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        v = s[i]
        dx[i] = grad[i] * (v + beta * x[i] * v * (1 - v))


def swish_forward(x, beta):
    """``(y, s)`` as device arrays shaped like ``x``."""
    y = cuda.device_array(x.shape, x.dtype)
    s = cuda.device_array(x.shape, x.dtype)
    if x.size:
        _forward[grid(x.size)](flat(x), x.dtype.type(beta), flat(y), flat(s))
    return y, s


def swish_backward(x, s, grad, beta):
    dx = cuda.device_array(x.shape, x.dtype)
    if x.size:
        _backward[grid(x.size)](flat(x), flat(s), flat(grad), x.dtype.type(beta), flat(dx))
    return dx


KERNELS = {"swish_forward": swish_forward, "swish_backward": swish_backward}
