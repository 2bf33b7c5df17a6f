"""Dropout layers: element-wise, per channel (dropout2d) and per sample (drop_path); kernels in
:mod:`.cpu` and :mod:`.cuda`."""

from __future__ import annotations

from cnnrun.engine import Layer
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

    def to_onnx(self, graph, x):
        """No node: the identity of evaluation mode (dropout2d and drop_path alike)."""
        return x


class _GroupDropout(Dropout):
    """Inverted dropout of whole groups of values: one keep ~ Bernoulli(1 - p) per group, drawn from
    ``ctx.rng`` on every device; ``mask_axes`` leading axes (with the batch) index the groups."""

    kernels = ("group_dropout_forward", "group_dropout_backward")
    mask_axes: int

    def forward(self, ctx, x):
        if not ctx.training or self.p == 0:
            ctx.saved.mask = None
            return x
        y, ctx.saved.mask = ctx.kernels.group_dropout_forward(ctx, x, self.p, x.shape[:self.mask_axes])
        return y

    def backward(self, ctx, grad):
        return grad if ctx.saved.mask is None else ctx.kernels.group_dropout_backward(grad, ctx.saved.mask)


class Dropout2d(_GroupDropout):
    """Channel-wise dropout: when training, each channel of each sample is zeroed with probability p,
    the others scaled by 1 / (1 - p); identity in eval. PyTorch: ``nn.Dropout2d(p=0.5)``.
    Shape: unchanged, (C, H, W).
    """

    type_name = "dropout2d"
    mask_axes = 2

    def output_shape(self, shape):
        if len(shape) != 3:
            raise self.error(f"needs a (C, H, W) input; got input shape {shape}", key="inputs")
        return shape


class DropPath(_GroupDropout):
    """Stochastic depth: when training, each sample (a residual branch's output) is zeroed with
    probability p, the others scaled by 1 / (1 - p); identity in eval. PyTorch (torchvision):
    ``StochasticDepth(p, mode="row")``. Shape: unchanged.
    """

    type_name = "drop_path"
    mask_axes = 1

    def __init__(self, name, p):
        super().__init__(name, p)
