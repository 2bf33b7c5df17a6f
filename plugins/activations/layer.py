"""Element-wise activations and softmax: the math once, the kernels from the device (:mod:`.cpu`, :mod:`.cuda`)."""

from __future__ import annotations

from cnnrun.engine import Layer
from cnnrun.engine.options import float_option


class ReLU(Layer):
    """y = max(x, 0); dy/dx = 1 where x > 0, else 0. PyTorch: ``nn.ReLU``."""

    type_name = "relu"
    kernels = ("relu_forward", "relu_backward")

    def forward(self, ctx, x):
        ctx.saved.x = x
        return ctx.kernels.relu_forward(x)

    def backward(self, ctx, grad):
        return ctx.kernels.relu_backward(ctx.saved.x, grad)


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


class Sigmoid(Layer):
    """y = 1 / (1 + exp(-x)); dy/dx = y (1 - y). PyTorch: ``nn.Sigmoid``."""

    type_name = "sigmoid"
    kernels = ("sigmoid_forward", "sigmoid_backward")

    def forward(self, ctx, x):
        y = ctx.saved.y = ctx.kernels.sigmoid_forward(x)
        return y

    def backward(self, ctx, grad):
        return ctx.kernels.sigmoid_backward(ctx.saved.y, grad)


class Tanh(Layer):
    """y = tanh(x); dy/dx = 1 - y^2. PyTorch: ``nn.Tanh``."""

    type_name = "tanh"
    kernels = ("tanh_forward", "tanh_backward")

    def forward(self, ctx, x):
        y = ctx.saved.y = ctx.kernels.tanh_forward(x)
        return y

    def backward(self, ctx, grad):
        return ctx.kernels.tanh_backward(ctx.saved.y, grad)


class Softmax(Layer):
    """y_c = exp(x_c) / sum_k exp(x_k) over the channel axis (axis 1 of the batch).

    dx = y * (dy - sum_c(dy * y)). PyTorch: ``nn.Softmax(dim=1)``. As the last layer, cross-entropy
    is computed from its probabilities, with the gradient (p - onehot) / N of its input
    (``fused_loss``), so training skips its backward.
    """

    type_name = "softmax"
    kernels = ("softmax_forward", "softmax_backward")
    fused_loss = {"cross_entropy": "cross_entropy_from_probabilities"}

    def forward(self, ctx, x):
        y = ctx.saved.y = ctx.kernels.softmax_forward(x)
        return y

    def backward(self, ctx, grad):
        return ctx.kernels.softmax_backward(ctx.saved.y, grad)
