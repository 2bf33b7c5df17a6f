"""Local response normalization across channels (kernels in :mod:`.cpu_lrn`, :mod:`.cuda_lrn`)."""

from __future__ import annotations

import math

from cnnrun.engine import Layer
from cnnrun.engine.options import float_option, int_option


class LocalResponseNorm(Layer):
    """y[c] = x[c] / (k + alpha / size * sum of x[c']^2 over c' = c - size // 2 .. c + (size - 1) // 2
    (channels outside 0 .. C-1 count as 0)) ** beta, at every position of a (C, L) or (C, H, W) input;
    alpha is divided by ``size`` as PyTorch does. PyTorch: ``nn.LocalResponseNorm(size, alpha=1e-4,
    beta=0.75, k=1.0)``. Shape: unchanged.

    Backward, with d[c] the denominator: dx[j] = dy[j] * d[j]^-beta - 2 alpha beta / size * x[j] *
    sum over the windows c holding j of dy[c] * y[c] / d[c].
    """

    type_name = "lrn"
    kernels = ("lrn_forward", "lrn_backward")

    def __init__(self, name, size, alpha=1e-4, beta=0.75, k=1.0):
        super().__init__(name)
        self.size = int_option(size, "size")
        self.alpha = float_option(alpha, "alpha", low=0)
        self.beta = float_option(beta, "beta")
        self.k = float_option(k, "k", low=0, low_open=True)

    def output_shape(self, shape):
        if len(shape) < 2:
            raise self.error(f"expected a (C, L) or (C, H, W) input; got input shape {tuple(shape)}")
        return shape

    def forward(self, ctx, x):
        x3 = x.reshape(x.shape[0], x.shape[1], math.prod(x.shape[2:]))
        y, ctx.saved.denominator = ctx.kernels.lrn_forward(ctx, x3, self.size, self.alpha, self.beta, self.k)
        ctx.saved.x, ctx.saved.y = x3, y
        return y.reshape(x.shape)

    def to_onnx(self, graph, x):
        """ONNX ``LRN`` for an odd ``size``; for an even one (whose window ONNX places one channel later
        than PyTorch) the sum of squares from ``size`` shifted slices of the channel-padded squares."""
        if self.size % 2:
            return graph.op("LRN", x, size=self.size, alpha=self.alpha, beta=self.beta, bias=self.k)
        channels, rank = graph.input_shapes[0][0], len(graph.input_shapes[0]) + 1
        pads = [0] * (2 * rank)
        pads[1], pads[rank + 1] = self.size // 2, (self.size - 1) // 2
        squares = graph.op("Pad", graph.op("Mul", x, x), graph.constant(pads))
        total = graph.op("Sum", *(graph.slice(squares, 1, i, i + channels) for i in range(self.size)))
        scaled = graph.op("Add", graph.op("Mul", total, graph.scalar(self.alpha / self.size)), graph.scalar(self.k))
        return graph.op("Div", x, graph.op("Pow", scaled, graph.scalar(self.beta)))

    def backward(self, ctx, grad):
        saved = ctx.saved
        return ctx.kernels.lrn_backward(ctx, grad.reshape(saved.x.shape), saved.x, saved.y, saved.denominator,
                                        self.size, self.alpha, self.beta).reshape(grad.shape)
