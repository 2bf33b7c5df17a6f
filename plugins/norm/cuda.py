"""CUDA kernels of normalization: batchnorm's here, the group-wise ones' in :mod:`.cuda_groups` and
lrn's in :mod:`.cuda_lrn`, all in this module's ``KERNELS``.

Batchnorm views its input as (N, C, S) and reduces per channel on the device in two launches, with
no block-wide synchronization: first ``lanes`` threads per channel each sum every lanes-th of the
channel's n = N * S values (in float64) into a (C, lanes) scratch array, then one thread per channel
adds its lanes and finishes the statistic. Element-wise kernels then normalize or form the gradient.
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda

from cnnrun.engine.cuda import channel_view, grid

from . import cuda_groups, cuda_lrn

MAX_LANES = 1024  # partial sums per channel


@cuda.jit
def _channel_partials(x, center, squared, partial):
    """partial[c, l] = sum over the channel's values number l, l + lanes, ... of x, or of
    (x - center[c])^2 when ``squared``."""
    batch, channels, spatial = x.shape
    n, lanes = batch * spatial, partial.shape[1]
    for job in range(cuda.grid(1), channels * lanes, cuda.gridsize(1)):
        c, lane = job // lanes, job % lanes
        total = 0.0
        for i in range(lane, n, lanes):
            v = x[i // spatial, c, i % spatial]
            if squared:
                d = v - center[c]
                total += d * d
            else:
                total += v
        partial[c, lane] = total


@cuda.jit
def _gradient_partials(grad, xhat, partial):
    """partial[0, c, l] and partial[1, c, l]: lane sums of dy * xhat and of dy."""
    batch, channels, spatial = grad.shape
    n, lanes = batch * spatial, partial.shape[2]
    for job in range(cuda.grid(1), channels * lanes, cuda.gridsize(1)):
        c, lane = job // lanes, job % lanes
        gamma = 0.0
        beta = 0.0
        for i in range(lane, n, lanes):
            g = grad[i // spatial, c, i % spatial]
            gamma += g * xhat[i // spatial, c, i % spatial]
            beta += g
        partial[0, c, lane] = gamma
        partial[1, c, lane] = beta


@cuda.jit(device=True)
def _lane_sum(partial, c):
    total = 0.0
    for lane in range(partial.shape[1]):
        total += partial[c, lane]
    return total


@cuda.jit
def _finish_mean(partial, n, mean):
    for c in range(cuda.grid(1), mean.size, cuda.gridsize(1)):
        mean[c] = _lane_sum(partial, c) / n


@cuda.jit
def _finish_variance(partial, n, eps, momentum, mean, track, running_mean, running_var, inv_std):
    """var = (lane sums of (x - mean)^2) / n; inv_std = 1 / sqrt(var + eps); when ``track``, running =
    (1 - momentum) * running + momentum * stat (var unbiased: * n / (n - 1))."""
    for c in range(cuda.grid(1), mean.size, cuda.gridsize(1)):
        var = _lane_sum(partial, c) / n
        inv_std[c] = 1 / math.sqrt(var + eps)
        if track:
            running_mean[c] = (1 - momentum) * running_mean[c] + momentum * mean[c]
            running_var[c] = (1 - momentum) * running_var[c] + momentum * var * n / (n - 1)


@cuda.jit
def _running_statistics(eps, running_mean, running_var, mean, inv_std):
    """mean = running_mean, inv_std = 1 / sqrt(running_var + eps) (evaluation)."""
    for c in range(cuda.grid(1), mean.size, cuda.gridsize(1)):
        mean[c] = running_mean[c]
        inv_std[c] = 1 / math.sqrt(running_var[c] + eps)


@cuda.jit
def _finish_gradients(partial, affine, grad_weight, grad_bias, dgamma, dbeta):
    """dgamma = sum(dy * xhat), dbeta = sum(dy): in float64 and (``affine``) in the parameters' dtype."""
    for c in range(cuda.grid(1), dgamma.size, cuda.gridsize(1)):
        gamma = _lane_sum(partial[0], c)
        beta = _lane_sum(partial[1], c)
        dgamma[c] = gamma
        dbeta[c] = beta
        if affine:
            grad_weight[c] = gamma
            grad_bias[c] = beta


@cuda.jit
def _normalize(x, mean, inv_std, affine, weight, bias, xhat, y):
    """xhat = (x - mean) * inv_std; y = weight * xhat + bias (per channel; y = xhat unless ``affine``)."""
    batch, channels, spatial = x.shape
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        n, c, s = i // (channels * spatial), (i // spatial) % channels, i % spatial
        h = (x[n, c, s] - mean[c]) * inv_std[c]
        xhat[n, c, s] = h
        y[n, c, s] = h * weight[c] + bias[c] if affine else h


