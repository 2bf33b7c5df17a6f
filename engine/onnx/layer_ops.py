"""ONNX operators that become cnnrun layers with options or weights: convolutions, pooling,
normalization, linear layers and activations. Each converter takes the builder, the node's input
values (a :class:`Tensor`, a NumPy constant, or None for a missing optional input), its attributes
and the opset, and returns its output values."""

from __future__ import annotations

import math

import numpy as np

from .graph import Builder, Tensor, attr_float, onnx_padding


def tensor(b: Builder, value, what: str = "its first input") -> Tensor:
    if not isinstance(value, Tensor):
        raise b.error(f"{what} must be computed from the network input; cnnrun has no constant layers")
    return value


def const(b: Builder, value, what: str) -> np.ndarray:
    if isinstance(value, Tensor):
        raise b.error(f"{what} must be a constant (an initializer or folded from the input shape), "
                      f"not computed from the network input")
    return value


def spatial_of(b: Builder, x: Tensor, dims=(1, 2)) -> int:
    spatial = len(x.shape) - 1
    if spatial not in dims:
        layouts = " or ".join({1: "1-D (N, C, L)", 2: "2-D (N, C, H, W)"}[d] for d in dims)
        raise b.error(f"needs a {layouts} input; got shape {x.onnx_shape(b.batch)}")
    return spatial


def _ints(values, n=None):
    return [int(v) for v in values] if n is None else [int(v) for v in values][:n]


def _one(values):
    """A list of equal integers as one integer (the JSON examples' style)."""
    return values[0] if len(set(values)) == 1 else values


# -- convolutions --------------------------------------------------------------------------------
def conv(b, inputs, attrs, opset):
    x = b.plain(tensor(b, inputs[0]))
    spatial = spatial_of(b, x)
    weight = const(b, inputs[1], "the weight (input 2)")
    bias = const(b, inputs[2], "the bias (input 3)") if len(inputs) > 2 and inputs[2] is not None else None
    kernel = _ints(attrs.get("kernel_shape", weight.shape[2:]))
    options = dict(out_channels=int(weight.shape[0]), kernel_size=_one(kernel),
                   stride=_one(_ints(attrs.get("strides", [1] * spatial))),
                   padding=onnx_padding(b, attrs, spatial),
                   dilation=_one(_ints(attrs.get("dilations", [1] * spatial))),
                   groups=int(attrs.get("group", 1)), bias=bias is not None)
    params = {"weight": weight, **({"bias": bias} if bias is not None else {})}
    return [b.emit("conv2d" if spatial == 2 else "conv1d", [x], params=params, **options)]


def conv_transpose(b, inputs, attrs, opset):
    x = b.plain(tensor(b, inputs[0]))
    spatial_of(b, x, dims=(2,))
    weight = const(b, inputs[1], "the weight (input 2)")
    bias = const(b, inputs[2], "the bias (input 3)") if len(inputs) > 2 and inputs[2] is not None else None
    if "output_shape" in attrs or attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise b.error("output_shape and auto_pad are not supported; supported: pads, output_padding, strides, "
                      "dilations, group")
    pads = _ints(attrs.get("pads", [0] * 4))
    if pads[:2] != pads[2:]:
        raise b.error(f"pads must be the same before and after (PyTorch's padding); got pads={pads}")
    group = int(attrs.get("group", 1))
    options = dict(out_channels=int(weight.shape[1]) * group, kernel_size=_one(_ints(weight.shape[2:])),
                   stride=_one(_ints(attrs.get("strides", [1, 1]))), padding=_one(pads[:2]),
                   output_padding=_one(_ints(attrs.get("output_padding", [0, 0]))),
                   dilation=_one(_ints(attrs.get("dilations", [1, 1]))), groups=group, bias=bias is not None)
    params = {"weight": weight, **({"bias": bias} if bias is not None else {})}
    return [b.emit("conv_transpose2d", [x], params=params, **options)]


# -- pooling -------------------------------------------------------------------------------------
def _pool_options(b, x, attrs):
    spatial = spatial_of(b, x)
    kernel = _ints(attrs["kernel_shape"])
    return spatial, dict(kernel_size=_one(kernel), stride=_one(_ints(attrs.get("strides", [1] * spatial))),
                         padding=onnx_padding(b, attrs, spatial), ceil_mode=bool(attrs.get("ceil_mode", 0)))


