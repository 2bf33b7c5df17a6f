"""The ONNX graph that layers write themselves into (:meth:`cnnrun.engine.Layer.to_onnx`), one layer at a time.

A layer's ``to_onnx(graph, *inputs)`` gets the names of its input values and returns the name of its
output value; it adds nodes with :meth:`OnnxGraph.op`, its trained arrays with :meth:`OnnxGraph.param`
and constants with :meth:`OnnxGraph.constant`. Values carry the batch axis first (dynamic), so a
layer's ``(C, H, W)`` input is the ONNX tensor ``(N, C, H, W)``.
"""

from __future__ import annotations

import numpy as np

from ..errors import CnnrunError


class OnnxGraph:
    """Nodes and initializers of one exported network.

    For the layer being exported: ``name``, ``layer``, ``input_shapes`` and ``output_shape`` (without
    the batch, as :meth:`Layer.output_shape` sees them), and ``opset``, the ONNX opset written.
    """

    def __init__(self, opset: int, dtype, to_host=np.asarray):
        from onnx import ModelProto, helper

        self._helper = helper
        self.opset = opset
        self.dtype = np.dtype(dtype)
        self.model = ModelProto()  # initializers go straight in (no copies of large weights)
        self.nodes: list = []
        self._to_host = to_host
        self._taken: set[str] = {"input", "output"}
        self._node = self._arrays = None
        self._first_node = 0

    # -- the layer being exported ----------------------------------------------------------------
    def begin(self, node, arrays: dict) -> None:
        """Start exporting ``node`` (a :class:`~cnnrun.engine.network.Node`); ``arrays`` are its
        parameters and buffers by name."""
        self._node, self._arrays, self._first_node = node, arrays, len(self.nodes)

    def end(self, value: str, name: str | None = None) -> str:
        """The layer's result ``value``, renamed ``name`` (default: the layer's name, unless a value has it)
        when one of the layer's own nodes made it; else ``value`` (a layer that passes its input on)."""
        if not any(value in node.output for node in self.nodes[self._first_node:]):
            return value
        if name is None:
            if self.name in self._taken:
                return value
            name = self.name
            self._taken.add(name)
        self.rename(value, name)
        return name

    def rename(self, value: str, new: str) -> None:
        """Call ``value``, made by a node of the layer being exported, ``new`` (nothing outside that
        layer reads it yet)."""
        for node in self.nodes[self._first_node:]:
            for names in (node.output, node.input):
                for i, name in enumerate(names):
                    if name == value:
                        names[i] = new

    @property
    def name(self) -> str:
        return self._node.name

    @property
    def layer(self):
        return self._node.layer

    @property
    def input_shapes(self) -> tuple:
        return self._node.input_shapes

    @property
    def output_shape(self) -> tuple:
        return self._node.output_shape

    def require(self, opset: int, what: str) -> None:
        """Refuse an opset older than ``opset``, which ``what`` (an operator, an attribute) needs."""
        if self.opset < opset:
            raise CnnrunError(f"layer '{self.name}' ({self.layer.type_name}): {what} needs ONNX opset {opset} or "
                              f"later; got opset {self.opset} (choose a newer one: --opset {opset})")

    # -- building --------------------------------------------------------------------------------
    def op(self, op_type: str, *inputs: str, outputs: int = 1, **attributes):
        """Add a node ``op_type`` reading ``inputs`` (``""`` for an optional input left out) with
        ``attributes``; returns its output's name (a list of ``outputs`` names if more than one)."""
        name = self._fresh(f"{self.name}/{op_type}")
        names = [name] if outputs == 1 else [f"{name}:{i}" for i in range(outputs)]
        self.nodes.append(self._helper.make_node(op_type, list(inputs), names, name=name, **attributes))
        return names[0] if outputs == 1 else names

    def param(self, key: str) -> str:
        """This layer's parameter or buffer ``key`` as an initializer ``LAYER.KEY`` (its own layout)."""
        name = f"{self.name}.{key}"
        if name not in self._taken:
            self._taken.add(name)
            self._initializer(name, np.asarray(self._to_host(self._arrays[key]), self.dtype))
        return name

    def constant(self, values, dtype=None) -> str:
        """An initializer holding ``values``: integers as int64, numbers in the network's dtype
        (unless ``dtype`` says otherwise)."""
        array = np.asarray(values)
        dtype = dtype or (np.int64 if array.dtype.kind in "iub" else self.dtype)
        name = self._fresh(f"{self.name}/const")
        self._initializer(name, array.astype(dtype))
        return name

    def _initializer(self, name: str, array: np.ndarray) -> None:
        tensor = self.model.graph.initializer.add()
        tensor.name, tensor.data_type = name, self._helper.np_dtype_to_tensor_dtype(array.dtype)
        tensor.dims.extend(array.shape)
        tensor.raw_data = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"), copy=False).tobytes()

    def scalar(self, value: float) -> str:
        """A 0-d constant in the network's dtype (broadcasts against anything)."""
        return self.constant(np.asarray(value, self.dtype))

    def reshape(self, x: str, shape) -> str:
        """``x`` reshaped to ``shape`` (with the batch axis; -1 inferred, 0 copied)."""
        return self.op("Reshape", x, self.constant(list(shape)))

    def per_channel(self, vector: str, rank: int) -> str:
        """A ``(C,)`` value as ``(C, 1, ...)``, to broadcast over a ``rank``-axis layer input ``(C, ...)``."""
        return vector if rank == 1 else self.reshape(vector, [-1] + [1] * (rank - 1))

    def reduce(self, op_type: str, x: str, axes, keepdims: bool = True) -> str:
        """``op_type`` (ReduceMean, ReduceMax, ReduceSum) over ``axes``: an attribute before opset 18
        (13 for ReduceSum), an input from then on."""
        keep = int(keepdims)
        if self.opset >= 18 or op_type == "ReduceSum":
            return self.op(op_type, x, self.constant(list(axes)), keepdims=keep)
        return self.op(op_type, x, axes=list(axes), keepdims=keep)

    def slice(self, x: str, axis: int, start: int, stop: int, step: int = 1) -> str:
        """``x[start:stop:step]`` along ``axis`` (with the batch)."""
        return self.op("Slice", x, *(self.constant([v]) for v in (start, stop, axis, step)))

    def _fresh(self, name: str) -> str:
        candidate, k = name, 1
        while candidate in self._taken:
            k += 1
            candidate = f"{name}_{k}"
        self._taken.add(candidate)
        return candidate
