"""Slow, obvious references of the structure layers: loops over every output element."""

import math

import numpy as np


def _source(index, shape):
    """The element of an input of ``shape`` that broadcasts to output position ``index``."""
    return tuple(k if n > 1 else 0 for k, n in zip(index, shape))


def broadcast_shape(*shapes):
    return tuple(max(sizes) for sizes in zip(*shapes))


def elementwise(op, *xs):
    """x_1 OP x_2 OP ... left to right, every position looked up input by input."""
    out = np.zeros(broadcast_shape(*(x.shape for x in xs)))
    for index in np.ndindex(*out.shape):
        value = xs[0][_source(index, xs[0].shape)]
        for x in xs[1:]:
            other = x[_source(index, x.shape)]
            value = value + other if op == "add" else value - other if op == "sub" else value * other
        out[index] = value
    return out


def elementwise_grads(op, grad, *xs):
    """The gradient of every input: each output position's contribution added to the input element it read."""
    grads = [np.zeros(x.shape) for x in xs]
    for index in np.ndindex(*grad.shape):
        for i, x in enumerate(xs):
            if op == "mul":
                factor = math.prod(xs[j][_source(index, xs[j].shape)] for j in range(len(xs)) if j != i)
            else:
                factor = -1.0 if op == "sub" and i == 1 else 1.0
            grads[i][_source(index, x.shape)] += grad[index] * factor
    return grads


def scale(x, weight):
    out = np.zeros(x.shape)
    for index in np.ndindex(*x.shape):
        out[index] = x[index] * weight[index[1]]
    return out


def scale_weight_grad(x, grad):
    dw = np.zeros(x.shape[1])
    for index in np.ndindex(*x.shape):
        dw[index[1]] += grad[index] * x[index]
    return dw


def channel_slice(x, start, stop, step):
    return np.stack([x[:, c] for c in range(x.shape[1])[start:stop:step]], axis=1)


def permute(x, dims):
    out = np.zeros([x.shape[d] for d in dims])
    for index in np.ndindex(*out.shape):
        source = [0] * x.ndim
        for k, d in enumerate(dims):
            source[d] = index[k]
        out[index] = x[tuple(source)]
    return out


def reshape(x, shape):
    """The values of x in C order (a loop), poured into ``shape``."""
    values = [x[index] for index in np.ndindex(*x.shape)]
    return np.array(values).reshape(shape)
