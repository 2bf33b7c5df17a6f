"""Slow, obvious float64 references of layer_norm, group_norm, instance_norm and lrn, written from
PyTorch's definitions with loops over every index; arrays carry the batch axis first."""

from __future__ import annotations

import math

import numpy as np


def _normalized(values, eps):
    """(values - mean) / sqrt(biased var + eps) of a list of floats, and (mean, biased var)."""
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / len(values)
    return [(v - mean) / math.sqrt(var + eps) for v in values], (mean, var)


def _normalize_groups(x, group_of, eps):
    """Normalize x over the sets of indices that ``group_of(index)`` maps to the same key."""
    x = np.asarray(x, np.float64)
    groups = {}
    for index in np.ndindex(x.shape):
        groups.setdefault(group_of(index), []).append(index)
    y, stats = np.zeros_like(x), {}
    for key, indices in groups.items():
        normalized, stats[key] = _normalized([float(x[i]) for i in indices], eps)
        for i, v in zip(indices, normalized):
            y[i] = v
    return y, stats


def _affine(y, weight, bias, parameter_of):
    if weight is None:
        return y
    out = np.zeros_like(y)
    for index in np.ndindex(y.shape):
        p = parameter_of(index)
        out[index] = y[index] * float(weight[p]) + float(bias[p])
    return out


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """nn.LayerNorm: statistics over the last len(normalized_shape) axes; weight/bias shaped so."""
    d = len(normalized_shape)
    y, _ = _normalize_groups(x, lambda i: i[:len(i) - d], eps)
    return _affine(y, weight, bias, lambda i: i[len(i) - d:])


def layer_norm_channels_first(x, weight=None, bias=None, eps=1e-5):
    """ConvNeXt's channels-first LayerNorm: statistics over axis 1 at every (sample, position)."""
    y, _ = _normalize_groups(x, lambda i: (i[0],) + i[2:], eps)
    return _affine(y, weight, bias, lambda i: i[1])


def group_norm(x, num_groups, weight=None, bias=None, eps=1e-5):
    """nn.GroupNorm: statistics over each sample's group of C / num_groups consecutive channels."""
    per_group = x.shape[1] // num_groups
    y, _ = _normalize_groups(x, lambda i: (i[0], i[1] // per_group), eps)
    return _affine(y, weight, bias, lambda i: i[1])


def instance_norm(x, weight=None, bias=None, eps=1e-5, running=None, training=True, momentum=0.1):
    """nn.InstanceNorm1d/2d: (y, new running_mean, new running_var). ``running`` = (mean, var) or
    None (track_running_stats false); evaluation with running statistics normalizes per channel with
    them, training moves them towards the batch average of the instance statistics (var unbiased)."""
    x = np.asarray(x, np.float64)
    if running is not None and not training:
        mean, var = running
        y = np.zeros_like(x)
        for index in np.ndindex(x.shape):
            c = index[1]
            y[index] = (x[index] - mean[c]) / math.sqrt(var[c] + eps)
        return _affine(y, weight, bias, lambda i: i[1]), mean, var
    y, stats = _normalize_groups(x, lambda i: (i[0], i[1]), eps)
    new_mean = new_var = None
    if running is not None:
        count = x[0, 0].size
        batch, channels = x.shape[:2]
        new_mean = np.array([(1 - momentum) * running[0][c]
                             + momentum * sum(stats[(n, c)][0] for n in range(batch)) / batch
                             for c in range(channels)])
        new_var = np.array([(1 - momentum) * running[1][c]
                            + momentum * sum(stats[(n, c)][1] for n in range(batch)) / batch * count / (count - 1)
                            for c in range(channels)])
    return _affine(y, weight, bias, lambda i: i[1]), new_mean, new_var


def lrn(x, size, alpha=1e-4, beta=0.75, k=1.0):
    """nn.LocalResponseNorm: x[c] / (k + alpha / size * sum of x^2 over channels c - size // 2 ..
    c + (size - 1) // 2) ** beta (missing channels are 0)."""
    x = np.asarray(x, np.float64)
    y = np.zeros_like(x)
    channels = x.shape[1]
    for index in np.ndindex(x.shape):
        n, c, *rest = index
        total = 0.0
        for j in range(c - size // 2, c + (size - 1) // 2 + 1):
            if 0 <= j < channels:
                total += float(x[(n, j, *rest)]) ** 2
        y[index] = x[index] / (k + alpha / size * total) ** beta
    return y
