"""Element-wise activations and softmax (NumPy; memory-bound, so no kernels of their own)."""

from __future__ import annotations

import numpy as np

from cnnrun.engine import Layer, hookimpl
from cnnrun.engine.options import float_option


class ReLU(Layer):
    """y = max(x, 0); dy/dx = 1 where x > 0, else 0. PyTorch: ``nn.ReLU``."""

    type_name = "relu"

    def forward(self, ctx, x):
        ctx.saved.positive = x > 0
        return np.maximum(x, 0)

    def backward(self, ctx, grad):
        return grad * ctx.saved.positive


class LeakyReLU(Layer):
    """y = x if x > 0 else negative_slope * x. PyTorch: ``nn.LeakyReLU(negative_slope=0.01)``."""

    type_name = "leaky_relu"

    def __init__(self, name, negative_slope=0.01):
        super().__init__(name)
        self.negative_slope = float_option(negative_slope, "negative_slope")

    def forward(self, ctx, x):
        positive = ctx.saved.positive = x > 0
        return np.where(positive, x, x * x.dtype.type(self.negative_slope))

    def backward(self, ctx, grad):
        return np.where(ctx.saved.positive, grad, grad * grad.dtype.type(self.negative_slope))


class Sigmoid(Layer):
    """y = 1 / (1 + exp(-x)); dy/dx = y (1 - y). PyTorch: ``nn.Sigmoid``."""

    type_name = "sigmoid"

    def forward(self, ctx, x):
        y = ctx.saved.y = np.exp(-np.logaddexp(x.dtype.type(0), -x))  # no overflow for x << 0
        return y

    def backward(self, ctx, grad):
        y = ctx.saved.y
        return grad * y * (1 - y)


class Tanh(Layer):
    """y = tanh(x); dy/dx = 1 - y^2. PyTorch: ``nn.Tanh``."""

    type_name = "tanh"

    def forward(self, ctx, x):
        y = ctx.saved.y = np.tanh(x)
        return y

    def backward(self, ctx, grad):
        return grad * (1 - ctx.saved.y ** 2)


class Softmax(Layer):
    """y_c = exp(x_c) / sum_k exp(x_k) over the channel axis (axis 1 of the batch).

    dx = y * (dy - sum_c(dy * y)). PyTorch: ``nn.Softmax(dim=1)``.
    """

    type_name = "softmax"

    def forward(self, ctx, x):
        e = np.exp(x - x.max(axis=1, keepdims=True))
        y = ctx.saved.y = e / e.sum(axis=1, keepdims=True)
        return y

    def backward(self, ctx, grad):
        y = ctx.saved.y
        return y * (grad - np.sum(grad * y, axis=1, keepdims=True))


@hookimpl
def cnnrun_register_layers(register):
    for layer in (ReLU, LeakyReLU, Sigmoid, Tanh, Softmax):
        register(layer)
