"""relu, leaky_relu, sigmoid, tanh, softmax, log_softmax, prelu: the math once, the kernels from the
device (:mod:`.cpu`, :mod:`.cuda`)."""

from __future__ import annotations

from typing import ClassVar

from cnnrun.engine import ConfigError, Layer
from cnnrun.engine.options import float_option, int_option, show


class ReLU(Layer):
    """y = max(x, 0); dy/dx = 1 where x > 0, else 0. PyTorch: ``nn.ReLU``."""

    type_name = "relu"
    kernels = ("relu_forward", "relu_backward")
    epilogue = "relu"

    def forward(self, ctx, x):
        ctx.saved.x = x
        return ctx.kernels.relu_forward(x)

    def backward(self, ctx, grad):
        return ctx.kernels.relu_backward(ctx.saved.x, grad)

    def to_onnx(self, graph, x):
        """ONNX ``Relu``."""
        return graph.op("Relu", x)


class LeakyReLU(Layer):
    """y = x if x > 0 else negative_slope * x. PyTorch: ``nn.LeakyReLU(negative_slope=0.01)``."""

    type_name = "leaky_relu"
    kernels = ("leaky_relu_forward", "leaky_relu_backward")

    def __init__(self, name, negative_slope=0.01):
        super().__init__(name)
        self.negative_slope = float_option(negative_slope, "negative_slope")

    def forward(self, ctx, x):
        ctx.saved.x = x
        return ctx.kernels.leaky_relu_forward(x, self.negative_slope)

    def backward(self, ctx, grad):
        return ctx.kernels.leaky_relu_backward(ctx.saved.x, grad, self.negative_slope)

    def to_onnx(self, graph, x):
        """ONNX ``LeakyRelu``."""
        return graph.op("LeakyRelu", x, alpha=self.negative_slope)


class Sigmoid(Layer):
    """y = 1 / (1 + exp(-x)); dy/dx = y (1 - y). PyTorch: ``nn.Sigmoid``."""

    type_name = "sigmoid"
    kernels = ("sigmoid_forward", "sigmoid_backward")

    def forward(self, ctx, x):
        y = ctx.saved.y = ctx.kernels.sigmoid_forward(x)
        return y

    def backward(self, ctx, grad):
        return ctx.kernels.sigmoid_backward(ctx.saved.y, grad)

    def to_onnx(self, graph, x):
        """ONNX ``Sigmoid``."""
        return graph.op("Sigmoid", x)


class Tanh(Layer):
    """y = tanh(x); dy/dx = 1 - y^2. PyTorch: ``nn.Tanh``."""

    type_name = "tanh"
    kernels = ("tanh_forward", "tanh_backward")

    def forward(self, ctx, x):
        y = ctx.saved.y = ctx.kernels.tanh_forward(x)
        return y

    def backward(self, ctx, grad):
        return ctx.kernels.tanh_backward(ctx.saved.y, grad)

    def to_onnx(self, graph, x):
        """ONNX ``Tanh``."""
        return graph.op("Tanh", x)


class _OverAxis(Layer):
    """Base of softmax and log_softmax: normalized over ``axis``, PyTorch's ``dim`` counting the
    batch as axis 0 (1: the channels, the default; -1: the last axis). Subclasses set ``op``."""

    op: ClassVar[str]

    def __init__(self, name, axis=1):
        super().__init__(name)
        if isinstance(axis, bool) or not isinstance(axis, int):
            raise ConfigError(f"axis must be an integer; got axis={show(axis)}", key="axis")
        self.axis = axis

    def output_shape(self, shape):
        ndim = len(shape) + 1
        if not (1 <= self.axis < ndim or -ndim < self.axis <= -1):
            raise self.error(f"axis must be one of the input's axes, 1 to {ndim - 1} or -{ndim - 1} to -1 "
                             f"(0 is the batch); got axis={self.axis} for input shape {shape}", key="axis")
        return shape

    def forward(self, ctx, x):
        y = ctx.saved.y = getattr(ctx.kernels, f"{self.op}_forward")(x, self.axis % x.ndim)
        return y

    def backward(self, ctx, grad):
        y = ctx.saved.y
        return getattr(ctx.kernels, f"{self.op}_backward")(y, grad, self.axis % y.ndim)

    def to_onnx(self, graph, x):
        """ONNX ``Softmax`` / ``LogSoftmax`` over ``axis`` (opset 13's per-axis semantics)."""
        return graph.op(self.onnx_op, x, axis=self.axis)


class Softmax(_OverAxis):
    """y_k = exp(x_k) / sum_j exp(x_j) over ``axis`` (default 1: the channels).

    dx = y * (dy - sum_k(dy * y)). PyTorch: ``nn.Softmax(dim=axis)``. As the last layer on a (classes,)
    input, cross-entropy is computed from its probabilities, with the gradient (p - onehot) / N of its
    input (``fused_loss``), so training skips its backward; over other shapes it has no fused loss.
    """

    type_name = "softmax"
    op, onnx_op = "softmax", "Softmax"
    kernels = ("softmax_forward", "softmax_backward")
    fused_loss = {"cross_entropy": "cross_entropy_from_probabilities"}

    def output_shape(self, shape):
        shape = super().output_shape(shape)
        if len(shape) != 1:
            self.fused_loss = {}
        return shape


class LogSoftmax(_OverAxis):
    """y_k = x_k - log(sum_j exp(x_j)) over ``axis`` (default 1), computed as x - m - log(sum exp(x - m)),
    m the maximum. dx = dy - exp(y) * sum_k(dy). PyTorch: ``nn.LogSoftmax(dim=axis)``."""

    type_name = "log_softmax"
    op, onnx_op = "log_softmax", "LogSoftmax"
    kernels = ("log_softmax_forward", "log_softmax_backward")


class PReLU(Layer):
    """y = x if x > 0 else weight[c] * x, with a trained slope per channel c (axis 1), or one for all.

    ``weight`` has shape (num_parameters,): 1, or the channel count (C of (C, H, W) or (C, L), the
    features of (F,)); it starts at ``init``. dx = dy where x > 0, else weight[c] * dy;
    dweight[c] = the sum of dy * x where x <= 0. PyTorch: ``nn.PReLU(num_parameters=1, init=0.25)``.
    """

    type_name = "prelu"
    kernels = ("prelu_forward", "prelu_backward")

    def __init__(self, name, num_parameters=1, init=0.25):
        super().__init__(name)
        self.num_parameters = int_option(num_parameters, "num_parameters")
        self.init = float_option(init, "init")

    def output_shape(self, shape):
        if self.num_parameters not in (1, shape[0]):
            raise self.error(f"num_parameters must be 1 or the channel count ({shape[0]}) of input shape "
                             f"{shape}; got num_parameters={self.num_parameters}", key="num_parameters")
        return shape

    def parameter_shapes(self, shape):
        return {"weight": (self.num_parameters,)}

    def initialize(self, params, buffers, rng):
        params["weight"][...] = self.init

    def forward(self, ctx, x):
        ctx.saved.x = x
        return ctx.kernels.prelu_forward(x, ctx.params["weight"])

    def backward(self, ctx, grad):
        return ctx.kernels.prelu_backward(ctx.saved.x, ctx.params["weight"], grad, ctx.grads["weight"])

    def to_onnx(self, graph, x):
        """ONNX ``PRelu``, the slope reshaped to (C, 1, ...) to broadcast along the channels."""
        slope = graph.param("weight")
        return graph.op("PRelu", x, graph.per_channel(slope, len(graph.input_shapes[0])))
