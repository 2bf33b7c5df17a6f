"""CPU kernels of the group-wise normalizations (layer_norm, group_norm, instance_norm).

Every one of them normalizes an (A, K, B) view of its input over the middle axis, separately for
each of the A * B groups (:func:`group_norm_forward`), then applies a per-index affine map on a
(P, Q, R) view (:func:`channel_affine_forward`). The Numba kernels loop over the groups in
parallel; each iteration writes only its own group, so no two threads add to one value.
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from cnnrun.engine.jit import cpu_kernel, launch


@cpu_kernel
def _group_statistics(x, eps, xhat, stats):
    """stats[:, a, b] = mean, biased var and 1 / sqrt(var + eps) of x[a, :, b]; xhat = (x - mean) * inv_std."""
    groups, size, inner = x.shape
    for job in prange(groups * inner):
        a, b = job // inner, job % inner
        total = 0.0
        for k in range(size):
            total += x[a, k, b]
        mean = total / size
        squares = 0.0
        for k in range(size):
            d = x[a, k, b] - mean
            squares += d * d
        var = squares / size
        inv_std = 1.0 / math.sqrt(var + eps)
        for k in range(size):
            xhat[a, k, b] = (x[a, k, b] - mean) * inv_std
        stats[0, a, b], stats[1, a, b], stats[2, a, b] = mean, var, inv_std


@cpu_kernel
def _group_input_gradient(dxhat, xhat, stats, dx):
    """dx = inv_std * (dxhat - mean_k(dxhat) - xhat * mean_k(dxhat * xhat)) per group."""
    groups, size, inner = dxhat.shape
    for job in prange(groups * inner):
        a, b = job // inner, job % inner
        plain = 0.0
        weighted = 0.0
        for k in range(size):
            plain += dxhat[a, k, b]
            weighted += dxhat[a, k, b] * xhat[a, k, b]
        plain /= size
        weighted /= size
        inv_std = stats[2, a, b]
        for k in range(size):
            dx[a, k, b] = inv_std * (dxhat[a, k, b] - plain - xhat[a, k, b] * weighted)


def group_norm_forward(ctx, x, eps):
    """``(xhat, stats)`` of an (A, K, B) array normalized over K: stats float64 (3, A, B) holds each
    group's mean, biased variance and inv_std = 1 / sqrt(var + eps)."""
    xhat = np.empty_like(x)
    stats = np.empty((3, x.shape[0], x.shape[2]))
    launch(_group_statistics, 4 * x.size, x, eps, xhat, stats)
    return xhat, stats


def group_norm_backward(ctx, dxhat, xhat, stats):
    """The gradient of the input of :func:`group_norm_forward` from the one of xhat."""
    dx = np.empty_like(dxhat)
    launch(_group_input_gradient, 4 * dxhat.size, dxhat, xhat, stats, dx)
    return dx


def channel_affine_forward(ctx, xhat, weight, bias):
    """y[p, q, r] = weight[q] * xhat[p, q, r] + bias[q]."""
    shaped = (1, -1, 1)
    y = np.multiply(xhat, weight.reshape(shaped))
    y += bias.reshape(shaped)
    return y


def channel_affine_backward(ctx, grad, xhat, weight, grad_weight, grad_bias):
    """grad_weight[q] = sum over p, r of dy * xhat, grad_bias[q] = sum of dy; returns dxhat = weight[q] * dy."""
    grad_weight[...] = np.multiply(grad, xhat).sum(axis=(0, 2), dtype=np.float64)
    grad_bias[...] = grad.sum(axis=(0, 2), dtype=np.float64)
    return np.multiply(grad, weight.reshape(1, -1, 1))


def instance_running_update(ctx, running_mean, running_var, stats, momentum, count):
    """running = (1 - momentum) * running + momentum * the batch's average of the (N, C) instance
    statistics in ``stats`` (variance unbiased: * count / (count - 1)), as PyTorch's instance norm."""
    mean = stats[0].mean(axis=0)
    var = stats[1].mean(axis=0) * (count / (count - 1))
    running_mean[...] = (1 - momentum) * running_mean + momentum * mean
    running_var[...] = (1 - momentum) * running_var + momentum * var


KERNELS = {"group_norm_forward": group_norm_forward, "group_norm_backward": group_norm_backward,
           "channel_affine_forward": channel_affine_forward, "channel_affine_backward": channel_affine_backward,
           "instance_running_update": instance_running_update}