def max_pool(b, inputs, attrs, opset):
    if len(b.node.output) > 1 and b.uses.get(b.node.output[1]):
        raise b.error("its Indices output is not supported; supported: the pooled values")
    x = b.plain(tensor(b, inputs[0]))
    spatial, options = _pool_options(b, x, attrs)
    dilation = _ints(attrs.get("dilations", [1] * spatial))
    return [b.emit(f"maxpool{spatial}d", [x], dilation=_one(dilation), **options)]


def average_pool(b, inputs, attrs, opset):
    x = b.plain(tensor(b, inputs[0]))
    spatial, options = _pool_options(b, x, attrs)
    if set(_ints(attrs.get("dilations", [1]))) != {1}:
        raise b.error(f"dilations {list(attrs['dilations'])} are not supported by average pooling; supported: 1")
    return [b.emit(f"avgpool{spatial}d", [x], count_include_pad=bool(attrs.get("count_include_pad", 0)),
                   **options)]


def global_pool(kind):
    def convert(b, inputs, attrs, opset):
        x = b.plain(tensor(b, inputs[0]))
        spatial_of(b, x)
        return [b.emit(f"global_{kind}pool", [x])]
    return convert


# -- normalization -------------------------------------------------------------------------------
def batch_norm(b, inputs, attrs, opset):
    if attrs.get("training_mode", 0) or any(b.uses.get(o) for o in b.node.output[1:]):
        raise b.error("training mode (training_mode=1, or its running statistics outputs) is not supported; "
                      "supported: inference BatchNormalization")
    x = b.plain(tensor(b, inputs[0]))
    scale, bias, mean, var = (const(b, v, what) for v, what in zip(inputs[1:5], ("scale", "B", "mean", "var")))
    momentum = 1.0 - attr_float(attrs.get("momentum", 0.9))  # ONNX keeps `momentum` of the old statistics
    return [b.emit("batchnorm", [x], params={"weight": scale, "bias": bias},
                   buffers={"running_mean": mean, "running_var": var},
                   eps=attr_float(attrs.get("epsilon", 1e-5)), momentum=round(momentum, 7))]


def lrn(b, inputs, attrs, opset):
    x = b.plain(tensor(b, inputs[0]))
    size = int(attrs["size"])
    if size % 2 == 0:
        raise b.error(f"an even size ({size}) sums other channels than PyTorch's LocalResponseNorm; "
                      f"supported: odd sizes")
    return [b.emit("lrn", [x], size=size, alpha=attr_float(attrs.get("alpha", 1e-4)),
                   beta=attr_float(attrs.get("beta", 0.75)), k=attr_float(attrs.get("bias", 1.0)))]


def layer_norm(b, inputs, attrs, opset):
    """LayerNormalization; without a scale (a ``cnnrun.Normalize`` without the affine map), a layer_norm
    without ``elementwise_affine``."""
    x = tensor(b, inputs[0])
    scale = None if inputs[1] is None else const(b, inputs[1], "the scale (input 2)")
    bias = const(b, inputs[2], "B (input 3)") if len(inputs) > 2 and inputs[2] is not None else 0.0
    eps = attr_float(attrs.get("epsilon", 1e-5))
    rank = len(x.shape) + 1
    axis = int(attrs.get("axis", -1)) % rank
    if any(b.uses.get(o) for o in b.node.output[1:]):
        raise b.error("its Mean and InvStdDev outputs are not supported; supported: Y")
    if x.perm is not None and axis == rank - 1 and x.cnnrun_axis(axis) == 1 and len(x.shape) > 1:
        channels = x.shape[0]  # channels-last LayerNorm over a channels-first tensor (ConvNeXt)
        weights = None if scale is None else (scale.reshape(channels),
                                              np.broadcast_to(bias, scale.shape).reshape(channels))
        y = _channels_first_norm(b, Tensor(x.layer, x.shape), weights, eps)
        return [Tensor(y.layer, y.shape, x.perm)]
    x = b.plain(x)
    if axis == 0:
        raise b.error("normalizing over the batch axis is not supported; supported: axis >= 1")
    normalized = list(x.shape[axis - 1:])
    try:
        params = {} if scale is None else {"weight": np.broadcast_to(scale, normalized),
                                           "bias": np.broadcast_to(bias, normalized)}
    except ValueError:
        raise b.error(f"a scale of shape {np.shape(scale)} or bias of shape {np.shape(bias)} does not fit the "
                      f"normalized axes {normalized}") from None
    return [b.emit("layer_norm", [x], params=params, normalized_shape=_one(normalized) if len(normalized) == 1
                   else normalized, eps=eps, elementwise_affine=scale is not None)]


