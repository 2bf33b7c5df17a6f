"""The convolution layers: options, shapes, parameters, init and MACs, and their math once; the
kernels come from the device (:mod:`.cpu` with :mod:`.winograd`, :mod:`.cuda`)."""

from __future__ import annotations

import math
from typing import ClassVar

from cnnrun.engine import Layer
from cnnrun.engine.layer import uniform_fan_in_
from cnnrun.engine.options import bool_option, choice_option, int_option, int_tuple, show

from cnnrun.plugins.common import Geometry, onnx_pads, padding_option, resolve_padding

from . import winograd


class _Conv(Layer):
    """conv2d and conv1d: the same layer over 2 or 1 spatial dimensions (conv1d runs as 1 x L)."""

    spatial: ClassVar[int] = 2
    layout: ClassVar[str] = "(C, H, W)"
    algorithms: ClassVar[tuple[str, ...]] = ("auto", "im2col", "direct", "winograd")
    kernels = ("conv2d_forward", "conv2d_backward")
    affine_output_channels = True

    def __init__(self, name, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, algorithm="auto"):
        super().__init__(name)
        n = self.spatial
        self.out_channels = int_option(out_channels, "out_channels")
        self.kernel_size = int_tuple(kernel_size, n, "kernel_size")
        self.stride = int_tuple(stride, n, "stride")
        self.padding = padding_option(padding, n)
        self.padding_json = padding
        self.dilation = int_tuple(dilation, n, "dilation")
        self.groups = int_option(groups, "groups")
        self.bias = bool_option(bias, "bias")
        self.algorithm = choice_option(algorithm, "algorithm", self.algorithms)
        if self.algorithm == "winograd" and not winograd.fits(self.kernel_size, self.stride, self.dilation):
            raise self.error(f"winograd needs kernel_size 3, stride 1 and dilation 1; got kernel_size="
                             f"{show(kernel_size)}, stride={show(stride)}, dilation={show(dilation)}",
                             key="algorithm")
        if self.algorithm == "direct" and self.stride != (1,) * n:
            raise self.error(f"direct needs stride 1; got stride={show(stride)} (use \"im2col\" or \"auto\")",
                             key="algorithm")
        self._by_input_shape: dict = {}  # input shape -> (output shape, Geometry), see _resolved

    # -- shapes ------------------------------------------------------------------------------------
    def pads(self, size) -> tuple[tuple[int, int], ...]:
        """``(before, after)`` padding per spatial dimension for an input of spatial ``size``."""
        return resolve_padding(self.padding, size, self.kernel_size, self.stride, self.dilation)

    def output_shape(self, input_shape):
        if len(input_shape) != self.spatial + 1:
            raise self.error(f"expects an input of shape {self.layout}; got input shape {input_shape}")
        in_channels, *size = input_shape
        _check_groups(self, in_channels, input_shape)
        out = [(i + b + a - d * (k - 1) - 1) // s + 1 for i, (b, a), k, s, d in
               zip(size, self.pads(size), self.kernel_size, self.stride, self.dilation)]
        if min(out) <= 0:
            raise self.error(f"kernel_size={show(self.kernel_size)} with dilation={show(self.dilation)} "
                             f"does not fit the padded input: output size would be {tuple(out)}; "
                             f"input shape {input_shape}, padding={show(self.padding_json)}", key="kernel_size")
        return (self.out_channels, *out)

    def parameter_shapes(self, input_shape):
        shapes = {"weight": (self.out_channels, input_shape[0] // self.groups, *self.kernel_size)}
        if self.bias:
            shapes["bias"] = (self.out_channels,)
        return shapes

    def initialize(self, params, buffers, rng):
        fan_in = params["weight"].shape[1] * math.prod(self.kernel_size)
        for array in params.values():
            uniform_fan_in_(array, fan_in, rng)

    def macs(self, input_shape):
        per_output = input_shape[0] // self.groups * math.prod(self.kernel_size)
        return math.prod(self.output_shape(input_shape)) * per_output

    # -- computation -------------------------------------------------------------------------------
    def _geometry(self, size) -> Geometry:
        pads = self.pads(size)
        before, after = tuple(b for b, _ in pads), tuple(a for _, a in pads)
        if self.spatial == 1:  # (N, C, L) runs as (N, C, 1, L)
            return Geometry((1, *self.kernel_size), (1, *self.stride), (0, *before), (1, *self.dilation),
                            self.groups, (0, *after))
        return Geometry(self.kernel_size, self.stride, before, self.dilation, self.groups, after)

    def _resolved(self, input_shape):
        """``(output shape, Geometry)`` for ``input_shape`` (no batch), computed once per shape: no
        per-call shape arithmetic."""
        found = self._by_input_shape.get(input_shape)
        if found is None:
            found = self._by_input_shape[input_shape] = (self.output_shape(input_shape),
                                                         self._geometry(input_shape[1:]))
        return found

    def forward(self, ctx, x):
        ctx.saved.x = x
        out, geom = self._resolved(x.shape[1:])
        y = ctx.kernels.conv2d_forward(ctx, _as2d(x), _as2d(ctx.params["weight"]), ctx.params.get("bias"),
                                       geom, (1, *out[1:])[-2:],  # (OH, OW); conv1d (1, L)
                                       self.algorithm)
        return y.reshape(x.shape[0], *out)

    def backward(self, ctx, grad):
        x = ctx.saved.x
        grads = ctx.grads if ctx.trainable else {}  # frozen: no weight gradients
        weight_grad = grads.get("weight")
        weight_grad = None if weight_grad is None else _as2d(weight_grad)
        dx = ctx.kernels.conv2d_backward(ctx, _as2d(x), _as2d(grad), _as2d(ctx.params["weight"]),
                                         self._resolved(x.shape[1:])[1], weight_grad, grads.get("bias"), self.algorithm,
                                         ctx.needs_input_grad)
        return None if dx is None else dx.reshape(x.shape)

    def to_onnx(self, graph, x):
        """ONNX ``Conv`` with explicit ``pads`` (``"same"`` resolved for the input size)."""
        pads = self.pads(graph.input_shapes[0][1:])
        weights = [graph.param("weight")] + ([graph.param("bias")] if self.bias else [])
        return graph.op("Conv", x, *weights, kernel_shape=list(self.kernel_size), strides=list(self.stride),
                        pads=onnx_pads(pads), dilations=list(self.dilation), group=self.groups)


class Conv2d(_Conv):
    """2-D convolution (cross-correlation, as PyTorch). PyTorch: ``nn.Conv2d``.

    Shape: ``(C, H, W) -> (out_channels, H_out, W_out)``,
    ``H_out = floor((H + pad_top + pad_bottom - dilation * (kernel - 1) - 1) / stride) + 1``;
    ``padding``: an integer, one per dimension, one per side ``[top, left, bottom, right]``, ``"valid"``,
    or ``"same"`` / ``"same_lower"``: output ``ceil(H / stride)``, the odd padded pixel after / before
    (ONNX SAME_UPPER / SAME_LOWER).
    Weight ``(out_channels, C / groups, kh, kw)``, bias ``(out_channels,)``.
    ``algorithm``: "im2col", "direct", "winograd" (F(2x2, 3x3): 3x3, stride 1, dilation 1 only) or
    "auto" (:func:`.winograd.choose_algorithm`); the result is the same up to rounding.
    """

    type_name = "conv2d"


class Conv1d(_Conv):
    """1-D convolution. PyTorch: ``nn.Conv1d``.

    Shape: ``(C, L) -> (out_channels, L_out)``,
    ``L_out = floor((L + pad_left + pad_right - dilation * (kernel - 1) - 1) / stride) + 1``;
    ``padding`` as conv2d's, per side ``[left, right]``.
    Weight ``(out_channels, C / groups, k)``, bias ``(out_channels,)``.
    """

    type_name = "conv1d"
    spatial = 1
    layout = "(C, L)"
    algorithms = ("auto", "im2col", "direct")  # Winograd F(2x2, 3x3) is 2-D only


class ConvTranspose2d(Layer):
    """Transposed 2-D convolution, the gradient of conv2d with respect to its input.
    PyTorch: ``nn.ConvTranspose2d``.

    Shape: ``(C, H, W) -> (out_channels, H_out, W_out)``,
    ``H_out = (H - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1``.
    Weight ``(C, out_channels / groups, kh, kw)``, bias ``(out_channels,)``.
    """

    type_name = "conv_transpose2d"
    kernels = ("conv_transpose2d_forward", "conv_transpose2d_backward")

    def __init__(self, name, out_channels, kernel_size, stride=1, padding=0, output_padding=0,
                 dilation=1, groups=1, bias=True):
        super().__init__(name)
        self.out_channels = int_option(out_channels, "out_channels")
        self.kernel_size = int_tuple(kernel_size, 2, "kernel_size")
        self.stride = int_tuple(stride, 2, "stride")
        self.padding = int_tuple(padding, 2, "padding", minimum=0)
        self.output_padding = int_tuple(output_padding, 2, "output_padding", minimum=0)
        self.dilation = int_tuple(dilation, 2, "dilation")
        self.groups = int_option(groups, "groups")
        self.bias = bool_option(bias, "bias")
        if any(op >= max(s, d) for op, s, d in zip(self.output_padding, self.stride, self.dilation)):
            raise self.error(f"output_padding must be smaller than stride or dilation; got "
                             f"output_padding={show(output_padding)} with stride={show(stride)}, "
                             f"dilation={show(dilation)}", key="output_padding")

    def output_shape(self, input_shape):
        if len(input_shape) != 3:
            raise self.error(f"expects an input of shape (C, H, W); got input shape {input_shape}")
        _check_groups(self, input_shape[0], input_shape)
        out = [(i - 1) * s - 2 * p + d * (k - 1) + op + 1 for i, s, p, d, k, op in
               zip(input_shape[1:], self.stride, self.padding, self.dilation, self.kernel_size,
                   self.output_padding)]
        if min(out) <= 0:
            raise self.error(f"padding={show(self.padding)} is too large: output size would be {tuple(out)}; "
                             f"input shape {input_shape}", key="padding")
        return (self.out_channels, *out)

    def parameter_shapes(self, input_shape):
        shapes = {"weight": (input_shape[0], self.out_channels // self.groups, *self.kernel_size)}
        if self.bias:
            shapes["bias"] = (self.out_channels,)
        return shapes

    def initialize(self, params, buffers, rng):
        fan_in = params["weight"].shape[1] * math.prod(self.kernel_size)  # PyTorch's fan_in for this layout
        for array in params.values():
            uniform_fan_in_(array, fan_in, rng)

    def macs(self, input_shape):
        return math.prod(input_shape) * (self.out_channels // self.groups) * math.prod(self.kernel_size)

    def _geometry(self) -> Geometry:
        return Geometry(self.kernel_size, self.stride, self.padding, self.dilation, self.groups, self.padding)

    def forward(self, ctx, x):
        ctx.saved.x = x
        out = self.output_shape(x.shape[1:])
        return ctx.kernels.conv_transpose2d_forward(ctx, x, ctx.params["weight"], ctx.params.get("bias"),
                                                    self._geometry(), out[1:])

    def backward(self, ctx, grad):
        return ctx.kernels.conv_transpose2d_backward(ctx, ctx.saved.x, grad, ctx.params["weight"], self._geometry(),
                                                     ctx.grads["weight"], ctx.grads.get("bias"))

    def to_onnx(self, graph, x):
        """ONNX ``ConvTranspose`` (the same weight layout)."""
        weights = [graph.param("weight")] + ([graph.param("bias")] if self.bias else [])
        return graph.op("ConvTranspose", x, *weights, kernel_shape=list(self.kernel_size),
                        strides=list(self.stride), pads=list(self.padding) * 2,
                        output_padding=list(self.output_padding), dilations=list(self.dilation), group=self.groups)


def _check_groups(layer, in_channels, input_shape):
    for what, channels in (("in_channels", in_channels), ("out_channels", layer.out_channels)):
        if channels % layer.groups:
            raise layer.error(f"{what} ({channels}) must be divisible by groups ({layer.groups}); "
                              f"input shape {input_shape}", key="groups")


def _as2d(a):
    """A conv1d array ``(N, C, L)`` as ``(N, C, 1, L)`` (a view); 4-D arrays unchanged."""
    return a if a.ndim == 4 else a.reshape(a.shape[0], a.shape[1], 1, a.shape[2])
