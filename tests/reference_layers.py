"""Slow, obvious float64 reference implementations of the dense, norm, merge and activation layers.

Plain loops over every index, written straight from PyTorch's definitions; arrays carry the batch
axis first: (N, C, H, W), (N, C, L) or (N, F). Each returns new float64 arrays.
"""

from __future__ import annotations

import math

import numpy as np


def _f64(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


# -- dense ---------------------------------------------------------------------------------------
def flatten(x):
    """(N, ...) -> (N, prod(...)), walking each sample's indices in C order."""
    x = _f64(x)
    y = np.zeros((x.shape[0], x[0].size))
    for n in range(x.shape[0]):
        k = 0
        for index in np.ndindex(x.shape[1:]):
            y[n, k] = x[(n, *index)]
            k += 1
    return y


def linear(x, weight, bias=None):
    """y[n, o] = bias[o] + sum_i x[n, i] * weight[o, i]."""
    x, weight = _f64(x), _f64(weight)
    batch, in_features = x.shape
    out_features = weight.shape[0]
    y = np.zeros((batch, out_features))
    for n in range(batch):
        for o in range(out_features):
            total = 0.0 if bias is None else float(bias[o])
            for i in range(in_features):
                total += x[n, i] * weight[o, i]
            y[n, o] = total
    return y


# -- norm ----------------------------------------------------------------------------------------
def batchnorm(x, weight, bias, running_mean, running_var, *, training, eps=1e-5, momentum=0.1):
    """Returns (y, new running_mean, new running_var); statistics per channel (axis 1) over all the
    other axes, the running variance updated with the unbiased batch variance."""
    x = _f64(x)
    new_mean, new_var = _f64(running_mean).copy(), _f64(running_var).copy()
    y = np.zeros_like(x)
    for c in range(x.shape[1]):
        indices = [index for index in np.ndindex(x.shape) if index[1] == c]
        if training:
            n = len(indices)
            mean = sum(x[i] for i in indices) / n
            var = sum((x[i] - mean) ** 2 for i in indices) / n
            new_mean[c] = (1 - momentum) * running_mean[c] + momentum * mean
            new_var[c] = (1 - momentum) * running_var[c] + momentum * var * n / (n - 1)
        else:
            mean, var = float(running_mean[c]), float(running_var[c])
        for i in indices:
            y[i] = (x[i] - mean) / math.sqrt(var + eps) * float(weight[c]) + float(bias[c])
    return y, new_mean, new_var


def dropout(x, keep, p):
    """y = x / (1 - p) where ``keep`` is true, else 0."""
    x = _f64(x)
    y = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        if keep[index]:
            y[index] = x[index] / (1 - p)
    return y


# -- merge ---------------------------------------------------------------------------------------
def add(*inputs):
    """Element-wise sum of same-shaped arrays."""
    y = np.zeros(inputs[0].shape)
    for index in np.ndindex(y.shape):
        for x in inputs:
            y[index] += float(x[index])
    return y


def concat(*inputs):
    """Stack along axis 1 (the channels): input k fills channels offset_k .. offset_k + C_k - 1."""
    channels = sum(x.shape[1] for x in inputs)
    y = np.zeros((inputs[0].shape[0], channels, *inputs[0].shape[2:]))
    offset = 0
    for x in inputs:
        for index in np.ndindex(x.shape):
            n, c, *rest = index
            y[(n, offset + c, *rest)] = x[index]
        offset += x.shape[1]
    return y


# -- activations ---------------------------------------------------------------------------------
def _map(function, x):
    x = _f64(x)
    y = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        y[index] = function(float(x[index]))
    return y


def relu(x):
    return _map(lambda v: v if v > 0 else 0.0, x)


def leaky_relu(x, negative_slope=0.01):
    return _map(lambda v: v if v > 0 else negative_slope * v, x)


def sigmoid(x):
    # 1 / (1 + e^-v), written so that neither branch overflows
    return _map(lambda v: 1 / (1 + math.exp(-v)) if v >= 0 else math.exp(v) / (1 + math.exp(v)), x)


def tanh(x):
    return _map(math.tanh, x)


def softmax(x):
    """Softmax over the channel axis (1), separately for every sample and spatial position."""
    x = _f64(x)
    y = np.zeros_like(x)
    for n in range(x.shape[0]):
        for position in np.ndindex(x.shape[2:]):
            column = [float(x[(n, c, *position)]) for c in range(x.shape[1])]
            top = max(column)
            exps = [math.exp(v - top) for v in column]
            for c in range(x.shape[1]):
                y[(n, c, *position)] = exps[c] / sum(exps)
    return y
