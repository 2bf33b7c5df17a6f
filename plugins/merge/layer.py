"""Layers that merge several inputs: element-wise sum, difference and product with broadcasting,
channel concatenation, and the learnable per-channel scale (kernels in :mod:`.cpu` and :mod:`.cuda`)."""

from __future__ import annotations

from cnnrun.engine import Layer
from cnnrun.engine.options import float_option


def _shapes(shapes) -> str:
    return ", ".join(str(tuple(s)) for s in shapes)


def broadcast_shape(layer: Layer, shapes) -> tuple:
    """PyTorch's broadcasting of inputs of one rank: every dimension equal or 1 (the 1s stretched)."""
    if any(len(s) != len(shapes[0]) for s in shapes):
        raise layer.error(f"inputs must have the same number of dimensions to broadcast; "
                          f"got input shapes {_shapes(shapes)}", key="inputs")
    result = []
    for sizes in zip(*shapes):
        stretched = {d for d in sizes if d != 1}
        if len(stretched) > 1:
            raise layer.error(f"inputs cannot broadcast: every dimension must be equal or 1; "
                              f"got input shapes {_shapes(shapes)}", key="inputs")
        result.append(stretched.pop() if stretched else 1)
    return tuple(result)


class _Elementwise(Layer):
    """y = x_1 OP x_2 OP ... with broadcasting over size-1 dimensions, left to right; the gradient of a
    broadcast input is summed over the axes it was stretched along."""

    op: str
    kernels = ("elementwise", "sum_to_shape")
    min_inputs = 2
    max_inputs = None

    def output_shape(self, *shapes):
        return broadcast_shape(self, shapes)

    def forward(self, ctx, *inputs):
        ctx.saved.shapes = [x.shape for x in inputs]
        y = inputs[0]
        for x in inputs[1:]:
            y = ctx.kernels.elementwise(self.op, y, x)
        return y

    def to_onnx(self, graph, *inputs):
        """ONNX ``Add`` / ``Sub`` / ``Mul`` (``op`` capitalized), left to right; ONNX broadcasts the
        same way (the batch axis leads every input)."""
        y = inputs[0]
        for x in inputs[1:]:
            y = graph.op(self.op.capitalize(), y, x)
        return y


class Add(_Elementwise):
    """y = x_1 + x_2 + ... (a residual sum), broadcasting size-1 dimensions; dx_i = dy summed to x_i's shape.
    PyTorch: ``x_1 + x_2`` (``torch.add``). Shape: inputs of one rank, each dimension equal or 1 -> the
    broadcast shape, e.g. (C, H, W), (C, 1, 1) -> (C, H, W). Inputs of one shape take a plain sum.
    """

    type_name = "add"
    op = "add"
    kernels = ("add_forward", "elementwise", "sum_to_shape")
    epilogue = "add"

    def forward(self, ctx, *inputs):
        if any(x.shape != inputs[0].shape for x in inputs):
            return super().forward(ctx, *inputs)
        ctx.saved.shapes = [x.shape for x in inputs]
        return ctx.kernels.add_forward(inputs)

    def backward(self, ctx, grad):
        return tuple(ctx.kernels.sum_to_shape(grad, shape, 1) for shape in ctx.saved.shapes)


class Sub(_Elementwise):
    """y = a - b, broadcasting size-1 dimensions; da = dy, db = -dy, each summed to its input's shape.
    PyTorch: ``a - b`` (``torch.sub``). Shape: two inputs of one rank -> the broadcast shape.
    """

    type_name = "sub"
    op = "sub"
    max_inputs = 2

    def backward(self, ctx, grad):
        first, second = ctx.saved.shapes
        return ctx.kernels.sum_to_shape(grad, first, 1), ctx.kernels.sum_to_shape(grad, second, -1)


class Mul(_Elementwise):
    """y = x_1 * x_2 * ..., broadcasting size-1 dimensions (squeeze-and-excitation's x * s, s (C, 1, 1));
    dx_i = dy * (the product of the other inputs), summed to x_i's shape.
    PyTorch: ``x_1 * x_2`` (``torch.mul``). Shape: inputs of one rank -> the broadcast shape.
    """

    type_name = "mul"
    op = "mul"

    def forward(self, ctx, *inputs):
        ctx.saved.inputs = inputs
        return super().forward(ctx, *inputs)

    def backward(self, ctx, grad):
        inputs, kernels = ctx.saved.inputs, ctx.kernels
        grads = []
        for i, x in enumerate(inputs):
            g = grad
            for j, other in enumerate(inputs):
                if j != i:
                    g = kernels.elementwise("mul", g, other)
            grads.append(kernels.sum_to_shape(g, x.shape, 1))
        return tuple(grads)


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

    def to_onnx(self, graph, *inputs):
        """ONNX ``Concat`` along axis 1."""
        return graph.op("Concat", *inputs, axis=1)


class Scale(Layer):
    """y[n, c, ...] = weight[c] * x[n, c, ...]: a learnable per-channel factor (ConvNeXt's layer scale).

    ``weight`` has shape (C,) and starts at ``init``. dx = weight[c] * dy; dweight[c] = the sum of
    dy * x over the batch and every position. PyTorch: ``x * weight.view(1, C, 1, 1)`` with
    ``weight = nn.Parameter(torch.full((C,), init))``. Shape: unchanged: (C,), (C, L) or (C, H, W).
    """

    type_name = "scale"
    kernels = ("elementwise", "sum_to_shape")

    def __init__(self, name, init=1.0):
        super().__init__(name)
        self.init = float_option(init, "init")

    def parameter_shapes(self, shape):
        return {"weight": (shape[0],)}

    def initialize(self, params, buffers, rng):
        params["weight"][...] = self.init

    def _weight(self, ctx, x):
        return ctx.params["weight"].reshape(1, x.shape[1], *(1,) * (x.ndim - 2))

    def forward(self, ctx, x):
        ctx.saved.x = x
        return ctx.kernels.elementwise("mul", x, self._weight(ctx, x))

    def backward(self, ctx, grad):
        x, kernels = ctx.saved.x, ctx.kernels
        weight = self._weight(ctx, x)
        kernels.sum_to_shape(kernels.elementwise("mul", grad, x), weight.shape, 1, out=ctx.grads["weight"])
        return kernels.elementwise("mul", grad, weight)

    def to_onnx(self, graph, x):
        """ONNX ``Mul`` by the weight reshaped to (C, 1, ...)."""
        return graph.op("Mul", x, graph.per_channel(graph.param("weight"), len(graph.input_shapes[0])))
