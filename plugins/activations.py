"""Element-wise activations and softmax (NumPy; memory-bound, so no CPU kernels of their own).

The CUDA kernels are in :mod:`cnnrun.plugins.activations_cuda`.
"""

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

    def forward_cuda(self, ctx, x):
        from . import activations_cuda

        ctx.saved.x = x
        y = ctx.backend.empty(x.shape, x.dtype)
        activations_cuda.relu_forward(x, y)
        return y

    def backward_cuda(self, ctx, grad):
        from . import activations_cuda

        dx = ctx.backend.empty(grad.shape, grad.dtype)
        activations_cuda.relu_backward(ctx.saved.x, grad, dx)
        return dx


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

    def forward_cuda(self, ctx, x):
        from . import activations_cuda

        ctx.saved.x = x
        y = ctx.backend.empty(x.shape, x.dtype)
        activations_cuda.leaky_relu_forward(x, self.negative_slope, y)
        return y

    def backward_cuda(self, ctx, grad):
        from . import activations_cuda

        dx = ctx.backend.empty(grad.shape, grad.dtype)
        activations_cuda.leaky_relu_backward(ctx.saved.x, grad, self.negative_slope, dx)
        return dx


class Sigmoid(Layer):
    """y = 1 / (1 + exp(-x)); dy/dx = y (1 - y). PyTorch: ``nn.Sigmoid``."""

    type_name = "sigmoid"

    def forward(self, ctx, x):
        y = ctx.saved.y = np.exp(-np.logaddexp(x.dtype.type(0), -x))  # no overflow for x << 0
        return y

    def backward(self, ctx, grad):
        y = ctx.saved.y
        return grad * y * (1 - y)

    def forward_cuda(self, ctx, x):
        from . import activations_cuda

        y = ctx.saved.y = ctx.backend.empty(x.shape, x.dtype)
        activations_cuda.sigmoid_forward(x, y)
        return y

    def backward_cuda(self, ctx, grad):
        from . import activations_cuda

        dx = ctx.backend.empty(grad.shape, grad.dtype)
        activations_cuda.sigmoid_backward(ctx.saved.y, grad, dx)
        return dx


class Tanh(Layer):
    """y = tanh(x); dy/dx = 1 - y^2. PyTorch: ``nn.Tanh``."""

    type_name = "tanh"

    def forward(self, ctx, x):
        y = ctx.saved.y = np.tanh(x)
        return y

    def backward(self, ctx, grad):
        return grad * (1 - ctx.saved.y ** 2)

    def forward_cuda(self, ctx, x):
        from . import activations_cuda

        y = ctx.saved.y = ctx.backend.empty(x.shape, x.dtype)
        activations_cuda.tanh_forward(x, y)
        return y

    def backward_cuda(self, ctx, grad):
        from . import activations_cuda

        dx = ctx.backend.empty(grad.shape, grad.dtype)
        activations_cuda.tanh_backward(ctx.saved.y, grad, dx)
        return dx


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

    def forward_cuda(self, ctx, x):
        from . import activations_cuda

        y = ctx.saved.y = ctx.backend.empty(x.shape, x.dtype)
        activations_cuda.softmax_forward(x, y)
        return y

    def backward_cuda(self, ctx, grad):
        from . import activations_cuda

        dx = ctx.backend.empty(grad.shape, grad.dtype)
        activations_cuda.softmax_backward(ctx.saved.y, grad, dx)
        return dx


@hookimpl
def cnnrun_register_layers(register):
    for layer in (ReLU, LeakyReLU, Sigmoid, Tanh, Softmax):
        register(layer)
