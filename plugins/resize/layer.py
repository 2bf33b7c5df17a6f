"""Resizing layers: upsample (nearest, bilinear) and pad; the shuffles are in :mod:`.shuffle`.

Both work on planes ``(N * C, H, W)`` (``(N * C, 1, L)`` for a 1-D pad) through per-axis index tables
(:mod:`.tables`, computed on the host); the kernels (:mod:`.cpu`, :mod:`.cuda`) gather through them.
"""

from __future__ import annotations

from numbers import Real

import numpy as np

from cnnrun.engine import Layer
from cnnrun.engine.errors import ConfigError
from cnnrun.engine.options import choice_option, float_option, int_tuple, show
from cnnrun.plugins.common import padding_option
from cnnrun.plugins.pool.layer import as_planes, from_planes

from . import tables


class Upsample(Layer):
    """Nearest or bilinear upsampling (also downsampling) to ``size`` or by ``scale_factor``.

    Shape: (C, H, W) -> (C, H_out, W_out), ``H_out = size[0]`` or ``floor(H * scale_factor[0])``.
    ``nearest``: output ``o`` takes input ``min(floor(o * s), H - 1)``, ``s = 1 / scale_factor`` if given,
    else ``H / H_out`` (``o`` when ``H_out == H``, ``o // 2`` when ``H_out == 2 H``). ``bilinear``: source ``(o + 0.5) * s - 0.5`` (clamped at 0), or
    ``o * (H - 1) / (H_out - 1)`` with ``align_corners``, between its two neighbouring rows, columns alike.
    PyTorch: ``nn.Upsample(size=None, scale_factor=None, mode="nearest", align_corners=None)``.
    """

    type_name = "upsample"
    kernels = ("resize_gather_forward", "resize_gather_backward", "upsample_bilinear_forward",
               "upsample_bilinear_backward")

    def __init__(self, name, size=None, scale_factor=None, mode="nearest", align_corners=None):
        super().__init__(name)
        if (size is None) == (scale_factor is None):
            raise ConfigError(f"give exactly one of size and scale_factor; got size={show(size)}, "
                              f"scale_factor={show(scale_factor)}", key="size")
        self.size = None if size is None else int_tuple(size, 2, "size")
        self.scale_factor = None if scale_factor is None else _scale_pair(scale_factor)
        self.mode = choice_option(mode, "mode", ("nearest", "bilinear"))
        if align_corners is not None and self.mode == "nearest":
            raise ConfigError(f"align_corners works with mode \"bilinear\" only; got align_corners="
                              f"{show(align_corners)} with mode=\"nearest\"", key="align_corners")
        if align_corners not in (None, True, False):
            raise ConfigError(f"align_corners must be true, false or null; got align_corners={show(align_corners)}",
                              key="align_corners")
        self.align_corners = bool(align_corners)

    def output_shape(self, shape):
        if len(shape) != 3:
            raise self.error(f"expects a (C, H, W) input; got input shape {tuple(shape)}")
        out = self.size or tuple(tables.scaled_size(n, s) for n, s in zip(shape[1:], self.scale_factor))
        if min(out) <= 0:
            raise self.error(f"output size {tuple(out)} is not positive: input shape {tuple(shape)} with "
                             f"scale_factor={show(self.scale_factor)}", key="scale_factor")
        return (shape[0], *out)

    def _tables(self, in_hw, dtype):
        out = self.output_shape((1, *in_hw))[1:]
        scales = self.scale_factor or (None, None)
        if self.mode == "nearest":
            rows, cols = (tables.nearest_source(n, o, s) for n, o, s in zip(in_hw, out, scales))
            return rows, cols, (*tables.inverse(rows, in_hw[0]), *tables.inverse(cols, in_hw[1]))
        axes = []
        for n, o, s in zip(in_hw, out, scales):
            first, second, weight = tables.linear_source(n, o, s, self.align_corners)
            axes.append((first, second, weight.astype(dtype), *tables.linear_inverse(first, second, n)))
        return axes

    def forward(self, ctx, x):
        planes = as_planes(x)
        ctx.saved.in_shape, ctx.saved.in_hw = x.shape, planes.shape[1:]
        ctx.saved.tables = t = self._tables(planes.shape[1:], x.dtype)
        if self.mode == "nearest":
            y = ctx.kernels.resize_gather_forward(planes, t[0], t[1], 0.0)
        else:
            (r0, r1, rw, _, _), (c0, c1, cw, _, _) = t
            y = ctx.kernels.upsample_bilinear_forward(planes, r0, r1, rw, c0, c1, cw)
        return from_planes(y, x.shape)

    def backward(self, ctx, grad):
        t, planes = ctx.saved.tables, as_planes(grad)
        if self.mode == "nearest":
            grad_x = ctx.kernels.resize_gather_backward(planes, ctx.saved.in_hw, *t[2])
        else:
            grad_x = ctx.kernels.upsample_bilinear_backward(planes, ctx.saved.in_hw, *t[0], *t[1])
        return grad_x.reshape(ctx.saved.in_shape)


    def to_onnx(self, graph, x):
        """ONNX ``Resize``: nearest with "asymmetric" coordinates and "floor", linear with "half_pixel" or
        "align_corners"; by ``scales`` (1, 1, scale_factor) or to ``sizes`` (with ``axes`` from opset 18;
        before, the input's N and C from its Shape, then ``size``)."""
        if self.mode == "nearest":
            attributes = {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}
        else:
            attributes = {"mode": "linear", "coordinate_transformation_mode":
                          "align_corners" if self.align_corners else "half_pixel"}
        if self.scale_factor is not None:
            scales = graph.constant([1.0, 1.0, *self.scale_factor], np.float32)
            return graph.op("Resize", x, "", scales, **attributes)
        if graph.opset >= 18:
            return graph.op("Resize", x, "", "", graph.constant(list(self.size)), axes=[2, 3], **attributes)
        batch_channels = graph.slice(graph.op("Shape", x), 0, 0, 2)
        sizes = graph.op("Concat", batch_channels, graph.constant(list(self.size)), axis=0)
        return graph.op("Resize", x, "", "", sizes, **attributes)


