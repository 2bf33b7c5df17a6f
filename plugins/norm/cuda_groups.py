"""CUDA kernels of the group-wise normalizations (layer_norm, group_norm, instance_norm).

The same operations as :mod:`.cpu_groups`: one block per group of an (A, K, B) view reduces over K
with :func:`~cnnrun.engine.cuda.block_sum` (in float64); the affine map and its input gradient are
element-wise, and its parameter gradients one block per index q of a (P, Q, R) view.
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda, float64

from cnnrun.engine.cuda import MAX_BLOCK_SIZE, block_size, block_sum, blocks_for, flat, grid


@cuda.jit
def _group_statistics(x, eps, xhat, stats):
    """stats[:, a, b] = mean, biased var and 1 / sqrt(var + eps) of x[a, :, b]; xhat = (x - mean) * inv_std."""
    partial = cuda.shared.array(MAX_BLOCK_SIZE, float64)
    groups, size, inner = x.shape
    for job in range(cuda.blockIdx.x, groups * inner, cuda.gridDim.x):  # one group per block
        a, b = job // inner, job % inner
        total = 0.0
        for k in range(cuda.threadIdx.x, size, cuda.blockDim.x):
            total += x[a, k, b]
        mean = block_sum(partial, total) / size
        squares = 0.0
        for k in range(cuda.threadIdx.x, size, cuda.blockDim.x):
            d = x[a, k, b] - mean
            squares += d * d
        var = block_sum(partial, squares) / size
        inv_std = 1 / math.sqrt(var + eps)
        for k in range(cuda.threadIdx.x, size, cuda.blockDim.x):
            xhat[a, k, b] = (x[a, k, b] - mean) * inv_std
        if cuda.threadIdx.x == 0:
            stats[0, a, b] = mean
            stats[1, a, b] = var
            stats[2, a, b] = inv_std


@cuda.jit
def _group_input_gradient(dxhat, xhat, stats, dx):
    """dx = inv_std * (dxhat - mean_k(dxhat) - xhat * mean_k(dxhat * xhat)) per group."""
    partial = cuda.shared.array(MAX_BLOCK_SIZE, float64)
    groups, size, inner = dxhat.shape
    for job in range(cuda.blockIdx.x, groups * inner, cuda.gridDim.x):
        a, b = job // inner, job % inner
        plain = 0.0
        weighted = 0.0
        for k in range(cuda.threadIdx.x, size, cuda.blockDim.x):
            plain += dxhat[a, k, b]
            weighted += dxhat[a, k, b] * xhat[a, k, b]
        plain = block_sum(partial, plain) / size
        weighted = block_sum(partial, weighted) / size
        inv_std = stats[2, a, b]
        for k in range(cuda.threadIdx.x, size, cuda.blockDim.x):
            dx[a, k, b] = inv_std * (dxhat[a, k, b] - plain - xhat[a, k, b] * weighted)


@cuda.jit
def _affine(out, x, weight, bias, channels, inner):
    """out[i] = weight[q] * x[i] + bias[q] over flat (P, Q, R) arrays, q = (i // inner) % channels."""
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        q = (i // inner) % channels
        out[i] = weight[q] * x[i] + bias[q]


@cuda.jit
def _scaled(out, x, weight, channels, inner):
    """out[i] = weight[q] * x[i], q as in :func:`_affine`."""
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        out[i] = weight[(i // inner) % channels] * x[i]


@cuda.jit
def _affine_gradients(grad, xhat, grad_weight, grad_bias):
    """grad_weight[q] = sum over p, r of dy * xhat, grad_bias[q] = sum of dy: one block per q."""
    partial = cuda.shared.array(MAX_BLOCK_SIZE, float64)
    outer, channels, inner = grad.shape
    for q in range(cuda.blockIdx.x, channels, cuda.gridDim.x):
        weighted = 0.0
        plain = 0.0
        for j in range(cuda.threadIdx.x, outer * inner, cuda.blockDim.x):
            g = grad[j // inner, q, j % inner]
            weighted += g * xhat[j // inner, q, j % inner]
            plain += g
        weighted = block_sum(partial, weighted)
        plain = block_sum(partial, plain)
        if cuda.threadIdx.x == 0:
            grad_weight[q] = weighted
            grad_bias[q] = plain


@cuda.jit
def _instance_running_update(running_mean, running_var, stats, momentum, count):
    """running = (1 - momentum) * running + momentum * the batch average of stats (var * count / (count - 1))."""
    batch, channels = stats.shape[1], stats.shape[2]
    for c in range(cuda.grid(1), channels, cuda.gridsize(1)):
        mean = 0.0
        var = 0.0
        for n in range(batch):
            mean += stats[0, n, c]
            var += stats[1, n, c]
        running_mean[c] = (1 - momentum) * running_mean[c] + momentum * mean / batch
        running_var[c] = (1 - momentum) * running_var[c] + momentum * var / batch * count / (count - 1)


def group_norm_forward(ctx, x, eps):
    """``(xhat, stats)`` of an (A, K, B) array normalized over K: stats float64 (3, A, B)."""
    xhat = cuda.device_array(x.shape, x.dtype)
    stats = cuda.device_array((3, x.shape[0], x.shape[2]), np.float64)
    _group_statistics[blocks_for(x.shape[0] * x.shape[2]), block_size()](x, eps, xhat, stats)
    return xhat, stats


def group_norm_backward(ctx, dxhat, xhat, stats):
    """The gradient of the input of :func:`group_norm_forward` from the one of xhat."""
    dx = cuda.device_array(dxhat.shape, dxhat.dtype)
    _group_input_gradient[blocks_for(dxhat.shape[0] * dxhat.shape[2]), block_size()](dxhat, xhat, stats, dx)
    return dx


def channel_affine_forward(ctx, xhat, weight, bias):
    """y[p, q, r] = weight[q] * xhat[p, q, r] + bias[q]."""
    y = cuda.device_array(xhat.shape, xhat.dtype)
    _affine[grid(xhat.size)](flat(y), flat(xhat), weight, bias, xhat.shape[1], xhat.shape[2])
    return y


def channel_affine_backward(ctx, grad, xhat, weight, grad_weight, grad_bias):
    """Writes grad_weight and grad_bias; returns dxhat = weight[q] * dy."""
    _affine_gradients[blocks_for(grad.shape[1]), block_size()](grad, xhat, grad_weight, grad_bias)
    dxhat = cuda.device_array(grad.shape, grad.dtype)
    _scaled[grid(grad.size)](flat(dxhat), flat(grad), weight, grad.shape[1], grad.shape[2])
    return dxhat


def instance_running_update(ctx, running_mean, running_var, stats, momentum, count):
    """The running statistics moved towards the batch average of the (N, C) instance statistics."""
    _instance_running_update[grid(running_mean.size)](running_mean, running_var, stats, momentum, count)


KERNELS = {"group_norm_forward": group_norm_forward, "group_norm_backward": group_norm_backward,
           "channel_affine_forward": channel_affine_forward, "channel_affine_backward": channel_affine_backward,
           "instance_running_update": instance_running_update}
