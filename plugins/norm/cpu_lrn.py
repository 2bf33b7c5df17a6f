"""CPU kernels of local response normalization: every (sample, position) column of an (N, C, S)
view in parallel, each iteration writing its own column only."""

from __future__ import annotations

import numpy as np
from numba import prange

from cnnrun.engine.jit import cpu_kernel, launch


@cpu_kernel
def _lrn(x, size, alpha, beta, k, y, denominator):
    """denominator = k + alpha / size * (sum of x^2 over channels c - size // 2 .. c + (size - 1) // 2);
    y = x * denominator^-beta."""
    batch, channels, positions = x.shape
    before, after = size // 2, (size - 1) // 2
    for job in prange(batch * positions):
        n, s = job // positions, job % positions
        for c in range(channels):
            total = 0.0
            for j in range(max(0, c - before), min(channels, c + after + 1)):
                total += x[n, j, s] * x[n, j, s]
            d = k + alpha / size * total
            denominator[n, c, s] = d
            y[n, c, s] = x[n, c, s] * d ** -beta


@cpu_kernel
def _lrn_gradient(grad, x, y, denominator, size, alpha, beta, dx):
    """dx[j] = dy[j] * d[j]^-beta - 2 alpha beta / size * x[j] * (sum over the channels c whose window
    holds j of dy[c] * y[c] / d[c])."""
    batch, channels, positions = x.shape
    before, after = size // 2, (size - 1) // 2
    for job in prange(batch * positions):
        n, s = job // positions, job % positions
        for j in range(channels):
            total = 0.0
            for c in range(max(0, j - after), min(channels, j + before + 1)):
                total += grad[n, c, s] * y[n, c, s] / denominator[n, c, s]
            dx[n, j, s] = (grad[n, j, s] * denominator[n, j, s] ** -beta
                           - 2 * alpha * beta / size * x[n, j, s] * total)


def lrn_forward(ctx, x, size, alpha, beta, k):
    """``(y, denominator)`` for an (N, C, S) array (denominator float64)."""
    y = np.empty_like(x)
    denominator = np.empty(x.shape)
    launch(_lrn, (size + 2) * x.size, x, size, alpha, beta, k, y, denominator)
    return y, denominator


def lrn_backward(ctx, grad, x, y, denominator, size, alpha, beta):
    """The input gradient of :func:`lrn_forward`."""
    dx = np.empty_like(grad)
    launch(_lrn_gradient, (size + 2) * x.size, grad, x, y, denominator, size, alpha, beta, dx)
    return dx


KERNELS = {"lrn_forward": lrn_forward, "lrn_backward": lrn_backward}
