"""Normalizations over groups of values of each sample: layer_norm, group_norm, instance_norm.

Each views its input (with the batch axis) as (A, K, B) and normalizes every x[a, :, b] with its own
mean and biased variance (kernels ``group_norm_forward`` / ``group_norm_backward``), then applies
its learnable per-index affine map on a (P, Q, R) view (``channel_affine_forward`` /
``channel_affine_backward``): one pair of kernels for the three layers. Backward, per group of K:
dx = inv_std * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)), dxhat = gamma * dy.
"""

from __future__ import annotations

import math

import numpy as np

from cnnrun.engine import ConfigError, Layer
from cnnrun.engine.options import bool_option, float_option, int_option, show

GROUP_KERNELS = ("group_norm_forward", "group_norm_backward", "channel_affine_forward", "channel_affine_backward")


class GroupwiseNorm(Layer):
    """The shared forward and backward; subclasses give the two views and the parameter shape."""

    kernels = GROUP_KERNELS
    affine = True

    def groups_view(self, shape) -> tuple[int, int, int]:
        """(A, K, B) for a batch of ``shape`` (batch axis included): normalize over K."""
        raise NotImplementedError

    def affine_view(self, shape) -> tuple[int, int, int]:
        """(P, Q, R) for a batch of ``shape``: parameter index q."""
        batch, channels = shape[0], shape[1]
        return batch, channels, math.prod(shape) // (batch * channels)

    def affine_shape(self, shape) -> tuple[int, ...]:
        """The shape of ``weight`` and ``bias`` for an input of ``shape`` (no batch)."""
        return (shape[0],)

    def parameter_shapes(self, shape):
        return {"weight": self.affine_shape(shape), "bias": self.affine_shape(shape)} if self.affine else {}

    def initialize(self, params, buffers, rng):
        if self.affine:
            params["weight"][...] = 1

    def forward(self, ctx, x):
        xhat, ctx.saved.stats = ctx.kernels.group_norm_forward(ctx, x.reshape(self.groups_view(x.shape)), self.eps)
        ctx.saved.xhat = xhat
        if not self.affine:
            return xhat.reshape(x.shape)
        view = self.affine_view(x.shape)
        weight, bias = (ctx.params[k].reshape(view[1]) for k in ("weight", "bias"))
        return ctx.kernels.channel_affine_forward(ctx, xhat.reshape(view), weight, bias).reshape(x.shape)

    def backward(self, ctx, grad):
        xhat, dxhat = ctx.saved.xhat, grad.reshape(ctx.saved.xhat.shape)
        if self.affine:
            view = self.affine_view(grad.shape)
            weight, grad_weight, grad_bias = (tree[k].reshape(view[1]) for tree, k in (
                (ctx.params, "weight"), (ctx.grads, "weight"), (ctx.grads, "bias")))
            dxhat = ctx.kernels.channel_affine_backward(ctx, grad.reshape(view), xhat.reshape(view), weight,
                                                        grad_weight, grad_bias).reshape(xhat.shape)
        return ctx.kernels.group_norm_backward(ctx, dxhat, xhat, ctx.saved.stats).reshape(grad.shape)


def onnx_normalize(graph, x: str, axes) -> str:
    """(x - mean) / sqrt(var + eps) in ONNX nodes, mean and biased var over ``axes`` (with the batch);
    ``graph.layer.eps``."""
    centered = graph.op("Sub", x, graph.reduce("ReduceMean", x, axes))
    variance = graph.reduce("ReduceMean", graph.op("Mul", centered, centered), axes)
    return graph.op("Div", centered, graph.op("Sqrt", graph.op("Add", variance, graph.scalar(graph.layer.eps))))


def onnx_affine(graph, y: str, per_channel: bool = True) -> str:
    """``y * weight + bias`` (the layer's parameters) in ONNX nodes, per channel ((C,) reshaped to (C, 1, ...))
    or, with ``per_channel`` false, broadcast as they are; ``y`` unchanged without them."""
    if not graph.layer.affine:
        return y
    rank = len(graph.input_shapes[0])
    weight, bias = (graph.param(k) for k in ("weight", "bias"))
    if per_channel:
        weight, bias = graph.per_channel(weight, rank), graph.per_channel(bias, rank)
    return graph.op("Add", graph.op("Mul", y, weight), bias)


def onnx_scale_bias(graph, channels: int) -> tuple[str, str]:
    """The layer's ``weight`` and ``bias``, or ones and zeros without them: the inputs ONNX's
    BatchNormalization, InstanceNormalization and LayerNormalization require."""
    if graph.layer.affine:
        return graph.param("weight"), graph.param("bias")
    return graph.constant([1.0] * channels), graph.constant([0.0] * channels)


