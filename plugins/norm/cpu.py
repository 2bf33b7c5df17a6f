"""CPU kernels of normalization: batchnorm's here (Numba, two passes over memory each way), the group-wise ones' in
:mod:`.cpu_groups` and lrn's in :mod:`.cpu_lrn`, all in this module's ``KERNELS``."""

from __future__ import annotations

import numpy as np
from numba import prange

from cnnrun.engine.jit import cpu_kernel, launch

from . import cpu_groups, cpu_lrn


def batchnorm_forward(ctx, x, weight, bias, running_mean, running_var, eps, momentum, training, reduce=None):
    """``(y, xhat, inv_std)``: y = weight * xhat + bias, xhat = (x - mean) * inv_std with the batch
    statistics (``training``: the running ones, unless None, move by ``momentum``) or the running
    ones; ``inv_std`` float64 (C,). ``weight`` and ``bias`` None: y = xhat. ``reduce``: sums a
    float64 array over the ranks (synchronized batchnorm: the statistics of the global batch,
    combined from each rank's count, mean and variance).

    Two passes over x: the per-channel sums (float64, shifted by the channel's first value so that
    a large mean does not cancel the variance), then y and xhat together."""
    x = np.ascontiguousarray(x)
    planes = x.reshape(x.shape[0], x.shape[1], -1)
    n = x.size // x.shape[1]
    if training:
        mean, var = np.empty(x.shape[1]), np.empty(x.shape[1])
        launch(_channel_statistics, x.size, planes, mean, var)
        if reduce is not None:
            mean, var, n = _global_statistics(mean, var, n, reduce)
        if running_mean is not None:
            running_mean[...] = (1 - momentum) * running_mean + momentum * mean
            running_var[...] = (1 - momentum) * running_var + momentum * var * (n / (n - 1))
    else:
        mean, var = running_mean.astype(np.float64), running_var.astype(np.float64)
    inv_std = 1 / np.sqrt(var + eps)
    gamma = np.ones(x.shape[1]) if weight is None else weight
    beta = np.zeros(x.shape[1]) if bias is None else bias
    y = np.empty_like(x)
    xhat = ctx.workspace("xhat", x.shape, x.dtype)
    launch(_normalize, 3 * x.size, planes, *(v.astype(x.dtype) for v in (mean, inv_std, gamma, beta)),
           y.reshape(planes.shape), xhat.reshape(planes.shape))
    return y, xhat, inv_std


def batchnorm_backward(ctx, grad, xhat, inv_std, weight, training, grad_weight, grad_bias, reduce=None):
    """dgamma = sum(dy * xhat) and dbeta = sum(dy) into ``grad_weight``/``grad_bias`` (unless
    they are None: gamma = 1, or a frozen layer); returns dx = scale * (dy - xhat * dgamma/n -
    dbeta/n), scale = gamma * inv_std (eval: dx = scale * dy). Two passes: the sums, then dx.
    ``reduce``: dx from the sums over the ranks (synchronized batchnorm; the parameter gradients
    stay this rank's, summed with the others')."""
    grad = np.ascontiguousarray(grad, xhat.dtype)
    planes = grad.reshape(grad.shape[0], grad.shape[1], -1)
    n = grad.size // grad.shape[1]
    dgamma, dbeta = np.empty(grad.shape[1]), np.empty(grad.shape[1])
    launch(_gradient_sums, 2 * grad.size, planes, xhat.reshape(planes.shape), dgamma, dbeta)
    if grad_weight is not None:
        grad_weight[...] = dgamma
        grad_bias[...] = dbeta
    if training and reduce is not None:
        channels = len(dgamma)
        total = reduce(np.concatenate([dgamma, dbeta, [n]]))
        dgamma, dbeta, n = total[:channels], total[channels:-1], total[-1]
    scale = inv_std if weight is None else weight * inv_std
    if training:
        slope, offset = dgamma / n, dbeta / n
    else:
        slope, offset = np.zeros_like(dgamma), np.zeros_like(dbeta)
    dx = np.empty_like(grad)
    launch(_input_gradient, 3 * grad.size, planes, xhat.reshape(planes.shape), scale.astype(grad.dtype),
           slope.astype(grad.dtype), offset.astype(grad.dtype), dx.reshape(planes.shape))
    return dx


def _global_statistics(mean, var, n, reduce):
    """``(mean, var, count)`` over all ranks from each rank's ``mean``, biased ``var`` and count
    ``n``: the global mean first, then sum n_r (var_r + (mean_r - mean)^2) / N (no cancellation)."""
    total = reduce(np.append(mean * n, n))
    count = total[-1]
    global_mean = total[:-1] / count
    spread = reduce(n * (var + np.square(mean - global_mean)))
    return global_mean, spread / count, count


@cpu_kernel
def _channel_statistics(x, mean, var):
    """mean[c], var[c] (biased) of x (N, C, L) over N and L, from float64 sums of x - x[0, c, 0]."""
    samples, channels, length = x.shape
    count = samples * length
    for c in prange(channels):
        pivot = np.float64(x[0, c, 0])
        total = squares = 0.0
        for n in range(samples):
            row = x[n, c]
            for t in range(length):
                d = np.float64(row[t]) - pivot
                total += d
                squares += d * d
        average = total / count
        mean[c] = pivot + average
        spread = squares / count - average * average
        var[c] = 0.0 if spread < 0 else spread  # rounding; NaN stays NaN


@cpu_kernel
def _normalize(x, mean, inv_std, gamma, beta, y, xhat):
    """xhat = (x - mean[c]) * inv_std[c] and y = xhat * gamma[c] + beta[c] over (N, C, L) planes."""
    samples, channels, length = x.shape
    for item in prange(samples * channels):
        n, c = item // channels, item % channels
        row, out, norm = x[n, c], y[n, c], xhat[n, c]
        m, s, a, b = mean[c], inv_std[c], gamma[c], beta[c]
        for t in range(length):
            h = (row[t] - m) * s
            norm[t] = h
            out[t] = h * a + b


@cpu_kernel
def _gradient_sums(grad, xhat, dgamma, dbeta):
    """dgamma[c] = sum(grad * xhat) and dbeta[c] = sum(grad) over N and L of (N, C, L), in float64."""
    samples, channels, length = grad.shape
    for c in prange(channels):
        products = total = 0.0
        for n in range(samples):
            g, h = grad[n, c], xhat[n, c]
            for t in range(length):
                products += np.float64(g[t]) * np.float64(h[t])
                total += np.float64(g[t])
        dgamma[c] = products
        dbeta[c] = total


@cpu_kernel
def _input_gradient(grad, xhat, scale, slope, offset, dx):
    """dx = scale[c] * (grad - xhat * slope[c] - offset[c]) over (N, C, L) planes."""
    samples, channels, length = grad.shape
    for item in prange(samples * channels):
        n, c = item // channels, item % channels
        g, h, out = grad[n, c], xhat[n, c], dx[n, c]
        a, b, k = scale[c], offset[c], slope[c]
        for t in range(length):
            out[t] = a * (g[t] - h[t] * k - b)


KERNELS = {"batchnorm_forward": batchnorm_forward, "batchnorm_backward": batchnorm_backward,
           **cpu_groups.KERNELS, **cpu_lrn.KERNELS}
