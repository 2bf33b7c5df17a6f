"""Adaptive pooling: a fixed output size, each output the max or mean of its bin of the input.

Bin ``i`` of ``out`` over an axis of ``size`` covers ``[floor(i * size / out), ceil((i + 1) * size / out))``
(PyTorch's rule: bins overlap when ``size`` is not a multiple of ``out``). The kernels (:mod:`.cpu`,
:mod:`.cuda`) work on planes ``(N * C, H, W)``.
"""

from __future__ import annotations

import numpy as np

from cnnrun.engine import Layer
from cnnrun.engine.errors import ConfigError
from cnnrun.engine.options import show

from .layer import as_planes


def output_size_option(value, key: str = "output_size") -> tuple:
    """An integer, or ``[H, W]`` of integers or nulls (null: the input's size on that axis), each >= 1."""
    items = list(value) if isinstance(value, (list, tuple)) else [value, value]
    if value is None or len(items) != 2 or not all(v is None or _is_positive_int(v) for v in items):
        raise ConfigError(f"{key} must be a positive integer or a list [H, W] of positive integers or nulls; "
                          f"got {key}={show(value)}", key=key)
    return tuple(items)


def _is_positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


class _AdaptivePool(Layer):
    def __init__(self, name, output_size):
        super().__init__(name)
        self.output_size = output_size_option(output_size)

    def output_shape(self, shape):
        if len(shape) != 3:
            raise self.error(f"expects a (C, H, W) input; got input shape {tuple(shape)}")
        return (shape[0], *self._output_hw(shape[1:]))

    def _output_hw(self, in_hw) -> tuple[int, int]:
        return tuple(size if out is None else out for out, size in zip(self.output_size, in_hw))

    def to_onnx(self, graph, x):
        """Bins of one size (the input a multiple of the output): ``onnx_pool`` (AveragePool, MaxPool) with
        kernel = stride = input / output; else, axis by axis, one ``onnx_reduce`` per bin (a Slice),
        concatenated (mean and max of a rectangle are those of its rows' per-row values)."""
        in_hw, out_hw = graph.input_shapes[0][1:], graph.output_shape[1:]
        if all(n % o == 0 for n, o in zip(in_hw, out_hw)):
            kernel = [n // o for n, o in zip(in_hw, out_hw)]
            return graph.op(self.onnx_pool, x, kernel_shape=kernel, strides=kernel)
        for axis, (n, o) in enumerate(zip(in_hw, out_hw), start=2):
            if n != o:
                bins = [graph.reduce(self.onnx_reduce, graph.slice(x, axis, i * n // o, -(-(i + 1) * n // o)), [axis])
                        for i in range(o)]
                x = graph.op("Concat", *bins, axis=axis) if o > 1 else bins[0]
        return x


class AdaptiveAvgPool2d(_AdaptivePool):
    """The mean of each bin; backward spreads dy / bin size over the bin.

    Shape: (C, H, W) -> (C, H_out, W_out) = ``output_size`` (an integer: square; null: the input's);
    bin ``i`` covers rows ``[floor(i * H / H_out), ceil((i + 1) * H / H_out))``, columns alike.
    PyTorch: ``nn.AdaptiveAvgPool2d(output_size)``.
    """

    type_name = "adaptive_avgpool2d"
    onnx_pool, onnx_reduce = "AveragePool", "ReduceMean"
    kernels = ("adaptive_avg_pool_forward", "adaptive_avg_pool_backward")

    def forward(self, ctx, x):
        planes = as_planes(x)
        ctx.saved.in_shape, ctx.saved.in_hw = x.shape, planes.shape[1:]
        y = ctx.kernels.adaptive_avg_pool_forward(planes, self._output_hw(planes.shape[1:]))
        return y.reshape(*x.shape[:2], *y.shape[1:])

    def backward(self, ctx, grad):
        grad_x = ctx.kernels.adaptive_avg_pool_backward(as_planes(grad), ctx.saved.in_hw)
        return grad_x.reshape(ctx.saved.in_shape)


class AdaptiveMaxPool2d(_AdaptivePool):
    """The maximum of each bin (the first one in row-major order; NaN wins); backward adds dy there.

    Shape: (C, H, W) -> (C, H_out, W_out) = ``output_size`` (an integer: square; null: the input's);
    bin ``i`` covers rows ``[floor(i * H / H_out), ceil((i + 1) * H / H_out))``, columns alike.
    PyTorch: ``nn.AdaptiveMaxPool2d(output_size)``.
    """

    type_name = "adaptive_maxpool2d"
    onnx_pool, onnx_reduce = "MaxPool", "ReduceMax"
    kernels = ("adaptive_max_pool_forward", "adaptive_max_pool_backward")

    def forward(self, ctx, x):
        planes = as_planes(x)
        argmax = ctx.workspace("argmax", (planes.shape[0], *self._output_hw(planes.shape[1:])), np.int32)
        y = ctx.kernels.adaptive_max_pool_forward(planes, argmax)
        ctx.saved.argmax, ctx.saved.in_shape, ctx.saved.in_hw = argmax, x.shape, planes.shape[1:]
        return y.reshape(*x.shape[:2], *y.shape[1:])

    def backward(self, ctx, grad):
        grad_x = ctx.kernels.adaptive_max_pool_backward(as_planes(grad), ctx.saved.argmax, ctx.saved.in_hw)
        return grad_x.reshape(ctx.saved.in_shape)
