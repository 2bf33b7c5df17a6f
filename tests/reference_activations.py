"""Slow, obvious float64 references of the element-wise activations, prelu and softmax / log-softmax
over an axis, written straight from PyTorch's definitions (``torch.nn`` docs), one value at a time.

Arrays carry the batch axis first. Each returns a new float64 array.
"""

from __future__ import annotations

import math

import numpy as np

from reference_layers import _map, sigmoid


def _softplus(v):
    """log(1 + e^v), in the form that cannot overflow."""
    return v + math.log1p(math.exp(-v)) if v > 0 else math.log1p(math.exp(v))


def _sigmoid(v):
    return float(sigmoid(np.array([v]))[0])


def elu(x, alpha=1.0):
    return _map(lambda v: v if v > 0 else alpha * math.expm1(v), x)


def selu(x):
    alpha, scale = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946
    return scale * elu(x, alpha)


def celu(x, alpha=1.0):
    # max(0, v) + min(0, alpha (e^(v / alpha) - 1)); the second term is 0 for v > 0 (e^ could overflow)
    return _map(lambda v: max(0.0, v) + (min(0.0, alpha * math.expm1(v / alpha)) if v <= 0 else 0.0), x)


def gelu(x, approximate="none"):
    if approximate == "tanh":
        k = math.sqrt(2 / math.pi)
        return _map(lambda v: 0.5 * v * (1 + math.tanh(k * (v + 0.044715 * v * v * v))), x)
    return _map(lambda v: v * 0.5 * (1 + math.erf(v / math.sqrt(2))), x)


def silu(x):
    return _map(lambda v: v * _sigmoid(v), x)


def mish(x):
    return _map(lambda v: v * math.tanh(_softplus(v)), x)


def relu6_of(v):
    return min(max(v, 0.0), 6.0)


def hardswish(x):
    return _map(lambda v: v * relu6_of(v + 3) / 6, x)


def hardsigmoid(x):
    return _map(lambda v: relu6_of(v + 3) / 6, x)


def hardtanh(x, min_val=-1.0, max_val=1.0):
    return _map(lambda v: min(max(v, min_val), max_val), x)


def relu6(x):
    return _map(relu6_of, x)


def clip(x, low=None, high=None):
    low = -math.inf if low is None else low
    high = math.inf if high is None else high
    return _map(lambda v: min(max(v, low), high), x)


def softplus(x, beta=1.0, threshold=20.0):
    return _map(lambda v: v if beta * v > threshold else _softplus(beta * v) / beta, x)


def softsign(x):
    return _map(lambda v: v / (1 + abs(v)), x)


def prelu(x, weight):
    """weight[c] for channel c = index 1 (weight of one value: the same for every channel)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        w = float(weight[index[1] if len(weight) > 1 else 0])
        v = float(x[index])
        y[index] = v if v > 0 else w * v
    return y


def _over_axis(x, axis, function):
    """``function(list of values)`` -> list, applied along ``axis`` for every index of the other axes."""
    x = np.asarray(x, dtype=np.float64)
    y = np.zeros_like(x)
    others = [n for i, n in enumerate(x.shape) if i != axis]
    for rest in np.ndindex(*others):
        indices = [(*rest[:axis], k, *rest[axis:]) for k in range(x.shape[axis])]
        for index, value in zip(indices, function([float(x[i]) for i in indices])):
            y[index] = value
    return y


def softmax(x, axis=1):
    def one(values):
        top = max(values)
        exps = [math.exp(v - top) for v in values]
        return [e / sum(exps) for e in exps]
    return _over_axis(x, axis, one)


def log_softmax(x, axis=1):
    def one(values):
        top = max(values)
        log_total = math.log(sum(math.exp(v - top) for v in values))
        return [v - top - log_total for v in values]
    return _over_axis(x, axis, one)
