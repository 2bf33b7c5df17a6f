"""CPU kernels of normalization: batchnorm's here (NumPy: memory-bound), the group-wise ones' in
:mod:`.cpu_groups` and lrn's in :mod:`.cpu_lrn`, all in this module's ``KERNELS``."""

from __future__ import annotations

import numpy as np

from . import cpu_groups, cpu_lrn


def _channel_sum(a: np.ndarray) -> np.ndarray:
    """Per-channel sums of an (N, C, ...) array over N and the spatial axes, in float64."""
    return a.reshape(a.shape[0], a.shape[1], -1).sum(axis=(0, 2), dtype=np.float64)


def _per_channel(v: np.ndarray, like: np.ndarray) -> np.ndarray:
    """A (C,) vector in ``like``'s dtype, shaped to broadcast over an (N, C, ...) array."""
    return v.astype(like.dtype, copy=False).reshape((-1,) + (1,) * (like.ndim - 2))


def batchnorm_forward(ctx, x, weight, bias, running_mean, running_var, eps, momentum, training, reduce=None):
    """``(y, xhat, inv_std)``: y = weight * xhat + bias, xhat = (x - mean) * inv_std with the batch
    statistics (``training``: the running ones, unless None, move by ``momentum``) or the running
    ones; ``inv_std`` float64 (C,). ``weight`` and ``bias`` None: y = xhat. ``reduce``: sums a
    float64 array over the ranks (synchronized batchnorm: the statistics of the global batch)."""
    n = x.size // x.shape[1]
    y = np.empty_like(x)
    xhat = ctx.workspace("xhat", x.shape, x.dtype)
    if training:
        sums = _channel_sum(x)
        if reduce is not None:
            total = reduce(np.append(sums, n))
            sums, n = total[:-1], total[-1]
        mean = sums / n
        np.subtract(x, _per_channel(mean, x), out=xhat)
        squares = _channel_sum(np.square(xhat, out=y))
        var = (squares if reduce is None else reduce(squares)) / n
        if running_mean is not None:
            running_mean[...] = (1 - momentum) * running_mean + momentum * mean
            running_var[...] = (1 - momentum) * running_var + momentum * var * (n / (n - 1))
    else:
        var = running_var.astype(np.float64)
        np.subtract(x, _per_channel(running_mean, x), out=xhat)
    inv_std = 1 / np.sqrt(var + eps)
    xhat *= _per_channel(inv_std, x)
    if weight is None:
        y[...] = xhat
    else:
        np.multiply(xhat, _per_channel(weight, x), out=y)
        y += _per_channel(bias, x)
    return y, xhat, inv_std


def batchnorm_backward(ctx, grad, xhat, inv_std, weight, training, grad_weight, grad_bias, reduce=None):
    """dgamma = sum(dy * xhat) and dbeta = sum(dy) into ``grad_weight``/``grad_bias`` (unless
    ``weight`` is None: gamma = 1, or they are: a frozen layer); returns dx. ``reduce``: dx from the
    sums over the ranks (synchronized batchnorm; the parameter gradients stay this rank's, summed
    with the others)."""
    n = grad.size // grad.shape[1]
    scale = inv_std if weight is None else weight * inv_std
    dx = np.multiply(grad, xhat)
    dgamma = _channel_sum(dx)
    dbeta = _channel_sum(grad)
    if grad_weight is not None:
        grad_weight[...] = dgamma
        grad_bias[...] = dbeta
    if training and reduce is not None:
        channels = len(dgamma)
        total = reduce(np.concatenate([dgamma, dbeta, [n]]))
        dgamma, dbeta, n = total[:channels], total[channels:-1], total[-1]
    if training:
        np.multiply(xhat, _per_channel(dgamma / n, grad), out=dx)
        np.subtract(grad, dx, out=dx)
        dx -= _per_channel(dbeta / n, grad)
        dx *= _per_channel(scale, grad)
    else:
        np.multiply(grad, _per_channel(scale, grad), out=dx)
    return dx


KERNELS = {"batchnorm_forward": batchnorm_forward, "batchnorm_backward": batchnorm_backward,
           **cpu_groups.KERNELS, **cpu_lrn.KERNELS}
