"""The layer contract, checked on every pass: what a layer returns has the shape and dtype it declared.

A layer's ``forward`` must return ``(N, *output_shape)`` in the network's dtype, its ``backward`` one
gradient per input shaped like that input, and it must leave every ``ctx.grads`` array shaped like
its parameter. A plugin that breaks this would otherwise train on silently (broadcasting hides a
wrong shape; a float64 output turns a float32 network into a float64 one): the engine stops with
a :class:`LayerContractError` naming the layer and the array. The expected shapes are computed once
per batch size, so a pass costs a few tuple comparisons per layer (CPU and CUDA arrays alike: both
have ``.shape`` and ``.dtype``).
"""

from __future__ import annotations

import numpy as np

from .errors import CnnrunError

MAX_BATCH_SIZES = 8  # expected shapes kept for this many batch sizes (training, last batch, eval, ...)


class LayerContractError(CnnrunError):
    """A layer returned an array whose shape or dtype differs from what it declared."""


class Contract:
    """The shapes and dtype each node of a network must produce, by batch size."""

    def __init__(self, nodes, dtype, params: dict[str, dict]):
        self.nodes = nodes
        self.dtype = np.dtype(dtype)
        self.param_shapes = {layer: {name: tuple(array.shape) for name, array in named.items()}
                             for layer, named in params.items()}  # what ctx.grads must hold
        self._by_batch: dict[int, BatchContract] = {}

    def for_batch(self, batch: int) -> "BatchContract":
        """The expected shapes for a batch of ``batch`` examples (computed once per batch size)."""
        expected = self._by_batch.get(batch)
        if expected is None:
            if len(self._by_batch) >= MAX_BATCH_SIZES:
                self._by_batch.clear()
            expected = self._by_batch[batch] = BatchContract(self, batch)
        return expected


class BatchContract:
    """Expected ``(N, ...)`` shapes of every node's output and input gradients for one batch size."""

    def __init__(self, contract: Contract, batch: int):
        self.dtype = contract.dtype
        self.param_shapes = contract.param_shapes
        self.outputs = {node.name: (batch, *node.output_shape) for node in contract.nodes}
        self.inputs = {node.name: tuple((batch, *shape) for shape in node.input_shapes)
                       for node in contract.nodes}

    def check_output(self, node, output) -> None:
        """``output`` is what ``node``'s forward returned."""
        expected = self.outputs[node.name]
        if getattr(output, "shape", None) != expected or not _same(output.dtype, self.dtype):
            raise _error(node, "forward returned", "its output", output, expected, self.dtype,
                         "output_shape")

    def check_backward(self, node, input_grads, grads: dict, needed: bool = True) -> tuple:
        """``input_grads`` (what ``node``'s backward returned, one array or a tuple) as a tuple, after
        checking it and the layer's ``ctx.grads`` entries (``needed`` False: the input gradients may
        be None)."""
        expected = self.inputs[node.name]
        if len(expected) == 1 and not isinstance(input_grads, (tuple, list)):
            input_grads = (input_grads,)
        if not isinstance(input_grads, (tuple, list)) or len(input_grads) != len(expected):
            count = len(input_grads) if isinstance(input_grads, (tuple, list)) else "no tuple"
            raise LayerContractError(f"layer '{node.name}' ({node.layer.type_name}): backward must return "
                                     f"{len(expected)} input gradient(s), one per input; got {count}")
        for index, (grad, shape) in enumerate(zip(input_grads, expected)):
            if grad is None and not needed:
                continue
            if getattr(grad, "shape", None) != shape or not _same(grad.dtype, self.dtype):
                what = "the gradient of its input" + (f" {index} ('{node.inputs[index]}')" if len(expected) > 1 else "")
                raise _error(node, "backward returned", what, grad, shape, self.dtype, "input shape")
        for name, shape in self.param_shapes.get(node.name, {}).items():
            grad = grads.get(name)
            if getattr(grad, "shape", None) != shape or not _same(grad.dtype, self.dtype):
                raise _error(node, "backward left", f"ctx.grads['{name}'] (the gradient of {node.name}.{name})",
                             grad, shape, self.dtype, "parameter shape")
        return input_grads


def _same(dtype, expected) -> bool:
    return dtype is expected or dtype == expected  # NumPy reuses dtype objects: usually the first test


def _error(node, verb: str, what: str, array, shape, dtype, declared: str) -> LayerContractError:
    got = (f"an array of shape {tuple(array.shape)} and dtype {array.dtype}"
           if hasattr(array, "shape") and hasattr(array, "dtype") else f"{type(array).__name__}")
    return LayerContractError(f"layer '{node.name}' ({node.layer.type_name}): {verb} {got} as {what}; "
                              f"expected shape {shape} (its {declared}) and dtype {dtype} (the network's)")
