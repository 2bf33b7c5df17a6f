"""The state of an ONNX import: what every ONNX value is (a folded constant or the output of a cnnrun
layer seen through a transpose), and the cnnrun layers, parameters and buffers emitted so far."""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass

import numpy as np

from ..errors import CnnrunError, ConfigError
from ..network import INPUT


class OnnxImportError(CnnrunError):
    """An ONNX model that cnnrun cannot import: a bad file, or an operator or attribute it cannot express."""


@dataclass(frozen=True)
class Tensor:
    """A value the network computes: the output of the cnnrun layer ``layer`` (``"input"``: the network
    input), per sample of shape ``shape``. ONNX sees it with its axes (the batch axis 0 included) in the
    order ``perm``: ONNX axis k is cnnrun axis ``perm[k]`` (None: the same order). A Transpose only
    changes ``perm``; a ``permute`` layer is emitted when a layer needs the axes in ONNX's order."""

    layer: str
    shape: tuple
    perm: tuple | None = None

    def onnx_shape(self, batch: int) -> tuple:
        full = (batch, *self.shape)
        return full if self.perm is None else tuple(full[p] for p in self.perm)

    def cnnrun_axis(self, onnx_axis: int) -> int:
        """The cnnrun axis (counted with the batch as 0) that ONNX axis ``onnx_axis`` is."""
        rank = len(self.shape) + 1
        onnx_axis = onnx_axis + rank if onnx_axis < 0 else onnx_axis
        if not 0 <= onnx_axis < rank:
            raise ValueError(onnx_axis)
        return onnx_axis if self.perm is None else self.perm[onnx_axis]


def node_label(node) -> str:
    """How an error names an ONNX node: ``'name' (OpType)``."""
    return f"'{node.name}' ({node.op_type})" if node.name else f"{node.op_type} -> {', '.join(node.output)}"


def layer_name(node_name: str, op_type: str) -> str:
    """A cnnrun layer name from an ONNX node name: PyTorch's ``/features/features.0/Conv`` reads
    ``features.0.Conv`` (a path part that the next one starts with is left out)."""
    parts = [p for p in re.split(r"[/:]+", node_name) if p]
    kept = [p for i, p in enumerate(parts) if not (i + 1 < len(parts) and parts[i + 1].startswith(p + "."))]
    return ".".join(kept) or op_type.lower()