def _channels_first_norm(b, x: Tensor, weights, eps) -> Tensor:
    """A layer_norm over the channels of ``x`` at each position (``channels_first``), with ``weights``
    (scale and bias, one per channel) or None."""
    params = {} if weights is None else dict(zip(("weight", "bias"), weights))
    return b.emit("layer_norm", [x], params=params, normalized_shape=x.shape[0], eps=eps, channels_first=True,
                  elementwise_affine=weights is not None)


def normalize(b, inputs, attrs, opset):
    """``cnnrun.Normalize`` (:func:`~.patterns.fuse_patterns`): (x - mean) / sqrt(var + eps) over ``axes``
    and the affine map: over the last axes a layer_norm, over the channels one with ``channels_first``,
    over each of ``groups`` groups of channels (reshaped to (N, groups, -1) and back) a group_norm, over
    all axes but the channels a batchnorm without running statistics."""
    x = tensor(b, inputs[0])
    rank = len(x.shape) + 1
    axes = sorted(int(a) % rank for a in attrs["axes"])
    if "groups" in attrs:
        back = list(attrs["shape"])
        back = [x.onnx_shape(b.batch)[i] if d == 0 else d for i, d in enumerate(back)]
        if len(back) != rank or back[1:] != list(x.onnx_shape(b.batch)[1:]):
            raise b.error(f"the grouped values are reshaped to {attrs['shape']}, not back to the input's shape "
                          f"{x.onnx_shape(b.batch)}; supported: a group normalization")
        return group_norm(b, inputs, {"num_groups": attrs["groups"], "epsilon": attrs["epsilon"]}, opset)
    if axes == list(range(axes[0], rank)) and axes[0] > 0:
        return layer_norm(b, inputs, {"axis": axes[0], "epsilon": attrs["epsilon"]}, opset)
    batch = axes == [0, *range(2, rank)]
    if not (batch or axes == [1] and rank >= 3):
        raise b.error(f"normalizing over axes {axes} of a rank-{rank} input is not supported; supported: the last "
                      f"axes (layer_norm), the channels (layer_norm with channels_first), groups of channels, "
                      f"all but the channels (batchnorm without running statistics)")
    x, weights, eps = b.plain(x), None, attr_float(attrs["epsilon"])
    if inputs[1] is not None:
        weights = [b.per_channel(x, const(b, v, what)) for v, what in zip(inputs[1:], ("the scale", "the bias"))]
        if any(w is None for w in weights):
            raise b.error(f"a scale of shape {np.shape(inputs[1])} or bias of shape {np.shape(inputs[2])} is not "
                          f"one per channel; supported: (C,), (C, 1, 1)")
    if batch:  # the batch's statistics in inference too
        params = {} if weights is None else dict(zip(("weight", "bias"), weights))
        return [b.emit("batchnorm", [x], params=params, eps=eps, affine=weights is not None,
                       track_running_stats=False)]
    return [_channels_first_norm(b, x, weights, eps)]


def instance_norm(b, inputs, attrs, opset):
    x = b.plain(tensor(b, inputs[0]))
    spatial_of(b, x)
    scale, bias = const(b, inputs[1], "the scale"), const(b, inputs[2], "B")
    return [b.emit("instance_norm", [x], params={"weight": scale, "bias": bias},
                   eps=attr_float(attrs.get("epsilon", 1e-5)), affine=True)]


