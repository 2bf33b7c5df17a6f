"""Batch normalization: the math once, the kernels from the device (:mod:`.cpu`, :mod:`.cuda`)."""

from __future__ import annotations

import numpy as np

from cnnrun.engine import Layer
from cnnrun.engine.options import bool_option, float_option

from .groups import onnx_affine, onnx_normalize, onnx_scale_bias


class BatchNorm(Layer):
    """y = gamma * (x - mean) / sqrt(var + eps) + beta, per channel (axis 0 of (C, H, W) / (C, L))
    or per feature ((F,) input). PyTorch: ``nn.BatchNorm1d`` / ``nn.BatchNorm2d(C, eps, momentum)``.

    Training: mean and biased var over the batch and spatial axes (n values per channel), and
    running = (1 - momentum) * running + momentum * batch stat (var unbiased: * n / (n - 1)).
    Eval: the running statistics. Shape: unchanged.
    Backward (training): dx = gamma / sqrt(var + eps) * (dy - mean(dy) - xhat * mean(dy * xhat));
    (eval): dx = dy * gamma / sqrt(running_var + eps). dgamma = sum(dy * xhat), dbeta = sum(dy).
    ``affine: false``: no ``weight``/``bias`` (gamma = 1, beta = 0); ``track_running_stats: false``:
    no running buffers, the batch statistics in evaluation too (PyTorch's options of the same names).
    ``sync: true``: in data-parallel training (docs/distributed.md) the training statistics and the
    backward sums are summed over the ranks (n: the global batch's values per channel), so the layer
    computes what one process would on the whole batch (PyTorch: ``nn.SyncBatchNorm``); in one
    process, and in evaluation, it changes nothing. CPU kernels only.

    Folds into a layer before it that declares ``affine_output_channels`` (conv, linear: ``cnnrun
    fuse``): per output channel c, with s = gamma / sqrt(running_var + eps),
    w'[c] = w[c] * s[c] and b'[c] = (b[c] - running_mean[c]) * s[c] + beta[c] (b = 0 without bias).
    PyTorch: ``fuse_conv_bn_eval``. Without running statistics it does not fold (its output depends
    on the batch).
    """

    type_name = "batchnorm"
    kernels = ("batchnorm_forward", "batchnorm_backward")

    def __init__(self, name, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True, sync=False):
        super().__init__(name)
        self.eps = float_option(eps, "eps", low=0, low_open=True)
        self.momentum = float_option(momentum, "momentum", low=0, high=1)
        self.affine = bool_option(affine, "affine")
        self.track_running_stats = bool_option(track_running_stats, "track_running_stats")
        self.sync = bool_option(sync, "sync")

    def parameter_shapes(self, shape):
        return {"weight": (shape[0],), "bias": (shape[0],)} if self.affine else {}

    def buffer_shapes(self, shape):
        return {"running_mean": (shape[0],), "running_var": (shape[0],)} if self.track_running_stats else {}

    def initialize(self, params, buffers, rng):
        if self.affine:
            params["weight"][...] = 1
        if self.track_running_stats:
            buffers["running_var"][...] = 1

    def forward(self, ctx, x):
        batch_statistics = (ctx.training and ctx.trainable) or not self.track_running_stats  # frozen: eval mode
        if batch_statistics and x.size // x.shape[1] == 1:
            when = "when training" if ctx.training else "without running statistics (track_running_stats false)"
            raise self.error(f"expected more than 1 value per channel {when}; got a batch of shape {x.shape}")
        y, ctx.saved.xhat, ctx.saved.inv_std = ctx.kernels.batchnorm_forward(
            ctx, x, ctx.params.get("weight"), ctx.params.get("bias"), ctx.buffers.get("running_mean"),
            ctx.buffers.get("running_var"), self.eps, self.momentum, batch_statistics, **self._synced(ctx))
        ctx.saved.batch_statistics = batch_statistics
        return y

    def backward(self, ctx, grad):
        saved, grads = ctx.saved, ctx.grads if ctx.trainable else {}  # frozen: no weight gradients
        return ctx.kernels.batchnorm_backward(ctx, grad, saved.xhat, saved.inv_std, ctx.params.get("weight"),
                                              saved.batch_statistics, grads.get("weight"), grads.get("bias"),
                                              **self._synced(ctx))

    def _synced(self, ctx) -> dict:
        """``{"reduce": sum over the ranks}`` for the kernels when this layer synchronizes (training
        over several ranks), else nothing."""
        return {"reduce": ctx.comm.sum} if self.sync and ctx.training and ctx.comm is not None else {}

    def to_onnx(self, graph, x):
        """ONNX ``BatchNormalization`` with the running statistics (momentum 1 - momentum, ONNX's
        convention); without them (``track_running_stats: false``) the batch's, from ReduceMean nodes."""
        if not self.track_running_stats:
            axes = [0, *range(2, len(graph.input_shapes[0]) + 1)]
            return onnx_affine(graph, onnx_normalize(graph, x, axes))
        scale, bias = onnx_scale_bias(graph, graph.input_shapes[0][0])
        return graph.op("BatchNormalization", x, scale, bias, graph.param("running_mean"),
                        graph.param("running_var"), epsilon=self.eps, momentum=1 - self.momentum)

    def folds_into(self, producer):
        return producer.affine_output_channels and self.track_running_stats

    def fold_parameters(self, producer_params, params, buffers):
        """The producer's ``weight`` and ``bias`` with this batchnorm folded in (computed in float64)."""
        weight = np.asarray(producer_params["weight"])
        channels = weight.shape[0]
        variance = np.asarray(buffers["running_var"], np.float64)
        gamma = np.asarray(params.get("weight", np.ones(channels)), np.float64)
        scale = gamma / np.sqrt(variance + self.eps)
        bias = np.asarray(producer_params.get("bias", np.zeros(channels)), np.float64)
        new_weight = weight * scale.reshape((-1,) + (1,) * (weight.ndim - 1))
        new_bias = (bias - buffers["running_mean"]) * scale + params.get("bias", np.zeros(channels))
        return {"weight": new_weight.astype(weight.dtype), "bias": new_bias.astype(weight.dtype)}
