"""Batch normalization and dropout (NumPy: both are memory-bound; the CUDA kernels are in
:mod:`cnnrun.plugins.norm_cuda`)."""

from __future__ import annotations

import numpy as np

from cnnrun.engine import Layer, hookimpl
from cnnrun.engine.options import float_option


def _channel_sum(a: np.ndarray) -> np.ndarray:
    """Per-channel sums of an (N, C, ...) array over N and the spatial axes, in float64."""
    return a.reshape(a.shape[0], a.shape[1], -1).sum(axis=(0, 2), dtype=np.float64)


def _per_channel(v: np.ndarray, like: np.ndarray) -> np.ndarray:
    """A (C,) vector in ``like``'s dtype, shaped to broadcast over an (N, C, ...) array."""
    return v.astype(like.dtype, copy=False).reshape((-1,) + (1,) * (like.ndim - 2))


class BatchNorm(Layer):
    """y = gamma * (x - mean) / sqrt(var + eps) + beta, per channel (axis 0 of (C, H, W) / (C, L))
    or per feature ((F,) input). PyTorch: ``nn.BatchNorm1d`` / ``nn.BatchNorm2d(C, eps, momentum)``.

    Training: mean and biased var over the batch and spatial axes (n values per channel), and
    running = (1 - momentum) * running + momentum * batch stat (var unbiased: * n / (n - 1)).
    Eval: the running statistics. Shape: unchanged.
    Backward (training): dx = gamma / sqrt(var + eps) * (dy - mean(dy) - xhat * mean(dy * xhat));
    (eval): dx = dy * gamma / sqrt(running_var + eps). dgamma = sum(dy * xhat), dbeta = sum(dy).
    """

    type_name = "batchnorm"

    def __init__(self, name, eps=1e-5, momentum=0.1):
        super().__init__(name)
        self.eps = float_option(eps, "eps", low=0, low_open=True)
        self.momentum = float_option(momentum, "momentum", low=0, high=1)

    def parameter_shapes(self, shape):
        return {"weight": (shape[0],), "bias": (shape[0],)}

    def buffer_shapes(self, shape):
        return {"running_mean": (shape[0],), "running_var": (shape[0],)}

    def initialize(self, params, buffers, rng):
        params["weight"][...] = 1
        buffers["running_var"][...] = 1

    def forward(self, ctx, x):
        n = x.size // x.shape[1]
        running_mean, running_var = ctx.buffers["running_mean"], ctx.buffers["running_var"]
        y = np.empty_like(x)
        xhat = ctx.workspace("xhat", x.shape, x.dtype)
        self._check_batch(ctx, x)
        if ctx.training:
            mean = _channel_sum(x) / n
            np.subtract(x, _per_channel(mean, x), out=xhat)
            var = _channel_sum(np.square(xhat, out=y)) / n
            m = self.momentum
            running_mean[...] = (1 - m) * running_mean + m * mean
            running_var[...] = (1 - m) * running_var + m * var * (n / (n - 1))
        else:
            var = running_var.astype(np.float64)
            np.subtract(x, _per_channel(running_mean, x), out=xhat)
        inv_std = 1 / np.sqrt(var + self.eps)
        xhat *= _per_channel(inv_std, x)
        np.multiply(xhat, _per_channel(ctx.params["weight"], x), out=y)
        y += _per_channel(ctx.params["bias"], x)
        ctx.saved.xhat, ctx.saved.inv_std, ctx.saved.n = xhat, inv_std, n
        ctx.saved.training = ctx.training
        return y

    def backward(self, ctx, grad):
        xhat, n = ctx.saved.xhat, ctx.saved.n
        scale = ctx.params["weight"] * ctx.saved.inv_std
        dx = np.multiply(grad, xhat)
        dgamma = _channel_sum(dx)
        dbeta = _channel_sum(grad)
        ctx.grads["weight"][...] = dgamma
        ctx.grads["bias"][...] = dbeta
        if ctx.saved.training:
            np.multiply(xhat, _per_channel(dgamma / n, grad), out=dx)
            np.subtract(grad, dx, out=dx)
            dx -= _per_channel(dbeta / n, grad)
            dx *= _per_channel(scale, grad)
        else:
            np.multiply(grad, _per_channel(scale, grad), out=dx)
        return dx

    def forward_cuda(self, ctx, x):
        from . import norm_cuda

        self._check_batch(ctx, x)
        channels, saved = x.shape[1], ctx.saved
        saved.xhat = ctx.workspace("xhat", x.shape, x.dtype)
        saved.mean = ctx.workspace("mean", (channels,), np.float64)
        saved.inv_std = ctx.workspace("inv_std", (channels,), np.float64)
        saved.training = ctx.training
        partial = ctx.workspace("partial", (channels, norm_cuda.lanes(x)), np.float64)
        y = ctx.backend.empty(x.shape, x.dtype)
        norm_cuda.batchnorm_forward(x, ctx.params["weight"], ctx.params["bias"], ctx.buffers["running_mean"],
                                    ctx.buffers["running_var"], self.eps, self.momentum, ctx.training,
                                    saved.mean, saved.inv_std, saved.xhat, y, partial)
        return y

    def backward_cuda(self, ctx, grad):
        from . import norm_cuda

        channels, saved = grad.shape[1], ctx.saved
        dgamma = ctx.workspace("dgamma", (channels,), np.float64)
        dbeta = ctx.workspace("dbeta", (channels,), np.float64)
        partial = ctx.workspace("grad_partial", (2, channels, norm_cuda.lanes(grad)), np.float64)
        dx = ctx.backend.empty(grad.shape, grad.dtype)
        norm_cuda.batchnorm_backward(grad, saved.xhat, ctx.params["weight"], saved.inv_std, saved.training,
                                     ctx.grads["weight"], ctx.grads["bias"], dgamma, dbeta, partial, dx)
        return dx

    def _check_batch(self, ctx, x):
        if ctx.training and x.size // x.shape[1] == 1:
            raise self.error(f"expected more than 1 value per channel when training; got a batch "
                             f"of shape {x.shape}")


