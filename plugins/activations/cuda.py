"""CUDA kernels of the activations: element-wise, prelu, and softmax / log-softmax over an axis.

Element-wise kernels take flat (1-D) views; those of :mod:`.scalar` are one generic kernel pair
around each scalar function. Softmax takes (outer, K, inner) views of the batch around its axis of
K values, one thread per (outer, inner) pair looping over the K values. The public functions
allocate and return the outputs.
"""

from __future__ import annotations

import math

from numba import cuda, float64

from cnnrun.engine.cuda import MAX_BLOCK_SIZE, block_size, block_sum, blocks_for, flat, grid, is_device_array

from .scalar import kernel_table


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
def _softmax_forward(x, log, y):
    """Over axis 1 of (outer, K, inner): y = exp(x - max) / sum(exp(x - max)), or with ``log``
    y = x - max - log(sum(exp(x - max)))."""
    outer, size, inner = x.shape
    for i in range(cuda.grid(1), outer * inner, cuda.gridsize(1)):
        n, s = i // inner, i % inner
        top = x[n, 0, s]
        for c in range(1, size):
            top = max(top, x[n, c, s])
        total = 0.0
        for c in range(size):
            total += math.exp(x[n, c, s] - top)
        for c in range(size):
            if log:
                y[n, c, s] = x[n, c, s] - top - math.log(total)
            else:
                y[n, c, s] = math.exp(x[n, c, s] - top) / total


@cuda.jit
def _softmax_backward(y, grad, log, dx):
    """dx = y * (dy - sum(dy * y)); with ``log`` (y = log p) dx = dy - exp(y) * sum(dy)."""
    outer, size, inner = y.shape
    for i in range(cuda.grid(1), outer * inner, cuda.gridsize(1)):
        n, s = i // inner, i % inner
        total = 0.0
        for c in range(size):
            total += grad[n, c, s] if log else grad[n, c, s] * y[n, c, s]
        for c in range(size):
            if log:
                dx[n, c, s] = grad[n, c, s] - math.exp(y[n, c, s]) * total
            else:
                dx[n, c, s] = y[n, c, s] * (grad[n, c, s] - total)


@cuda.jit
def _prelu_forward(x, weight, y):
    """x, y: (N, P, S); y = x where x > 0, else weight[p] * x."""
    _, size, inner = x.shape
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        n, p, s = i // (size * inner), i // inner % size, i % inner
        v = x[n, p, s]
        y[n, p, s] = v if v > 0 else v * weight[p]


@cuda.jit
def _prelu_backward(x, weight, grad, dx):
    _, size, inner = x.shape
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        n, p, s = i // (size * inner), i // inner % size, i % inner
        dx[n, p, s] = grad[n, p, s] if x[n, p, s] > 0 else grad[n, p, s] * weight[p]


@cuda.jit
def _prelu_weight_gradient(x, grad, grad_weight):
    """grad_weight[p] = sum over n, s of dy * x where x <= 0: one block per p at a time."""
    partial = cuda.shared.array(MAX_BLOCK_SIZE, float64)
    batch, size, inner = x.shape
    for p in range(cuda.blockIdx.x, size, cuda.gridDim.x):
        total = 0.0
        for j in range(cuda.threadIdx.x, batch * inner, cuda.blockDim.x):
            n, s = j // inner, j % inner
            if x[n, p, s] <= 0:
                total += grad[n, p, s] * x[n, p, s]
        total = block_sum(partial, total)
        if cuda.threadIdx.x == 0:
            grad_weight[p] = total


def _forward_kernel(function):
    device_function = cuda.jit(device=True)(function)

    @cuda.jit
    def kernel(x, a, b, y):
        for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
            y[i] = device_function(x[i], a, b)

    return kernel


def _backward_kernel(derivative):
    device_function = cuda.jit(device=True)(derivative)

    @cuda.jit
    def kernel(x, grad, a, b, dx):
        for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
            dx[i] = grad[i] * device_function(x[i], a, b)

    return kernel


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


def _around(array, axis):
    """A C-contiguous device array as (outer, K, inner) around ``axis`` of K values."""
    shape = array.shape
    return array.reshape(math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1:]))


def _softmax(x, axis, log):
    y = cuda.device_array(x.shape, x.dtype)
    if y.size:
        view = _around(x, axis)
        _softmax_forward[grid(view.shape[0] * view.shape[2])](view, log, _around(y, axis))
    return y


def _softmax_gradient(y, grad, axis, log):
    dx = cuda.device_array(grad.shape, grad.dtype)
    if dx.size:
        view = _around(y, axis)
        _softmax_backward[grid(view.shape[0] * view.shape[2])](view, _around(grad, axis), log, _around(dx, axis))
    return dx


def softmax_forward(x, axis):
    return _softmax(x, axis, False)


def softmax_backward(y, grad, axis):
    return _softmax_gradient(y, grad, axis, False)


def log_softmax_forward(x, axis):
    return _softmax(x, axis, True)


def log_softmax_backward(y, grad, axis):
    return _softmax_gradient(y, grad, axis, True)


def _per_parameter(array, weight):
    """``array`` (N, ...) as (N, P, S): P = weight.size, one slope or one per channel."""
    return array.reshape(array.shape[0], weight.size, array.size // (array.shape[0] * weight.size))


def prelu_forward(x, weight):
    y = cuda.device_array(x.shape, x.dtype)
    if y.size:
        _prelu_forward[grid(y.size)](_per_parameter(x, weight), weight, _per_parameter(y, weight))
    return y


def prelu_backward(x, weight, grad, grad_weight):
    """Returns dx; writes grad_weight."""
    dx = cuda.device_array(grad.shape, grad.dtype)
    if dx.size:
        xs = _per_parameter(x, weight)
        _prelu_backward[grid(dx.size)](xs, weight, _per_parameter(grad, weight), _per_parameter(dx, weight))
        _prelu_weight_gradient[blocks_for(weight.size), block_size()](xs, _per_parameter(grad, weight), grad_weight)
    return dx


def _elementwise_kernels(op, function, derivative):
    """``OP_forward(x, a, b)`` = f(x) and ``OP_backward(x, grad, a, b)`` = grad * f'(x)."""
    forward_kernel, backward_kernel = _forward_kernel(function), _backward_kernel(derivative)

    def forward(x, a, b):
        t = x.dtype.type
        return _elementwise(forward_kernel, x, x, t(a), t(b))

    def backward(x, grad, a, b):
        t = grad.dtype.type
        return _elementwise(backward_kernel, grad, x, grad, t(a), t(b))

    forward.__name__, backward.__name__ = f"{op}_forward", f"{op}_backward"
    return forward, backward


KERNELS = kernel_table(globals(), _elementwise_kernels)
