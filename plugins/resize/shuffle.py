"""Channel rearrangements: pixel_shuffle, pixel_unshuffle, channel_shuffle. Each one's backward is
the inverse rearrangement of the gradient (kernels: :mod:`.cpu`, :mod:`.cuda`)."""

from __future__ import annotations

from cnnrun.engine import Layer
from cnnrun.engine.options import int_option


class PixelShuffle(Layer):
    """Channels into space: ``y[c, h r + i, w r + j] = x[c r^2 + i r + j, h, w]``, ``r = upscale_factor``.

    Shape: (C r^2, H, W) -> (C, H r, W r). PyTorch: ``nn.PixelShuffle(upscale_factor)``.
    """

    type_name = "pixel_shuffle"
    kernels = ("pixel_shuffle", "pixel_unshuffle")

    def __init__(self, name, upscale_factor):
        super().__init__(name)
        self.upscale_factor = int_option(upscale_factor, "upscale_factor")

    def output_shape(self, shape):
        r = self.upscale_factor
        if len(shape) != 3 or shape[0] % (r * r):
            raise self.error(f"expects a (C, H, W) input with C divisible by upscale_factor^2 = {r * r}; "
                             f"got input shape {tuple(shape)}")
        return (shape[0] // (r * r), shape[1] * r, shape[2] * r)

    def forward(self, ctx, x):
        return ctx.kernels.pixel_shuffle(x, self.upscale_factor)

    def backward(self, ctx, grad):
        return ctx.kernels.pixel_unshuffle(grad, self.upscale_factor)

    def to_onnx(self, graph, x):
        """ONNX ``DepthToSpace`` in "CRD" mode (PyTorch's channel order)."""
        return graph.op("DepthToSpace", x, blocksize=self.upscale_factor, mode="CRD")


class PixelUnshuffle(Layer):
    """Space into channels, the inverse of pixel_shuffle: ``y[c r^2 + i r + j, h, w] = x[c, h r + i, w r + j]``.

    Shape: (C, H r, W r) -> (C r^2, H, W), ``r = downscale_factor``. PyTorch: ``nn.PixelUnshuffle(downscale_factor)``.
    """

    type_name = "pixel_unshuffle"
    kernels = ("pixel_shuffle", "pixel_unshuffle")

    def __init__(self, name, downscale_factor):
        super().__init__(name)
        self.downscale_factor = int_option(downscale_factor, "downscale_factor")

    def output_shape(self, shape):
        r = self.downscale_factor
        if len(shape) != 3 or shape[1] % r or shape[2] % r:
            raise self.error(f"expects a (C, H, W) input with H and W divisible by downscale_factor = {r}; "
                             f"got input shape {tuple(shape)}")
        return (shape[0] * r * r, shape[1] // r, shape[2] // r)

    def forward(self, ctx, x):
        return ctx.kernels.pixel_unshuffle(x, self.downscale_factor)

    def backward(self, ctx, grad):
        return ctx.kernels.pixel_shuffle(grad, self.downscale_factor)

    def to_onnx(self, graph, x):
        """Reshape (N, C, H / r, r, W / r, r), Transpose to (N, C, r, r, H / r, W / r), Reshape (ONNX's
        SpaceToDepth orders the channels differently)."""
        (c, h, w), r = graph.input_shapes[0], self.downscale_factor
        blocks = graph.reshape(x, [-1, c, h // r, r, w // r, r])
        return graph.reshape(graph.op("Transpose", blocks, perm=[0, 1, 3, 5, 2, 4]), [-1, *graph.output_shape])


class ChannelShuffle(Layer):
    """Channels viewed as ``(groups, C / groups)`` and transposed (ShuffleNet): ``y[j g + i] = x[i C/g + j]``.

    Shape: (C, ...) -> the same. Backward shuffles the gradient with ``C / groups`` groups.
    PyTorch: ``nn.ChannelShuffle(groups)``.
    """

    type_name = "channel_shuffle"
    kernels = ("channel_shuffle",)

    def __init__(self, name, groups):
        super().__init__(name)
        self.groups = int_option(groups, "groups")

    def output_shape(self, shape):
        if len(shape) < 2 or shape[0] % self.groups:
            raise self.error(f"expects a (C, ...) input with C divisible by groups = {self.groups}; "
                             f"got input shape {tuple(shape)}", key="groups")
        return tuple(shape)

    def forward(self, ctx, x):
        return ctx.kernels.channel_shuffle(x, self.groups)

    def backward(self, ctx, grad):
        return ctx.kernels.channel_shuffle(grad, grad.shape[1] // self.groups)

    def to_onnx(self, graph, x):
        """Reshape (N, groups, C / groups, ...), Transpose the two channel axes, Reshape back."""
        c, *rest = graph.input_shapes[0]
        groups = graph.reshape(x, [-1, self.groups, c // self.groups, *rest])
        perm = [0, 2, 1, *range(3, len(rest) + 3)]
        return graph.reshape(graph.op("Transpose", groups, perm=perm), [-1, c, *rest])