def group_norm(b, inputs, attrs, opset):
    """GroupNormalization: scale and bias per channel (opset 21), or per group (opset 18: repeated over
    each group's channels); without them (a ``cnnrun.Normalize``), a group_norm without ``affine``."""
    x = b.plain(tensor(b, inputs[0]))
    groups, channels = int(attrs["num_groups"]), x.shape[0]
    params = {}
    if inputs[1] is not None:
        scale, bias = (np.asarray(const(b, v, what), np.float32).reshape(-1) for v, what in
                       zip(inputs[1:3], ("the scale", "the bias")))
        if scale.size == groups != channels:
            scale, bias = (np.repeat(v, channels // groups) for v in (scale, bias))
        params = {"weight": scale, "bias": bias}
    return [b.emit("group_norm", [x], params=params, num_groups=groups, eps=attr_float(attrs.get("epsilon", 1e-5)),
                   affine=bool(params))]


# -- linear layers -------------------------------------------------------------------------------
def gemm(b, inputs, attrs, opset):
    x = b.plain(tensor(b, inputs[0]))
    if attrs.get("transA", 0) or len(x.shape) != 1:
        raise b.error("only A of shape (N, features) without transA is supported (a linear layer)")
    weight = const(b, inputs[1], "B (input 2)").astype(np.float32)
    weight = (weight if attrs.get("transB", 0) else weight.T) * attr_float(attrs.get("alpha", 1.0))
    params = {"weight": weight}
    if len(inputs) > 2 and inputs[2] is not None:
        c = const(b, inputs[2], "C (input 3)") * attr_float(attrs.get("beta", 1.0))
        if c.size not in (1, weight.shape[0]) or c.ndim > 2 or (c.ndim == 2 and c.shape[0] != 1):
            raise b.error(f"C of shape {c.shape} is not one bias per output; supported: (M,), (1, M), a scalar")
        params["bias"] = np.broadcast_to(c.reshape(-1), (weight.shape[0],))
    return [b.emit("linear", [x], params=params, out_features=int(weight.shape[0]), bias="bias" in params)]


def matmul(b, inputs, attrs, opset):
    x = tensor(b, inputs[0], "A (input 1)")
    weight = const(b, inputs[1], "B (input 2): cnnrun multiplies by weights only, and B")
    if weight.ndim != 2:
        raise b.error(f"B must be a matrix (K, M); got shape {weight.shape}")
    rank = len(x.shape) + 1
    if rank == 2:
        x = b.plain(x)
        return [b.emit("linear", [x], params={"weight": weight.T}, out_features=int(weight.shape[1]), bias=False)]
    if x.cnnrun_axis(-1) != 1:
        raise b.error(f"a MatMul over the last axis of an input of shape {x.onnx_shape(b.batch)} is supported only "
                      "when that axis holds the channels (a channels-last Linear, as ConvNeXt's)")
    spatial = rank - 2
    kernel = weight.T.reshape(*weight.T.shape, *(1,) * spatial)
    y = b.emit("conv2d" if spatial == 2 else "conv1d", [Tensor(x.layer, x.shape)], params={"weight": kernel},
               out_channels=int(weight.shape[1]), kernel_size=1, bias=False)  # a 1x1 conv: Linear on channels
    return [Tensor(y.layer, y.shape, x.perm)]


# -- activations ---------------------------------------------------------------------------------
def unary(type_name, **fixed):
    """An activation applied element-wise: the input's axis order is kept (no permute needed)."""
    def convert(b, inputs, attrs, opset):
        x = tensor(b, inputs[0])
        options = {key: (value(attrs) if callable(value) else value) for key, value in fixed.items()}
        y = b.emit(type_name, [Tensor(x.layer, x.shape)], **options)
        return [Tensor(y.layer, y.shape, x.perm)]
    return convert


def selu(b, inputs, attrs, opset):
    alpha, gamma = attr_float(attrs.get("alpha", 1.6732632)), attr_float(attrs.get("gamma", 1.0507010))
    if not (math.isclose(alpha, 1.6732632, rel_tol=1e-6) and math.isclose(gamma, 1.0507010, rel_tol=1e-6)):
        raise b.error(f"alpha={alpha}, gamma={gamma} are not supported; supported: the SELU constants")
    return unary("selu")(b, inputs, attrs, opset)


def hard_sigmoid(b, inputs, attrs, opset):
    alpha, beta = attr_float(attrs.get("alpha", 0.2)), attr_float(attrs.get("beta", 0.5))
    if not (math.isclose(alpha, 1 / 6, rel_tol=1e-5) and math.isclose(beta, 0.5)):
        raise b.error(f"alpha={alpha:g}, beta={beta:g} are not supported; supported: alpha 1/6, beta 0.5 "
                      f"(PyTorch's Hardsigmoid)")
    return unary("hardsigmoid")(b, inputs, attrs, opset)


def clip(b, inputs, attrs, opset):
    if opset < 11:
        low, high = attrs.get("min"), attrs.get("max")
    else:
        low, high = (None if len(inputs) <= i or inputs[i] is None else const(b, inputs[i], what)
                     for i, what in ((1, "min"), (2, "max")))
    low, high = (None if v is None else attr_float(np.asarray(v).reshape(-1)[0]) for v in (low, high))
    if (low, high) == (0.0, 6.0):  # PyTorch's ReLU6 (its gradient is 0 at the bounds, as ReLU6's)
        return unary("relu6")(b, inputs, attrs, opset)
    return unary("clip", min=low, max=high)(b, inputs, attrs, opset)


def prelu(b, inputs, attrs, opset):
    x = b.plain(tensor(b, inputs[0]))
    slope = np.asarray(const(b, inputs[1], "the slope (input 2)"), np.float32)
    per_channel = b.per_channel(x, slope)
    if per_channel is None:
        raise b.error(f"a slope of shape {slope.shape} is not one per channel; supported: a scalar, (C,), (C, 1, 1)")
    count = 1 if slope.size == 1 else x.shape[0]
    return [b.emit("prelu", [x], params={"weight": per_channel[:count]}, num_parameters=count)]


def softmax(type_name):
    def convert(b, inputs, attrs, opset):
        x = tensor(b, inputs[0])
        rank = len(x.shape) + 1
        axis = int(attrs.get("axis", -1 if opset >= 13 else 1)) % rank
        if opset < 13 and axis != rank - 1:
            raise b.error(f"before opset 13 a {b.node.op_type} over axis {axis} of a rank-{rank} input works on "
                          f"the flattened axes {axis}.. ; supported: the last axis")
        y = b.emit(type_name, [Tensor(x.layer, x.shape)], axis=x.cnnrun_axis(axis))
        return [Tensor(y.layer, y.shape, x.perm)]
    return convert


def softplus(b, inputs, attrs, opset):
    """``cnnrun.Softplus`` (:func:`~.patterns.fuse_patterns`): softplus with ``beta`` and ``threshold``."""
    options = {key: attr_float(attrs[key]) for key in ("beta", "threshold")}
    return unary("softplus", **options)(b, inputs, attrs, opset)


def gelu(b, inputs, attrs, opset):
    approximate = attrs.get("approximate", "none")
    return unary("gelu", approximate=approximate.decode() if isinstance(approximate, bytes) else approximate)(
        b, inputs, attrs, opset)


OPS = {
    "Conv": conv, "ConvTranspose": conv_transpose, "MaxPool": max_pool, "AveragePool": average_pool,
    "GlobalAveragePool": global_pool("avg"), "GlobalMaxPool": global_pool("max"),
    "BatchNormalization": batch_norm, "LRN": lrn, "LayerNormalization": layer_norm,
    "InstanceNormalization": instance_norm, "GroupNormalization": group_norm, "Gemm": gemm, "MatMul": matmul,
    "Relu": unary("relu"), "Sigmoid": unary("sigmoid"), "Tanh": unary("tanh"), "Softsign": unary("softsign"),
    "LeakyRelu": unary("leaky_relu", negative_slope=lambda a: attr_float(a.get("alpha", 0.01))),
    "Elu": unary("elu", alpha=lambda a: attr_float(a.get("alpha", 1.0))),
    "Celu": unary("celu", alpha=lambda a: attr_float(a.get("alpha", 1.0))),
    "Selu": selu, "Softplus": unary("softplus"), "HardSigmoid": hard_sigmoid, "HardSwish": unary("hardswish"),
    "Mish": unary("mish"), "Clip": clip, "PRelu": prelu, "Gelu": gelu,
    "Softmax": softmax("softmax"), "LogSoftmax": softmax("log_softmax"),
}