def _scale_pair(value) -> tuple[float, float]:
    items = list(value) if isinstance(value, (list, tuple)) else [value, value]
    if len(items) != 2 or not all(isinstance(v, Real) and not isinstance(v, bool) for v in items):
        raise ConfigError(f"scale_factor must be a positive number or a list of 2; got scale_factor={show(value)}",
                          key="scale_factor")
    return tuple(float_option(v, "scale_factor", low=0, low_open=True) for v in items)


class Pad(Layer):
    """Padding of the spatial axes by ``padding`` per side, filled by ``mode``: ``constant`` (``value``),
    ``reflect`` (mirrored without the edge: each side smaller than the axis), ``replicate`` (the edge
    repeated), ``circular`` (wrapped around: each side at most the axis).

    Shape: (C, H, W) -> (C, H + top + bottom, W + left + right); (C, L) -> (C, L + left + right).
    ``padding``: an integer, one per dimension, or per side ``[top, left, bottom, right]`` (``[left, right]``).
    PyTorch: ``nn.functional.pad(x, (left, right, top, bottom), mode, value)`` (``nn.ZeroPad2d``,
    ``nn.ConstantPad2d``, ``nn.ReflectionPad2d``, ``nn.ReplicationPad2d``, ``nn.CircularPad2d``).
    """

    type_name = "pad"
    kernels = ("resize_gather_forward", "resize_gather_backward")
    modes = ("constant", "reflect", "replicate", "circular")

    def __init__(self, name, padding, mode="constant", value=0.0):
        super().__init__(name)
        if isinstance(padding, str):
            padding_option(padding, 2, words=())  # the error; the dimensions are known in output_shape
        self.padding = padding  # its form is checked against the input's dimensions (output_shape)
        self.mode = choice_option(mode, "mode", self.modes)
        self.value = float_option(value, "value")

    def _pads(self, shape):
        if len(shape) not in (2, 3):
            raise self.error(f"expects a (C, H, W) or (C, L) input; got input shape {tuple(shape)}")
        try:
            return padding_option(self.padding, len(shape) - 1, words=())
        except ConfigError as error:
            raise self.error(str(error), key="padding") from None

    def output_shape(self, shape):
        pads = self._pads(shape)
        for n, (before, after) in zip(shape[1:], pads):
            limit = {"reflect": n - 1, "circular": n}.get(self.mode)
            if limit is not None and max(before, after) > limit:
                rule = "smaller than" if self.mode == "reflect" else "at most"
                raise self.error(f"{self.mode} padding must be {rule} the padded axis; got padding="
                                 f"{show(self.padding)} for input shape {tuple(shape)}", key="padding")
        return (shape[0], *(n + b + a for n, (b, a) in zip(shape[1:], pads)))

    def forward(self, ctx, x):
        planes = as_planes(x)
        pads = ((0, 0),) * (4 - x.ndim) + self._pads(x.shape[1:])
        rows, cols = (tables.padded_source(n, b, a, self.mode) for n, (b, a) in zip(planes.shape[1:], pads))
        ctx.saved.in_shape, ctx.saved.in_hw = x.shape, planes.shape[1:]
        ctx.saved.inverse = (*tables.inverse(rows, planes.shape[1]), *tables.inverse(cols, planes.shape[2]))
        return from_planes(ctx.kernels.resize_gather_forward(planes, rows, cols, self.value), x.shape)

    def backward(self, ctx, grad):
        grad_x = ctx.kernels.resize_gather_backward(as_planes(grad), ctx.saved.in_hw, *ctx.saved.inverse)
        return grad_x.reshape(ctx.saved.in_shape)

    def to_onnx(self, graph, x):
        """ONNX ``Pad`` (modes constant, reflect, edge); circular as, axis by axis, the last ``before``
        and the first ``after`` positions concatenated around the input."""
        shape = graph.input_shapes[0]
        pads = self._pads(shape)
        if self.mode == "circular":
            for axis, (n, (before, after)) in enumerate(zip(shape[1:], pads), start=2):
                parts = ([graph.slice(x, axis, n - before, n)] if before else []) + [x] + (
                    [graph.slice(x, axis, 0, after)] if after else [])
                x = graph.op("Concat", *parts, axis=axis) if len(parts) > 1 else x
            return x
        sides = [0, 0, *(b for b, _ in pads), 0, 0, *(a for _, a in pads)]
        mode = {"constant": "constant", "reflect": "reflect", "replicate": "edge"}[self.mode]
        value = [graph.scalar(self.value)] if self.mode == "constant" else []
        return graph.op("Pad", x, graph.constant(sides), *value, mode=mode)
