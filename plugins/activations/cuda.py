"""CUDA kernels of the activations: element-wise, and softmax over the channel axis.

Element-wise kernels take flat (1-D) views; softmax takes (N, C, S) views, one thread per (n, s)
pair looping over the C channels. The public functions allocate and return the outputs.
"""

from __future__ import annotations

import math

from numba import cuda

from cnnrun.engine.cuda import channel_view, flat, grid, is_device_array


@cuda.jit
def _relu_forward(x, y):
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        v = x[i]
        y[i] = 0 if v <= 0 else v  # NaN stays NaN, as np.maximum(x, 0)


@cuda.jit
def _relu_backward(x, grad, dx):
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        dx[i] = grad[i] if x[i] > 0 else grad[i] * 0


@cuda.jit
def _leaky_relu_forward(x, slope, y):
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        v = x[i]
        y[i] = v if v > 0 else v * slope


@cuda.jit
def _leaky_relu_backward(x, grad, slope, dx):
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        dx[i] = grad[i] if x[i] > 0 else grad[i] * slope


@cuda.jit
def _sigmoid_forward(x, y):
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        v = x[i]
        if v >= 0:
            y[i] = 1 / (1 + math.exp(-v))
        else:  # exp(v) cannot overflow here
            e = math.exp(v)
            y[i] = e / (1 + e)


@cuda.jit
def _sigmoid_backward(y, grad, dx):
    for i in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        dx[i] = grad[i] * y[i] * (1 - y[i])


@cuda.jit
def _tanh_forward(x, y):
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        y[i] = math.tanh(x[i])


@cuda.jit
def _tanh_backward(y, grad, dx):
    for i in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        dx[i] = grad[i] * (1 - y[i] * y[i])


@cuda.jit
def _softmax_forward(x, y):
    """y[n, :, s] = exp(x[n, :, s] - max) / sum(exp(x[n, :, s] - max))."""
    batch, channels, spatial = x.shape
    for i in range(cuda.grid(1), batch * spatial, cuda.gridsize(1)):
        n, s = i // spatial, i % spatial
        top = x[n, 0, s]
        for c in range(1, channels):
            top = max(top, x[n, c, s])
        total = 0.0
        for c in range(channels):
            e = math.exp(x[n, c, s] - top)
            y[n, c, s] = e
            total += e
        for c in range(channels):
            y[n, c, s] /= total


@cuda.jit
def _softmax_backward(y, grad, dx):
    """dx = y * (dy - sum_c(dy * y))."""
    batch, channels, spatial = y.shape
    for i in range(cuda.grid(1), batch * spatial, cuda.gridsize(1)):
        n, s = i // spatial, i % spatial
        dot = 0.0
        for c in range(channels):
            dot += grad[n, c, s] * y[n, c, s]
        for c in range(channels):
            dx[n, c, s] = y[n, c, s] * (grad[n, c, s] - dot)


def _elementwise(kernel, shape_of, *arrays):
    """Launch an element-wise kernel over flat views of the device arrays (scalars pass through),
    writing a fresh output shaped like ``shape_of``; returns it."""
    out = cuda.device_array(shape_of.shape, shape_of.dtype)
    if out.size:
        kernel[grid(out.size)](*(flat(a) if is_device_array(a) else a for a in arrays), flat(out))
    return out


def relu_forward(x):
    return _elementwise(_relu_forward, x, x)


def relu_backward(x, grad):
    return _elementwise(_relu_backward, grad, x, grad)


def leaky_relu_forward(x, slope):
    return _elementwise(_leaky_relu_forward, x, x, x.dtype.type(slope))


def leaky_relu_backward(x, grad, slope):
    return _elementwise(_leaky_relu_backward, grad, x, grad, grad.dtype.type(slope))


def sigmoid_forward(x):
    return _elementwise(_sigmoid_forward, x, x)


def sigmoid_backward(y, grad):
    return _elementwise(_sigmoid_backward, grad, y, grad)


def tanh_forward(x):
    return _elementwise(_tanh_forward, x, x)


def tanh_backward(y, grad):
    return _elementwise(_tanh_backward, grad, y, grad)


def softmax_forward(x):
    y = cuda.device_array(x.shape, x.dtype)
    view = channel_view(x)
    _softmax_forward[grid(view.shape[0] * view.shape[2])](view, channel_view(y))
    return y


def softmax_backward(y, grad):
    dx = cuda.device_array(grad.shape, grad.dtype)
    view = channel_view(y)
    _softmax_backward[grid(view.shape[0] * view.shape[2])](view, channel_view(grad), channel_view(dx))
    return dx


KERNELS = {f.__name__: f for f in (relu_forward, relu_backward, leaky_relu_forward, leaky_relu_backward,
                                   sigmoid_forward, sigmoid_backward, tanh_forward, tanh_backward,
                                   softmax_forward, softmax_backward)}
