"""The fully connected layer: the math once, the kernels from the device (:mod:`.cpu`, :mod:`.cuda`)."""

from __future__ import annotations

from cnnrun.engine import Layer
from cnnrun.engine.layer import uniform_fan_in_
from cnnrun.engine.options import bool_option, int_option


class Linear(Layer):
    """y = x W^T + b, W of shape (out_features, in_features). PyTorch: ``nn.Linear(in, out, bias)``.

    Shape: (in_features,) -> (out_features,); in_features is read from the input, which must be
    1-D (put a ``flatten`` layer after a conv). Init: U(-1/sqrt(in_features), 1/sqrt(in_features)).
    Backward: dx = dy W, dW = dy^T x, db = sum_n dy.
    """

    type_name = "linear"
    kernels = ("linear_forward", "linear_backward")
    affine_output_channels = True

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
        return ctx.kernels.linear_forward(ctx, x, ctx.params["weight"], ctx.params.get("bias"))

    def backward(self, ctx, grad):
        grads = ctx.grads if ctx.trainable else {}  # frozen: no weight gradients
        return ctx.kernels.linear_backward(ctx, ctx.saved.x, grad, ctx.params["weight"], grads.get("weight"),
                                           grads.get("bias"))

    def to_onnx(self, graph, x):
        """ONNX ``Gemm`` with ``transB`` (the weight stays (out_features, in_features))."""
        weights = [graph.param("weight")] + ([graph.param("bias")] if self.bias else [])
        return graph.op("Gemm", x, *weights, transB=1)
