"""CUDA kernels of the linear layer: the shared tiled product (:mod:`cnnrun.plugins.products.cuda`)
for its three products, y = x W^T + b, dx = dy W and dW = dy^T x, and the bias's add and gradient."""

from __future__ import annotations

from numba import cuda

from cnnrun.engine.cuda import grid
from cnnrun.plugins.products.cuda import matmul


@cuda.jit
def _add_bias(y, bias):
    """y[n, o] += bias[o]."""
    cols = y.shape[1]
    for i in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        n, o = i // cols, i % cols
        y[n, o] += bias[o]


@cuda.jit
def _column_sums(a, out):
    """out[j] = sum_i a[i, j], accumulated in float64."""
    rows, cols = a.shape
    for j in range(cuda.grid(1), cols, cuda.gridsize(1)):
        total = 0.0
        for i in range(rows):
            total += a[i, j]
        out[j] = total


def _as_group(a):
    """A 2-D device array as one group ``(1, R, C)`` (a view)."""
    return a.reshape(1, a.shape[0], a.shape[1])


def linear_forward(ctx, x, weight, bias):
    """y = x W^T + b (``bias`` may be None)."""
    y = cuda.device_array((x.shape[0], weight.shape[0]), x.dtype)
    matmul(ctx, "linear.forward", _as_group(x), _as_group(weight), _as_group(y), trans_b=True)
    if bias is not None and y.size:
        _add_bias[grid(y.size)](y, bias)
    return y


def linear_backward(ctx, x, grad, weight, grad_weight, grad_bias):
    """dW = dy^T x, db = sum_n dy (each when given, not None); returns dx = dy W."""
    if grad_weight is not None:
        matmul(ctx, "linear.weight", _as_group(grad), _as_group(x), _as_group(grad_weight), trans_a=True)
    if grad_bias is not None:
        _column_sums[grid(grad.shape[1])](grad, grad_bias)
    dx = cuda.device_array(x.shape, x.dtype)
    matmul(ctx, "linear.input", _as_group(grad), _as_group(weight), _as_group(dx))
    return dx


KERNELS = {"linear_forward": linear_forward, "linear_backward": linear_backward}
