"""CUDA kernels of local response normalization: one thread per element of an (N, C, S) view
(the same formulas as :mod:`.cpu_lrn`)."""

from __future__ import annotations

import numpy as np
from numba import cuda

from cnnrun.engine.cuda import grid


@cuda.jit
def _lrn(x, size, alpha, beta, k, y, denominator):
    """denominator = k + alpha / size * (sum of x^2 over the channel window); y = x * denominator^-beta."""
    batch, channels, positions = x.shape
    before, after = size // 2, (size - 1) // 2
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        n, c, s = i // (channels * positions), (i // positions) % channels, i % positions
        total = 0.0
        for j in range(max(0, c - before), min(channels, c + after + 1)):
            total += x[n, j, s] * x[n, j, s]
        d = k + alpha / size * total
        denominator[n, c, s] = d
        y[n, c, s] = x[n, c, s] * d ** -beta


@cuda.jit
def _lrn_gradient(grad, x, y, denominator, size, alpha, beta, dx):
    """dx[j] = dy[j] * d[j]^-beta - 2 alpha beta / size * x[j] * sum over windows holding j of dy * y / d."""
    batch, channels, positions = x.shape
    before, after = size // 2, (size - 1) // 2
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        n, j, s = i // (channels * positions), (i // positions) % channels, i % positions
        total = 0.0
        for c in range(max(0, j - after), min(channels, j + before + 1)):
            total += grad[n, c, s] * y[n, c, s] / denominator[n, c, s]
        dx[n, j, s] = grad[n, j, s] * denominator[n, j, s] ** -beta - 2 * alpha * beta / size * x[n, j, s] * total


def lrn_forward(ctx, x, size, alpha, beta, k):
    """``(y, denominator)`` for an (N, C, S) device array (denominator float64)."""
    y = cuda.device_array(x.shape, x.dtype)
    denominator = cuda.device_array(x.shape, np.float64)
    _lrn[grid(x.size)](x, size, alpha, beta, k, y, denominator)
    return y, denominator


def lrn_backward(ctx, grad, x, y, denominator, size, alpha, beta):
    """The input gradient of :func:`lrn_forward`."""
    dx = cuda.device_array(grad.shape, grad.dtype)
    _lrn_gradient[grid(grad.size)](grad, x, y, denominator, size, alpha, beta, dx)
    return dx


KERNELS = {"lrn_forward": lrn_forward, "lrn_backward": lrn_backward}
