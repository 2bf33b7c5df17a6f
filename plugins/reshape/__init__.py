"""Layers that only change the shape of their input: flatten (no kernels: a reshape is a view on
every device)."""

from __future__ import annotations

import math

from cnnrun.engine import Layer, hookimpl


class Flatten(Layer):
    """Every sample to one vector, in C order; backward reshapes back. PyTorch: ``nn.Flatten()``.

    Shape: (C, H, W) or (C, L) -> (C*H*W,) or (C*L,); (F,) stays (F,).
    """

    type_name = "flatten"
    kernels = ()  # reshapes of NumPy and device arrays alike

    def output_shape(self, shape):
        return (math.prod(shape),)

    def forward(self, ctx, x):
        ctx.saved.shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, ctx, grad):
        return grad.reshape(ctx.saved.shape)


@hookimpl
def cnnrun_register_layers(register):
    register(Flatten)