def normalized_shape_option(value) -> tuple[int, ...]:
    """A positive integer or a non-empty list of them."""
    items = [value] if isinstance(value, int) and not isinstance(value, bool) else value
    if (not isinstance(items, (list, tuple)) or not items
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in items)):
        raise ConfigError(f"normalized_shape must be a positive integer or a non-empty list of them; got "
                          f"normalized_shape={show(value)}", key="normalized_shape")
    return tuple(items)


class LayerNorm(GroupwiseNorm):
    """y = (x - mean) / sqrt(var + eps) * gamma + beta, mean and biased var over the last
    len(normalized_shape) axes of each sample (which must equal ``normalized_shape``); gamma and beta
    have shape ``normalized_shape`` (``elementwise_affine``; 1 and 0). PyTorch: ``nn.LayerNorm(
    normalized_shape, eps, elementwise_affine)``.

    ``channels_first: true``: normalize over the channels C of a (C, ...) input at every position
    separately (ConvNeXt's ``LayerNorm(data_format="channels_first")``, i.e. ``nn.LayerNorm(C)`` applied
    to the channels-last permutation); ``normalized_shape`` must then be C. Shape: unchanged.
    """

    type_name = "layer_norm"

    def __init__(self, name, normalized_shape, eps=1e-5, elementwise_affine=True, channels_first=False):
        super().__init__(name)
        self.normalized_shape = normalized_shape_option(normalized_shape)
        self.eps = float_option(eps, "eps", low=0, low_open=True)
        self.affine = bool_option(elementwise_affine, "elementwise_affine")
        self.channels_first = bool_option(channels_first, "channels_first")
        if self.channels_first and len(self.normalized_shape) != 1:
            raise self.error(f"with channels_first, normalized_shape must be the number of channels; got "
                             f"normalized_shape={show(normalized_shape)}", key="normalized_shape")

    def output_shape(self, shape):
        expected = self.normalized_shape
        got = shape[:1] if self.channels_first else shape[len(shape) - len(expected):]
        if len(shape) < len(expected) or tuple(got) != expected:
            where = "channels" if self.channels_first else "last dimensions"
            raise self.error(f"normalized_shape {show(list(expected))} does not match the input's {where}; "
                             f"input shape {tuple(shape)}", key="normalized_shape")
        return shape

    def groups_view(self, shape):
        if self.channels_first:
            return self.affine_view(shape)
        size = math.prod(self.normalized_shape)
        return math.prod(shape) // size, size, 1

    def affine_view(self, shape):
        return super().affine_view(shape) if self.channels_first else self.groups_view(shape)

    def affine_shape(self, shape):
        return self.normalized_shape

    def to_onnx(self, graph, x):
        """ONNX ``LayerNormalization`` over the last axes from opset 17; before, and over the channels
        (``channels_first``), ReduceMean nodes and the affine map."""
        rank = len(graph.input_shapes[0])
        if self.channels_first:
            return onnx_affine(graph, onnx_normalize(graph, x, [1]))
        axes = list(range(rank + 1 - len(self.normalized_shape), rank + 1))
        if graph.opset < 17:
            return onnx_affine(graph, onnx_normalize(graph, x, axes), per_channel=False)
        if self.affine:
            scale, bias = graph.param("weight"), graph.param("bias")
        else:  # a bias of zeros rather than none: onnxruntime 1.32 crashes without one
            scale = graph.constant(np.ones(self.normalized_shape))
            bias = graph.constant(np.zeros(self.normalized_shape))
        return graph.op("LayerNormalization", x, scale, bias, axis=axes[0], epsilon=self.eps)


