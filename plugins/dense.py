"""Flatten and fully connected layers (NumPy: the work is one BLAS matrix product)."""

from __future__ import annotations

import numpy as np

from cnnrun.engine import Layer, hookimpl
from cnnrun.engine.layer import uniform_fan_in_
from cnnrun.engine.options import bool_option, int_option


class Flatten(Layer):
    """Every sample to one vector, in C order; backward reshapes back. PyTorch: ``nn.Flatten()``.

    Shape: (C, H, W) or (C, L) -> (C*H*W,) or (C*L,); (F,) stays (F,).
    """

    type_name = "flatten"

    def output_shape(self, shape):
        return (int(np.prod(shape)),)

    def forward(self, ctx, x):
        ctx.saved.shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, ctx, grad):
        return grad.reshape(ctx.saved.shape)


class Linear(Layer):
    """y = x W^T + b, W of shape (out_features, in_features). PyTorch: ``nn.Linear(in, out, bias)``.

    Shape: (in_features,) -> (out_features,); in_features is read from the input, which must be
    1-D (put a ``flatten`` layer after a conv). Init: U(-1/sqrt(in_features), 1/sqrt(in_features)).
    Backward: dx = dy W, dW = dy^T x, db = sum_n dy.
    """

    type_name = "linear"

    def __init__(self, name, out_features, bias=True):
        super().__init__(name)
        self.out_features = int_option(out_features, "out_features")
        self.bias = bool_option(bias, "bias")

    def output_shape(self, shape):
        if len(shape) != 1:
            raise self.error(f"expects a 1-D input (in_features,); got input shape {shape}: "
                             f'add a "flatten" layer first')
        return (self.out_features,)

    def parameter_shapes(self, shape):
        shapes = {"weight": (self.out_features, shape[0])}
        if self.bias:
            shapes["bias"] = (self.out_features,)
        return shapes

    def initialize(self, params, buffers, rng):
        fan_in = params["weight"].shape[1]
        for array in params.values():  # weight first, then bias, as PyTorch draws them
            uniform_fan_in_(array, fan_in, rng)

    def macs(self, shape):
        return shape[0] * self.out_features

    def forward(self, ctx, x):
        ctx.saved.x = x
        y = x @ ctx.params["weight"].T
        if self.bias:
            y += ctx.params["bias"]
        return y

    def backward(self, ctx, grad):
        np.matmul(grad.T, ctx.saved.x, out=ctx.grads["weight"])
        if self.bias:
            np.sum(grad, axis=0, out=ctx.grads["bias"])
        return grad @ ctx.params["weight"]


@hookimpl
def cnnrun_register_layers(register):
    for layer in (Flatten, Linear):
        register(layer)
