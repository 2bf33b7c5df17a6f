"""An example cnnrun plugin: the swish activation and a trained per-channel scale.

cnnrun finds it through the entry point declared in pyproject.toml (group ``cnnrun``) once it is
installed (``pip install -e .``); docs/plugins.md walks through it. ``swish`` computes through
kernels, on the CPU (:mod:`cnnrun_swish_cpu`) and on CUDA GPUs (:mod:`cnnrun_swish_cuda`);
``channel_scale`` computes with NumPy itself, so it runs on the CPU only. ``swish`` exports to ONNX
(``to_onnx``); ``channel_scale`` does not, so ``cnnrun export`` refuses a network that has one.
"""

from __future__ import annotations

import numpy as np

from cnnrun.engine import Layer, hookimpl
from cnnrun.engine.options import float_option


class Swish(Layer):
    """y = x * s with s = sigmoid(beta * x); dy/dx = s + beta * x * s * (1 - s).

    No parameters; ``beta`` > 0. Shape: output = input.
    PyTorch: ``x * torch.sigmoid(beta * x)`` (``nn.SiLU`` for beta = 1).
    """

    type_name = "swish"
    kernels = ("swish_forward", "swish_backward")

    def __init__(self, name, beta=1.0):
        super().__init__(name)
        self.beta = float_option(beta, "beta", low=0, low_open=True)

    def forward(self, ctx, x):
        y, s = ctx.kernels.swish_forward(x, self.beta)
        ctx.saved.x, ctx.saved.s = x, s
        return y

    def backward(self, ctx, grad):
        return ctx.kernels.swish_backward(ctx.saved.x, ctx.saved.s, grad, self.beta)

    def to_onnx(self, graph, x):
        """ONNX: x * Sigmoid(beta * x)."""
        return graph.op("Mul", x, graph.op("Sigmoid", graph.op("Mul", x, graph.scalar(self.beta))))


def _per_channel(weight, ndim):
    """``weight`` (C,) shaped to broadcast against a batch (N, C, ...) of ``ndim`` dimensions."""
    return weight.reshape(-1, *[1] * (ndim - 2))


class ChannelScale(Layer):
    """y[n, c, ...] = weight[c] * x[n, c, ...]: one trained scale per channel.

    ``weight`` has shape (C,) and starts at ``init``: one number for every channel, or a list of C.
    dx = weight[c] * dy; dweight[c] = the sum of dy * x over the batch and all positions.
    Shape: output = input: (C,), (C, L) or (C, H, W).
    PyTorch: ``x * weight.view(1, C, 1, 1)`` with ``weight = nn.Parameter(torch.full((C,), init))``.
    """

    type_name = "channel_scale"

    def __init__(self, name, init=1.0):
        super().__init__(name)
        values = init if isinstance(init, list) else [init]
        self.init = [float_option(v, "init") for v in values]

    def output_shape(self, input_shape):
        channels = input_shape[0]
        if len(self.init) not in (1, channels):
            raise self.error(f"init must be one number or a list of {channels} (one per channel); "
                             f"got {len(self.init)} values for input shape {input_shape}", key="init")
        return input_shape

    def parameter_shapes(self, input_shape):
        return {"weight": (input_shape[0],)}

    def initialize(self, params, buffers, rng):
        params["weight"][...] = self.init

    def forward(self, ctx, x):
        ctx.saved.x = x
        return x * _per_channel(ctx.params["weight"], x.ndim)

    def backward(self, ctx, grad):
        x = ctx.saved.x
        ctx.grads["weight"][...] = np.sum(grad * x, axis=(0, *range(2, x.ndim)))
        return grad * _per_channel(ctx.params["weight"], x.ndim)


@hookimpl
def cnnrun_register_layers(register):
    register(Swish)
    register(ChannelScale)


@hookimpl
def cnnrun_register_kernels(register):
    register("cpu", "cnnrun_swish_cpu")
    register("cuda", "cnnrun_swish_cuda")