class Builder:
    """The cnnrun network an import is writing: layer entries (each with explicit ``inputs``), their
    output shapes, parameters and buffers, checked against the layer classes as they are emitted."""

    def __init__(self, registry, input_shape: tuple, batch: int, uses: dict[str, int]):
        self.registry = registry
        self.batch = batch
        self.uses = uses  # how many node inputs and graph outputs read each ONNX value
        self.layers: list[dict] = []
        self.params: dict[str, dict[str, np.ndarray]] = {}
        self.buffers: dict[str, dict[str, np.ndarray]] = {}
        self.shapes: dict[str, tuple] = {INPUT: tuple(input_shape)}
        self.bound: dict[str, list[str]] = {}  # cnnrun layer -> the ONNX values that are its output
        self.node = None  # the ONNX node being converted
        self._permuted: dict[tuple, Tensor] = {}

    # -- errors ------------------------------------------------------------------------------------
    def error(self, message: str) -> OnnxImportError:
        return OnnxImportError(f"node {node_label(self.node)}: {message}")

    # -- emitting ----------------------------------------------------------------------------------
    def emit(self, type_name: str, inputs, *, params=None, buffers=None, suffix: str = "",
             **options) -> Tensor:
        """Add a layer of ``type_name`` reading the tensors ``inputs`` (in cnnrun's axis order), named
        after the current ONNX node; returns its output."""
        inputs = [self.plain(t) for t in inputs]
        name = self._unique(layer_name(self.node.name, self.node.op_type) + suffix)
        try:
            cls = self.registry.get(type_name)
            options = {k: v for k, v in options.items() if not _is_default(cls, k, v)}
            layer = cls.from_config(name, options)
            shapes = [self.shapes[t.layer] for t in inputs]
            shape = tuple(int(s) for s in layer.output_shape(*shapes))
            expected = (layer.parameter_shapes(*shapes), layer.buffer_shapes(*shapes))
        except ConfigError as err:
            raise self.error(f"as cnnrun {type_name}: {err.message}") from None
        for what, arrays, shapes_ in (("parameter", params or {}, expected[0]),
                                      ("buffer", buffers or {}, expected[1])):
            got = {k: tuple(np.shape(v)) for k, v in arrays.items()}
            if got != {k: tuple(s) for k, s in shapes_.items()}:
                raise self.error(f"its {what}s {got} do not fit cnnrun {type_name} ({dict(shapes_)})")
        self.layers.append({"name": name, "type": type_name, "inputs": [t.layer for t in inputs], **options})
        if params:
            self.params[name] = {k: np.array(v, np.float32) for k, v in params.items()}  # copies
        if buffers:
            self.buffers[name] = {k: np.array(v, np.float32) for k, v in buffers.items()}
        self.shapes[name] = shape
        return Tensor(name, shape)

    def _unique(self, name: str) -> str:
        if name == INPUT:
            name = "input_"
        candidate, k = name, 1
        while candidate in self.shapes:
            k += 1
            candidate = f"{name}_{k}"
        return candidate

    def plain(self, t: Tensor) -> Tensor:
        """``t`` with its axes in ONNX's order: a ``permute`` layer when it is seen transposed."""
        if t.perm is None:
            return t
        key = (t.layer, t.perm)
        if key not in self._permuted:
            self._permuted[key] = self.emit("permute", [Tensor(t.layer, t.shape)], suffix=".permute",
                                            dims=list(t.perm))
        return self._permuted[key]

    def entry(self, layer: str) -> dict:
        return next(e for e in self.layers if e["name"] == layer)

    def foldable(self, t: Tensor, index: int) -> dict | None:
        """The entry of the conv2d/conv1d/linear layer behind ``t``, input ``index`` of the current node,
        when that node is the only reader of the layer (so its bias can take a constant added to it)."""
        value = self.node.input[index]
        if t.layer == INPUT or self.bound.get(t.layer) != [value] or self.uses.get(value) != 1:
            return None
        entry = self.entry(t.layer)
        return entry if entry["type"] in ("conv2d", "conv1d", "linear") else None

    # -- constants seen by a tensor ----------------------------------------------------------------
    def per_channel(self, t: Tensor, const: np.ndarray) -> np.ndarray | None:
        """``const`` as one value per channel of ``t`` ``(C,)`` when broadcasting it against ``t`` in ONNX
        varies it along the channel axis at most (and does not widen ``t``); else None."""
        shape = t.onnx_shape(self.batch)
        const = np.asarray(const, np.float32)
        if const.ndim > len(shape):
            return None
        const = const.reshape((1,) * (len(shape) - const.ndim) + const.shape)
        channel = t.perm.index(1) if t.perm else 1
        if any(d != 1 for i, d in enumerate(const.shape) if i != channel) or \
                const.shape[channel] not in (1, shape[channel]):
            return None
        return np.broadcast_to(const.reshape(-1), (shape[channel],)).copy()


def attr_float(value) -> float:
    """An ONNX float attribute (stored as float32) as the shortest decimal that is that float32:
    ``0.2``, not ``0.20000000298023224``, in the JSON."""
    return float(str(np.float32(value)))


def _is_default(cls, key: str, value) -> bool:
    """Whether ``value`` is the layer class's default for option ``key`` (left out of the JSON)."""
    parameter = inspect.signature(cls.__init__).parameters.get(key)
    return parameter is not None and parameter.default is not inspect.Parameter.empty and \
        type(parameter.default) is type(value) and parameter.default == value


def onnx_padding(builder: Builder, attrs: dict, spatial: int, words=("valid", "same", "same_lower")):
    """A cnnrun ``padding`` from ONNX's ``auto_pad`` and ``pads`` ([x1_begin, x2_begin, ..., x1_end, ...],
    which is cnnrun's per-side order)."""
    auto = attrs.get("auto_pad", "NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto != "NOTSET":
        word = {"VALID": "valid", "SAME_UPPER": "same", "SAME_LOWER": "same_lower"}.get(auto)
        if word not in words:
            raise builder.error(f"auto_pad {auto} is not supported here; supported: NOTSET, "
                                f"{', '.join(w.upper() for w in words)}")
        return word
    pads = [int(p) for p in attrs.get("pads", [0] * 2 * spatial)]
    if len(pads) != 2 * spatial or min(pads) < 0:
        raise builder.error(f"pads must be {2 * spatial} values >= 0; got pads={pads}")
    if pads[:spatial] == pads[spatial:]:
        return pads[0] if len(set(pads)) == 1 else pads[:spatial]
    return pads
