"""Pooling layers: max and average over sliding windows (1-D and 2-D), and global average pooling.

The kernels (the device's: :mod:`.cpu`, :mod:`.cuda`) work on planes ``(N * C, H, W)``; 1-D layers
pool ``(N * C, 1, L)`` planes with a height-1 window, as PyTorch's ``max_pool1d`` / ``avg_pool1d`` do.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from cnnrun.engine import Layer
from cnnrun.engine.options import bool_option, int_tuple, show
from cnnrun.plugins.common import onnx_pads, padding_option, resolve_padding


def pooled_size(size: int, kernel: int, stride: int, before: int, after: int, dilation: int,
                ceil_mode: bool) -> int:
    """PyTorch's output size: floor_or_ceil((size + before + after - dilation * (kernel - 1) - 1) / stride)
    + 1, where in ceil mode a last window that would start inside the padding after is dropped."""
    span = dilation * (kernel - 1) + 1
    out = (size + before + after - span + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + before:
        out -= 1
    return out


def as_planes(x):
    """A batch ``(N, C, H, W)`` or ``(N, C, L)`` as planes ``(N * C, H, W)`` or ``(N * C, 1, L)`` (a reshape)."""
    n, c, *size = x.shape
    height, width = size if len(size) == 2 else (1, size[0])
    return x.reshape(n * c, height, width)


def from_planes(y, batch_shape):
    """Planes ``(N * C, OH, OW)`` back to ``(N, C, OH, OW)``, or to ``(N, C, OW)`` for a 1-D batch."""
    return y.reshape(*batch_shape[:2], *y.shape[3 - (len(batch_shape) - 2):])


class _WindowPool(Layer):
    """What the max and average pools share: options, output shape. ``dims`` is 1 or 2.

    ``window(in_hw)`` is the kernels' ``(kernel, stride, padding before, padding after, dilation)``, each
    ``(h, w)``, for planes of ``in_hw`` (a 1-D window is a height-1 2-D window)."""

    dims: ClassVar[int] = 2

    def __init__(self, name, kernel_size, stride=None, padding=0, ceil_mode=False, dilation=1):
        super().__init__(name)
        self.kernel_size = int_tuple(kernel_size, self.dims, "kernel_size")
        self.stride = self.kernel_size if stride is None else int_tuple(stride, self.dims, "stride")
        self.padding = padding_option(padding, self.dims)
        self.dilation = int_tuple(dilation, self.dims, "dilation")
        if not isinstance(self.padding, str) and any(2 * p > k for side, k in zip(self.padding, self.kernel_size)
                                                     for p in side):
            raise self.error(f"padding must be at most half of kernel_size; got padding={show(padding)} "
                             f"with kernel_size={show(kernel_size)}", key="padding")
        self.padding_json = padding
        self.ceil_mode = bool_option(ceil_mode, "ceil_mode")

    def window(self, in_hw):
        lead = 2 - self.dims
        size = tuple(in_hw)[lead:]
        pads = resolve_padding(self.padding, size, self.kernel_size, self.stride, self.dilation)
        return ((1,) * lead + self.kernel_size, (1,) * lead + self.stride, (0,) * lead + tuple(b for b, _ in pads),
                (0,) * lead + tuple(a for _, a in pads), (1,) * lead + self.dilation)

    def output_shape(self, shape):
        if len(shape) != self.dims + 1:
            layout, other = ("(C, H, W)", "(C, L)") if self.dims == 2 else ("(C, L)", "(C, H, W)")
            hint = (f" (use {self.type_name[:-2]}{3 - self.dims}d for {other} inputs)"
                    if len(shape) == 4 - self.dims else "")
            raise self.error(f"expects a {layout} input; got input shape {tuple(shape)}{hint}")
        size = self._output_hw((1,) * (2 - self.dims) + tuple(shape[1:]))[2 - self.dims:]
        if min(size) <= 0:
            raise self.error(f"output size {size} is not positive: input shape {tuple(shape)} is smaller "
                             f"than kernel_size={show(self.kernel_size)} with padding={show(self.padding_json)}"
                             f" and dilation={show(self.dilation)}")
        return (shape[0], *size)

    def _output_hw(self, in_hw) -> tuple[int, int]:
        return tuple(pooled_size(n, k, s, b, a, d, self.ceil_mode)
                     for n, k, s, b, a, d in zip(in_hw, *self.window(in_hw)))

    def onnx_attributes(self, graph) -> dict:
        """The window as ONNX pool attributes (``"same"`` padding resolved for the input size); ``ceil_mode``
        only where it changes the output size (so that no runtime meets a ceil_mode it need not handle)."""
        size = graph.input_shapes[0][1:]
        pads = resolve_padding(self.padding, size, self.kernel_size, self.stride, self.dilation)
        floor = [pooled_size(n, k, s, b, a, d, False)
                 for n, k, s, (b, a), d in zip(size, self.kernel_size, self.stride, pads, self.dilation)]
        return {"kernel_shape": list(self.kernel_size), "strides": list(self.stride), "pads": onnx_pads(pads),
                "ceil_mode": int(tuple(floor) != tuple(graph.output_shape[1:]))}


class _MaxPool(_WindowPool):
    kernels = ("max_pool_forward", "max_pool_backward")

    def forward(self, ctx, x):
        planes = as_planes(x)
        kernel, stride, before, _, dilation = self.window(planes.shape[1:])
        argmax = ctx.workspace("argmax", (planes.shape[0], *self._output_hw(planes.shape[1:])), np.int32)
        y = ctx.kernels.max_pool_forward(planes, argmax, kernel, stride, before, dilation)
        ctx.saved.argmax, ctx.saved.in_shape, ctx.saved.in_hw = argmax, x.shape, planes.shape[1:]
        return from_planes(y, x.shape)

    def backward(self, ctx, grad):
        kernel, stride, before, _, dilation = self.window(ctx.saved.in_hw)
        grad_x = ctx.kernels.max_pool_backward(as_planes(grad), ctx.saved.argmax, kernel, stride, before, dilation,
                                               ctx.saved.in_hw)
        return grad_x.reshape(ctx.saved.in_shape)

    def to_onnx(self, graph, x):
        """ONNX ``MaxPool``."""
        return graph.op("MaxPool", x, dilations=list(self.dilation), **self.onnx_attributes(graph))


class _AvgPool(_WindowPool):
    kernels = ("avg_pool_forward", "avg_pool_backward")

    def __init__(self, name, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
        super().__init__(name, kernel_size, stride, padding, ceil_mode)
        self.count_include_pad = bool_option(count_include_pad, "count_include_pad")

    def forward(self, ctx, x):
        planes = as_planes(x)
        kernel, stride, before, after, _ = self.window(planes.shape[1:])
        y = ctx.kernels.avg_pool_forward(planes, self._output_hw(planes.shape[1:]), kernel, stride, before, after,
                                         self.count_include_pad)
        ctx.saved.in_shape, ctx.saved.in_hw = x.shape, planes.shape[1:]
        return from_planes(y, x.shape)

    def backward(self, ctx, grad):
        kernel, stride, before, after, _ = self.window(ctx.saved.in_hw)
        grad_x = ctx.kernels.avg_pool_backward(as_planes(grad), ctx.saved.in_hw, kernel, stride, before, after,
                                               self.count_include_pad)
        return grad_x.reshape(ctx.saved.in_shape)

    def to_onnx(self, graph, x):
        """ONNX ``AveragePool``."""
        return graph.op("AveragePool", x, count_include_pad=int(self.count_include_pad),
                        **self.onnx_attributes(graph))


class MaxPool2d(_MaxPool):
    """The maximum of each window; padding counts as -inf; ties go to the first maximum (row-major).

    Backward adds each output gradient at its window's argmax (overlapping windows accumulate).
    Shape: (C, H, W) -> (C, H_out, W_out), H_out = floor_or_ceil((H + 2 padding - kernel_size) / stride) + 1
    (ceil with ``ceil_mode``, dropping a last window that starts in the right padding); W alike.
    PyTorch: ``nn.MaxPool2d(kernel_size, stride=None, padding=0, ceil_mode=False)``.
    """

    type_name = "maxpool2d"


class MaxPool1d(_MaxPool):
    """:class:`MaxPool2d` along one axis.

    Shape: (C, L) -> (C, L_out), L_out = floor_or_ceil((L + 2 padding - kernel_size) / stride) + 1.
    PyTorch: ``nn.MaxPool1d(kernel_size, stride=None, padding=0, ceil_mode=False)``.
    """

    type_name = "maxpool1d"
    dims = 1


class AvgPool2d(_AvgPool):
    """The mean of each window. The divisor is the window cut at the end of the padding with
    ``count_include_pad``, else the window cut to the input (PyTorch's rule).

    Shape: (C, H, W) -> (C, H_out, W_out), H_out = floor_or_ceil((H + 2 padding - kernel_size) / stride) + 1
    (ceil with ``ceil_mode``, dropping a last window that starts in the right padding); W alike.
    PyTorch: ``nn.AvgPool2d(kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True)``.
    """

    type_name = "avgpool2d"


class AvgPool1d(_AvgPool):
    """:class:`AvgPool2d` along one axis.

    Shape: (C, L) -> (C, L_out), L_out = floor_or_ceil((L + 2 padding - kernel_size) / stride) + 1.
    PyTorch: ``nn.AvgPool1d(kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True)``.
    """

    type_name = "avgpool1d"
    dims = 1


class _GlobalPool(Layer):
    """What the global pools share: the output shape, ``(C, 1, 1)`` / ``(C, 1)``, or ``(C,)`` with ``flatten``."""

    def __init__(self, name, flatten=False):
        super().__init__(name)
        self.flatten = bool_option(flatten, "flatten")

    def output_shape(self, shape):
        if len(shape) not in (2, 3):
            raise self.error(f"expects a (C, H, W) or (C, L) input; got input shape {tuple(shape)}")
        return (shape[0],) if self.flatten else (shape[0],) + (1,) * (len(shape) - 1)

    def _output(self, y, x_shape):
        return y.reshape(x_shape[0], *self.output_shape(x_shape[1:]))

    def to_onnx(self, graph, x):
        """ONNX ``GlobalAveragePool`` / ``GlobalMaxPool`` (``onnx_op``), then ``Flatten`` with ``flatten``."""
        y = graph.op(self.onnx_op, x)
        return graph.op("Flatten", y, axis=1) if self.flatten else y


class GlobalAvgPool(_GlobalPool):
    """The mean of each channel over all positions; dx = dy / (H * W) everywhere.

    Shape: (C, H, W) -> (C, 1, 1); (C, L) -> (C, 1); (C,) with ``flatten: true``.
    PyTorch: ``nn.AdaptiveAvgPool2d(1)`` / ``nn.AdaptiveAvgPool1d(1)`` (then ``nn.Flatten()`` with ``flatten``).
    """

    type_name = "global_avgpool"
    onnx_op = "GlobalAveragePool"
    kernels = ("global_avg_pool_forward", "global_avg_pool_backward")

    def forward(self, ctx, x):
        planes = as_planes(x)
        ctx.saved.in_shape, ctx.saved.in_hw = x.shape, planes.shape[1:]
        return self._output(ctx.kernels.global_avg_pool_forward(planes), x.shape)

    def backward(self, ctx, grad):
        grad_x = ctx.kernels.global_avg_pool_backward(grad.reshape(grad.size), ctx.saved.in_hw)
        return grad_x.reshape(ctx.saved.in_shape)


class GlobalMaxPool(_GlobalPool):
    """The maximum of each channel over all positions (the first one; NaN wins); backward puts dy there.

    Shape: (C, H, W) -> (C, 1, 1); (C, L) -> (C, 1); (C,) with ``flatten: true``.
    PyTorch: ``nn.AdaptiveMaxPool2d(1)`` / ``nn.AdaptiveMaxPool1d(1)`` (then ``nn.Flatten()`` with ``flatten``).
    """

    type_name = "global_maxpool"
    onnx_op = "GlobalMaxPool"
    kernels = ("max_pool_forward", "max_pool_backward")

    def forward(self, ctx, x):
        planes = as_planes(x)
        hw = planes.shape[1:]
        argmax = ctx.workspace("argmax", (planes.shape[0], 1, 1), np.int32)
        y = ctx.kernels.max_pool_forward(planes, argmax, hw, hw, (0, 0), (1, 1))
        ctx.saved.argmax, ctx.saved.in_shape, ctx.saved.in_hw = argmax, x.shape, hw
        return self._output(y, x.shape)

    def backward(self, ctx, grad):
        hw = ctx.saved.in_hw
        grad_x = ctx.kernels.max_pool_backward(grad.reshape(grad.size, 1, 1), ctx.saved.argmax, hw, hw, (0, 0),
                                               (1, 1), hw)
        return grad_x.reshape(ctx.saved.in_shape)
