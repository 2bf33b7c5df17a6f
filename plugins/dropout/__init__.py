"""Dropout (kernels in :mod:`.cpu`, :mod:`.cuda`)."""

from __future__ import annotations

from cnnrun.engine import Layer, hookimpl
from cnnrun.engine.options import float_option


class Dropout(Layer):
    """Inverted dropout: when training, y = x * keep / (1 - p) with keep ~ Bernoulli(1 - p) drawn
    from ``ctx.rng`` (on CUDA from a seed drawn from it); identity in eval. Backward multiplies by
    the same keep / (1 - p). PyTorch: ``nn.Dropout(p=0.5)``. Shape: unchanged.
    """

    type_name = "dropout"
    kernels = ("dropout_forward", "dropout_backward")

    def __init__(self, name, p=0.5):
        super().__init__(name)
        self.p = float_option(p, "p", low=0, high=1, high_open=True)

    def forward(self, ctx, x):
        if not ctx.training or self.p == 0:
            ctx.saved.mask = None
            return x
        y, ctx.saved.mask = ctx.kernels.dropout_forward(ctx, x, self.p)
        return y

    def backward(self, ctx, grad):
        return grad if ctx.saved.mask is None else ctx.kernels.dropout_backward(grad, ctx.saved.mask)


@hookimpl
def cnnrun_register_layers(register):
    register(Dropout)


@hookimpl
def cnnrun_register_kernels(register):
    register("cpu", "cnnrun.plugins.dropout.cpu")
    register("cuda", "cnnrun.plugins.dropout.cuda")
