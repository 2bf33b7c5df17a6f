"""Layers that merge several inputs: element-wise sum and channel concatenation (NumPy; the CUDA
kernels are in :mod:`cnnrun.plugins.merge_cuda`)."""

from __future__ import annotations

import numpy as np

from cnnrun.engine import Layer, hookimpl


def _shapes(shapes) -> str:
    return ", ".join(str(tuple(s)) for s in shapes)


class Add(Layer):
    """y = x_1 + x_2 + ... (a residual sum); backward hands dy to every input.
    PyTorch: ``x_1 + x_2`` (``torch.add``). Shape: every input and the output share one shape.
    """

    type_name = "add"
    min_inputs = 2
    max_inputs = None

    def output_shape(self, *shapes):
        if any(s != shapes[0] for s in shapes):
            raise self.error(f"inputs must all have the same shape; got input shapes {_shapes(shapes)}",
                             key="inputs")
        return shapes[0]

    def forward(self, ctx, *inputs):
        ctx.saved.count = len(inputs)
        y = inputs[0] + inputs[1]
        for x in inputs[2:]:
            y += x
        return y

    def backward(self, ctx, grad):
        return (grad,) * ctx.saved.count

    def forward_cuda(self, ctx, *inputs):
        from . import merge_cuda

        ctx.saved.count = len(inputs)
        y = ctx.backend.add(inputs[0], inputs[1])
        for x in inputs[2:]:
            merge_cuda.add_into(y, x)
        return y

    backward_cuda = backward


class Concat(Layer):
    """Inputs stacked along the channel axis (axis 0 of (C, H, W), (C, L) or (F,)); backward splits dy.
    PyTorch: ``torch.cat(xs, dim=1)``. Shape: (C_1, ...), (C_2, ...) -> (C_1 + C_2 + ..., ...).
    """

    type_name = "concat"
    min_inputs = 2
    max_inputs = None

    def output_shape(self, *shapes):
        first = shapes[0]
        if any(len(s) != len(first) or s[1:] != first[1:] for s in shapes):
            raise self.error(f"inputs must match in every dimension but the channel axis (the first); "
                             f"got input shapes {_shapes(shapes)}", key="inputs")
        return (sum(s[0] for s in shapes), *first[1:])

    def forward(self, ctx, *inputs):
        ctx.saved.splits = np.cumsum([x.shape[1] for x in inputs[:-1]])
        return np.concatenate(inputs, axis=1)

    def backward(self, ctx, grad):
        return tuple(np.ascontiguousarray(g) for g in np.split(grad, ctx.saved.splits, axis=1))

    def forward_cuda(self, ctx, *inputs):
        from . import merge_cuda

        ctx.saved.shapes = [x.shape for x in inputs]
        shape = (inputs[0].shape[0], sum(x.shape[1] for x in inputs), *inputs[0].shape[2:])
        y = ctx.backend.empty(shape, inputs[0].dtype)
        merge_cuda.concat_forward(inputs, y)
        return y

    def backward_cuda(self, ctx, grad):
        from . import merge_cuda

        grads = tuple(ctx.backend.empty(shape, grad.dtype) for shape in ctx.saved.shapes)
        merge_cuda.concat_backward(grad, grads)
        return grads


@hookimpl
def cnnrun_register_layers(register):
    for layer in (Add, Concat):
        register(layer)
