"""Layers that only move values: identity, flatten, reshape (views, no kernels), slice and permute
(copies, kernels in :mod:`.cpu` and :mod:`.cuda`)."""

from __future__ import annotations

import math

from cnnrun.engine import ConfigError, Layer
from cnnrun.engine.options import int_option, show

ANY_INTEGER = -(2**62)  # the minimum handed to int_option for keys that may be negative


def _integers(value, key) -> list[int]:
    """A list of integers (any sign)."""
    if not isinstance(value, (list, tuple)) or not value:
        raise _key_error(key, value, "must be a non-empty list of integers")
    return [int_option(v, key, minimum=ANY_INTEGER) for v in value]


def _key_error(key, value, what):
    return ConfigError(f"{key} {what}; got {key}={show(value)}", key=key)


class Identity(Layer):
    """y = x; dx = dy. PyTorch: ``nn.Identity()``. Shape: unchanged."""

    type_name = "identity"
    kernels = ()

    def forward(self, ctx, x):
        return x

    def backward(self, ctx, grad):
        return grad

    def to_onnx(self, graph, x):
        """No node: the output is the input."""
        return x


class _SampleReshape(Layer):
    """A layer that reshapes every sample to its ``output_shape`` (C order: a view, no copy) and its
    gradient back to the input's shape."""

    kernels = ()  # reshapes of NumPy and device arrays alike

    def forward(self, ctx, x):
        ctx.saved.shape = x.shape
        return x.reshape(x.shape[0], *self.output_shape(x.shape[1:]))

    def backward(self, ctx, grad):
        return grad.reshape(ctx.saved.shape)


class Flatten(_SampleReshape):
    """The axes from ``start_axis`` on (counted with the batch axis 0, as PyTorch's ``start_dim``; negative
    from the end) to one, in C order; backward reshapes back. PyTorch: ``nn.Flatten(start_dim=1)``.

    Shape: (C, H, W) -> (C*H*W,) with start_axis 1, (C, H*W) with 2; (F,) stays (F,).
    """

    type_name = "flatten"

    def __init__(self, name, start_axis=1):
        super().__init__(name)
        self.start_axis = int_option(start_axis, "start_axis", minimum=ANY_INTEGER)

    def output_shape(self, shape):
        rank = len(shape) + 1
        axis = self.start_axis + rank if self.start_axis < 0 else self.start_axis
        if not 1 <= axis < rank:
            raise self.error(f"start_axis must name a non-batch axis (1 to {rank - 1}, or -{rank - 1} to -1) "
                             f"of the input shape {shape} with the batch; got start_axis={self.start_axis}",
                             key="start_axis")
        return (*shape[:axis - 1], math.prod(shape[axis - 1:]))

    def to_onnx(self, graph, x):
        """ONNX ``Flatten`` (axis 1) when everything after the batch becomes one axis, else ``Reshape``."""
        if len(graph.output_shape) == 1:
            return graph.op("Flatten", x, axis=1)
        return graph.reshape(x, [-1, *graph.output_shape])


class Reshape(_SampleReshape):
    """Every sample to ``shape`` (the non-batch axes; one -1 is inferred), in C order; backward reshapes
    back. PyTorch: ``x.reshape(N, *shape)``. Shape: (d_1, ...) -> ``shape``, with the same number of values.
    """

    type_name = "reshape"

    def __init__(self, name, shape):
        super().__init__(name)
        self.shape = _integers(shape, "shape")
        if any(d < 1 and d != -1 for d in self.shape) or self.shape.count(-1) > 1:
            raise _key_error("shape", shape, "must hold positive sizes and at most one -1")

    def output_shape(self, shape):
        size, known = math.prod(shape), math.prod(d for d in self.shape if d != -1)
        if (-1 in self.shape and size % known) or (-1 not in self.shape and size != known):
            raise self.error(f"shape {show(self.shape)} does not fit the input shape {shape} "
                             f"({size} values per sample)", key="shape")
        return tuple(size // known if d == -1 else d for d in self.shape)

    def to_onnx(self, graph, x):
        """ONNX ``Reshape`` to ``(-1, *output_shape)`` (-1: the batch)."""
        return graph.reshape(x, [-1, *graph.output_shape])


class Slice(Layer):
    """Channels ``start:stop:step`` of the input (Python's rule: negative counts from the end, ``stop``
    null for the end); backward puts dy back in those channels, zeros elsewhere. PyTorch:
    ``x[:, start:stop:step]`` (two slices make ShuffleNet's ``chunk(2, dim=1)``).
    Shape: (C, ...) -> (len(range(C)[start:stop:step]), ...).
    """

    type_name = "slice"
    kernels = ("slice_forward", "slice_backward")

    def __init__(self, name, start=0, stop=None, step=1):
        super().__init__(name)
        self.start = int_option(start, "start", minimum=ANY_INTEGER)
        self.stop = None if stop is None else int_option(stop, "stop", minimum=ANY_INTEGER)
        self.step = int_option(step, "step")

    def channels(self, channels: int) -> range:
        """The channels taken from an input of ``channels``, or a one-line error."""
        for key in ("start", "stop"):
            value = getattr(self, key)
            if value is not None and not -channels <= value <= channels:
                raise self.error(f"{key} is out of range for {channels} channels (-{channels} to {channels}); "
                                 f"got {key}={value}", key=key)
        taken = range(channels)[self.start:self.stop:self.step]
        if not taken:
            raise self.error(f"the slice {self.start}:{show(self.stop)}:{self.step} of {channels} channels "
                             f"is empty", key="stop")
        return taken

    def output_shape(self, shape):
        return (len(self.channels(shape[0])), *shape[1:])

    def forward(self, ctx, x):
        taken = self.channels(x.shape[1])
        ctx.saved.channels, ctx.saved.taken = x.shape[1], taken
        return ctx.kernels.slice_forward(x, taken.start, taken.step, len(taken))

    def backward(self, ctx, grad):
        taken = ctx.saved.taken
        return ctx.kernels.slice_backward(grad, ctx.saved.channels, taken.start, taken.step)

    def to_onnx(self, graph, x):
        """ONNX ``Slice`` of axis 1."""
        taken = self.channels(graph.input_shapes[0][0])
        return graph.slice(x, 1, taken.start, taken.stop, taken.step)


class Permute(Layer):
    """The axes reordered: output axis k is input axis ``dims[k]``, counted with the batch axis, which
    stays first (``dims[0] = 0``); backward applies the inverse order. PyTorch: ``x.permute(*dims)``
    (ConvNeXt's channels-last ``[0, 2, 3, 1]``). Shape: (d_1, d_2, ...) -> (d_dims[1], d_dims[2], ...).
    """

    type_name = "permute"
    kernels = ("permute",)

    def __init__(self, name, dims):
        super().__init__(name)
        self.dims = _integers(dims, "dims")

    def output_shape(self, shape):
        rank = len(shape) + 1
        if sorted(self.dims) != list(range(rank)) or self.dims[0] != 0:
            raise self.error(f"dims must be a permutation of 0 to {rank - 1} starting with the batch axis 0 "
                             f"(input shape {shape} with the batch); got dims={show(self.dims)}", key="dims")
        return tuple(shape[d - 1] for d in self.dims[1:])

    def forward(self, ctx, x):
        return ctx.kernels.permute(x, self.dims)

    def backward(self, ctx, grad):
        inverse = sorted(range(len(self.dims)), key=self.dims.__getitem__)
        return ctx.kernels.permute(grad, inverse)

    def to_onnx(self, graph, x):
        """ONNX ``Transpose``."""
        return graph.op("Transpose", x, perm=list(self.dims))