class GroupNorm(GroupwiseNorm):
    """The C channels of each sample split into ``num_groups`` groups of C / num_groups consecutive
    channels; y = (x - mean) / sqrt(var + eps) * gamma[c] + beta[c], mean and biased var over each
    group's channels and positions; gamma, beta (C,) (``affine``; 1 and 0). PyTorch:
    ``nn.GroupNorm(num_groups, C, eps, affine)``. Shape: unchanged.
    """

    type_name = "group_norm"

    def __init__(self, name, num_groups, eps=1e-5, affine=True):
        super().__init__(name)
        self.num_groups = int_option(num_groups, "num_groups")
        self.eps = float_option(eps, "eps", low=0, low_open=True)
        self.affine = bool_option(affine, "affine")

    def output_shape(self, shape):
        if shape[0] % self.num_groups:
            raise self.error(f"channels ({shape[0]}) must be divisible by num_groups ({self.num_groups}); "
                             f"input shape {tuple(shape)}", key="num_groups")
        return shape

    def groups_view(self, shape):
        groups = shape[0] * self.num_groups
        return groups, math.prod(shape) // groups, 1

    def to_onnx(self, graph, x):
        """Reshaped to (N, num_groups, -1), normalized over the last axis (ReduceMean nodes), reshaped
        back, then the per-channel affine map."""
        grouped = graph.reshape(x, [0, self.num_groups, -1])
        y = graph.reshape(onnx_normalize(graph, grouped, [2]), [-1, *graph.input_shapes[0]])
        return onnx_affine(graph, y)


class InstanceNorm(GroupwiseNorm):
    """y = (x - mean) / sqrt(var + eps) * gamma[c] + beta[c], mean and biased var over the positions
    of each sample's channel c of a (C, L) or (C, H, W) input; gamma, beta (C,) only with ``affine``
    (default false). ``track_running_stats`` (default false): buffers ``running_mean`` (0) and
    ``running_var`` (1) move in training by ``momentum`` towards the batch average of the instance
    statistics (variance unbiased), and evaluation normalizes with them (per channel, as batchnorm
    in evaluation). PyTorch: ``nn.InstanceNorm1d`` / ``nn.InstanceNorm2d(C, eps, momentum, affine,
    track_running_stats)``. Shape: unchanged.
    """

    type_name = "instance_norm"
    kernels = GROUP_KERNELS + ("instance_running_update", "batchnorm_forward", "batchnorm_backward")

    def __init__(self, name, eps=1e-5, momentum=0.1, affine=False, track_running_stats=False):
        super().__init__(name)
        self.eps = float_option(eps, "eps", low=0, low_open=True)
        self.momentum = float_option(momentum, "momentum", low=0, high=1)
        self.affine = bool_option(affine, "affine")
        self.track_running_stats = bool_option(track_running_stats, "track_running_stats")

    def output_shape(self, shape):
        if len(shape) < 2:
            raise self.error(f"expected a (C, L) or (C, H, W) input; got input shape {tuple(shape)}")
        return shape

    def buffer_shapes(self, shape):
        return {"running_mean": (shape[0],), "running_var": (shape[0],)} if self.track_running_stats else {}

    def initialize(self, params, buffers, rng):
        super().initialize(params, buffers, rng)
        if self.track_running_stats:
            buffers["running_var"][...] = 1

    def groups_view(self, shape):
        rows = shape[0] * shape[1]
        return rows, math.prod(shape) // rows, 1

    def forward(self, ctx, x):
        ctx.saved.running = self.track_running_stats and not ctx.training
        if ctx.saved.running:
            y, ctx.saved.xhat, ctx.saved.inv_std = ctx.kernels.batchnorm_forward(
                ctx, x, ctx.params.get("weight"), ctx.params.get("bias"), ctx.buffers["running_mean"],
                ctx.buffers["running_var"], self.eps, self.momentum, False)
            return y
        positions = math.prod(x.shape[2:])
        if positions == 1:
            raise self.error(f"expected more than 1 value per channel of each sample when using the input's "
                             f"statistics; got a batch of shape {x.shape}")
        y = super().forward(ctx, x)
        if self.track_running_stats:
            batch, channels = x.shape[0], x.shape[1]
            ctx.kernels.instance_running_update(ctx, ctx.buffers["running_mean"], ctx.buffers["running_var"],
                                                ctx.saved.stats.reshape(3, batch, channels), self.momentum,
                                                positions)
        return y

    def to_onnx(self, graph, x):
        """ONNX ``InstanceNormalization``, or ``BatchNormalization`` with the running statistics
        (``track_running_stats``)."""
        scale, bias = onnx_scale_bias(graph, graph.input_shapes[0][0])
        if self.track_running_stats:
            return graph.op("BatchNormalization", x, scale, bias, graph.param("running_mean"),
                            graph.param("running_var"), epsilon=self.eps)
        return graph.op("InstanceNormalization", x, scale, bias, epsilon=self.eps)

    def backward(self, ctx, grad):
        if ctx.saved.running:
            return ctx.kernels.batchnorm_backward(ctx, grad, ctx.saved.xhat, ctx.saved.inv_std,
                                                  ctx.params.get("weight"), False, ctx.grads.get("weight"),
                                                  ctx.grads.get("bias"))
        return super().backward(ctx, grad)