@cuda.jit
def _input_gradient(grad, xhat, affine, weight, inv_std, dgamma, dbeta, training, dx):
    """scale = weight * inv_std (inv_std unless ``affine``); training: dx = scale * (dy - dbeta / n -
    xhat * dgamma / n); evaluation: dx = scale * dy."""
    batch, channels, spatial = grad.shape
    count = batch * spatial
    for i in range(cuda.grid(1), grad.size, cuda.gridsize(1)):
        n, c, s = i // (channels * spatial), (i // spatial) % channels, i % spatial
        scale = weight[c] * inv_std[c] if affine else inv_std[c]
        if training:
            dx[n, c, s] = scale * (grad[n, c, s] - dbeta[c] / count - xhat[n, c, s] * (dgamma[c] / count))
        else:
            dx[n, c, s] = scale * grad[n, c, s]


def lanes(x) -> int:
    """Partial sums per channel for an (N, C, ...) array: one per value, at most MAX_LANES."""
    return min(x.size // x.shape[1], MAX_LANES)


def batchnorm_forward(ctx, x, weight, bias, running_mean, running_var, eps, momentum, training):
    """``(y, xhat, inv_std)``: normalize ``x`` with the batch statistics (``training``, updating the
    running ones unless None) or the running statistics; ``inv_std`` float64 (C,); ``weight`` and
    ``bias`` None: y = xhat. (Absent arrays are passed to the kernels as ``mean``, never read.)"""
    channels = x.shape[1]
    xhat = ctx.workspace("xhat", x.shape, x.dtype)
    mean = ctx.workspace("mean", (channels,), np.float64)
    inv_std = ctx.workspace("inv_std", (channels,), np.float64)
    partial = ctx.workspace("partial", (channels, lanes(x)), np.float64)
    y = cuda.device_array(x.shape, x.dtype)
    x3 = channel_view(x)
    n = x3.shape[0] * x3.shape[2]
    track, affine = running_mean is not None, weight is not None
    running_mean, running_var = (running_mean, running_var) if track else (mean, mean)
    weight, bias = (weight, bias) if affine else (mean, mean)
    if training:
        jobs = grid(partial.size)
        _channel_partials[jobs](x3, mean, False, partial)
        _finish_mean[grid(channels)](partial, n, mean)
        _channel_partials[jobs](x3, mean, True, partial)
        _finish_variance[grid(channels)](partial, n, eps, momentum, mean, track, running_mean, running_var,
                                          inv_std)
    else:
        _running_statistics[grid(channels)](eps, running_mean, running_var, mean, inv_std)
    _normalize[grid(x.size)](x3, mean, inv_std, affine, weight, bias, channel_view(xhat), channel_view(y))
    return y, xhat, inv_std


def batchnorm_backward(ctx, grad, xhat, inv_std, weight, training, grad_weight, grad_bias):
    """Parameter gradients into ``grad_weight`` / ``grad_bias`` (none when ``weight`` is None: gamma
    = 1; into scratch arrays when they are None: a frozen layer); returns the input gradient."""
    channels = grad.shape[1]
    dgamma = ctx.workspace("dgamma", (channels,), np.float64)
    dbeta = ctx.workspace("dbeta", (channels,), np.float64)
    partial = ctx.workspace("grad_partial", (2, channels, lanes(grad)), np.float64)
    dx = cuda.device_array(grad.shape, grad.dtype)
    g3, xhat3 = channel_view(grad), channel_view(xhat)
    affine = weight is not None
    if affine and grad_weight is None:
        grad_weight, grad_bias = (ctx.workspace(f"frozen_{k}", weight.shape, weight.dtype) for k in ("weight", "bias"))
    weight, grad_weight, grad_bias = (weight, grad_weight, grad_bias) if affine else (dgamma, dgamma, dbeta)
    _gradient_partials[grid(partial.shape[1] * partial.shape[2])](g3, xhat3, partial)
    _finish_gradients[grid(g3.shape[1])](partial, affine, grad_weight, grad_bias, dgamma, dbeta)
    _input_gradient[grid(grad.size)](g3, xhat3, affine, weight, inv_std, dgamma, dbeta, training,
                                     channel_view(dx))
    return dx


KERNELS = {"batchnorm_forward": batchnorm_forward, "batchnorm_backward": batchnorm_backward,
           **cuda_groups.KERNELS, **cuda_lrn.KERNELS}
