"""Layers that merge several inputs: element-wise sum and channel concatenation (kernels in
:mod:`.cpu` and :mod:`.cuda`)."""

from __future__ import annotations

from cnnrun.engine import Layer


def _shapes(shapes) -> str:
    return ", ".join(str(tuple(s)) for s in shapes)


class Add(Layer):
    """y = x_1 + x_2 + ... (a residual sum); backward hands dy to every input.
    PyTorch: ``x_1 + x_2`` (``torch.add``). Shape: every input and the output share one shape.
    """

    type_name = "add"
    kernels = ("add_forward",)
    min_inputs = 2
    max_inputs = None

    def output_shape(self, *shapes):
        if any(s != shapes[0] for s in shapes):
            raise self.error(f"inputs must all have the same shape; got input shapes {_shapes(shapes)}",
                             key="inputs")
        return shapes[0]

    def forward(self, ctx, *inputs):
        ctx.saved.count = len(inputs)
        return ctx.kernels.add_forward(inputs)

    def backward(self, ctx, grad):
        return (grad,) * ctx.saved.count


class Concat(Layer):
    """Inputs stacked along the channel axis (axis 0 of (C, H, W), (C, L) or (F,)); backward splits dy.
    PyTorch: ``torch.cat(xs, dim=1)``. Shape: (C_1, ...), (C_2, ...) -> (C_1 + C_2 + ..., ...).
    """

    type_name = "concat"
    kernels = ("concat_forward", "concat_backward")
    min_inputs = 2
    max_inputs = None

    def output_shape(self, *shapes):
        first = shapes[0]
        if any(len(s) != len(first) or s[1:] != first[1:] for s in shapes):
            raise self.error(f"inputs must match in every dimension but the channel axis (the first); "
                             f"got input shapes {_shapes(shapes)}", key="inputs")
        return (sum(s[0] for s in shapes), *first[1:])

    def forward(self, ctx, *inputs):
        ctx.saved.channels = [x.shape[1] for x in inputs]
        return ctx.kernels.concat_forward(inputs)

    def backward(self, ctx, grad):
        return ctx.kernels.concat_backward(grad, ctx.saved.channels)