class Dropout(Layer):
    """Inverted dropout: when training, y = x * keep / (1 - p) with keep ~ Bernoulli(1 - p) drawn
    from ``ctx.rng``; identity in eval. Backward multiplies by the same keep / (1 - p).
    PyTorch: ``nn.Dropout(p=0.5)``. Shape: unchanged.
    """

    type_name = "dropout"

    def __init__(self, name, p=0.5):
        super().__init__(name)
        self.p = float_option(p, "p", low=0, high=1, high_open=True)

    def forward(self, ctx, x):
        if not ctx.training or self.p == 0:
            ctx.saved.scale = None
            return x
        keep = ctx.rng.random(x.shape) >= self.p
        kept_scale = x.dtype.type(1) / x.dtype.type(1 - self.p)  # as PyTorch: noise.div_(1 - p)
        scale = ctx.saved.scale = np.multiply(keep, kept_scale, dtype=x.dtype)
        return x * scale

    def backward(self, ctx, grad):
        return grad if ctx.saved.scale is None else grad * ctx.saved.scale

    def forward_cuda(self, ctx, x):
        """The mask is drawn on the device (:mod:`cnnrun.plugins.norm_cuda`), from a seed drawn
        from ``ctx.rng``: reproducible, but not the CPU's mask for the same seed."""
        from . import norm_cuda

        if not ctx.training or self.p == 0:
            ctx.saved.scale = None
            return x
        launch = norm_cuda.dropout_launch(x.size)
        states = ctx.workspace("rng_states", (launch[0] * launch[1],), norm_cuda.RNG_STATE)
        keep = ctx.saved.keep = ctx.workspace("keep", x.shape, np.uint8)
        scale = ctx.saved.scale = norm_cuda.dropout_scale(self.p, x.dtype)
        y = ctx.backend.empty(x.shape, x.dtype)
        norm_cuda.dropout_forward(x, int(ctx.rng.integers(2**62)), self.p, scale, launch, states, keep, y)
        return y

    def backward_cuda(self, ctx, grad):
        from . import norm_cuda

        if ctx.saved.scale is None:
            return grad
        dx = ctx.backend.empty(grad.shape, grad.dtype)
        norm_cuda.dropout_backward(grad, ctx.saved.keep, ctx.saved.scale, dx)
        return dx


@hookimpl
def cnnrun_register_layers(register):
    for layer in (BatchNorm, Dropout):
        register(layer)
