"""A network: layers wired as a DAG from a JSON description, run forward and backward on batches."""

from __future__ import annotations

import json
import math
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .blocks import PART_OF, expand_blocks, strip_comments
from .contract import Contract
from .errors import CnnrunError, ConfigError, ShapeError, did_you_mean
from .files import FileProblem, regular_file
from .layer import RESERVED_KEYS, Context, Layer, Shape
from .memory import check_fits
from .options import show

INPUT = "input"
TOP_LEVEL_KEYS = ("name", "input", "blocks", "layers", "train")
DTYPES = ("float32", "float64")


@dataclass
class Node:
    """One layer of a network, the names of the nodes it reads, and its output shape (no batch)."""

    name: str
    layer: Layer
    inputs: tuple[str, ...]
    input_shapes: tuple[Shape, ...]
    output_shape: Shape
    part_of: dict | None = None  # {"block": name, "instance": name} for a layer of a block instance


class Network:
    """Layers in topological order; the last one is the output.

    ``params``, ``grads`` and ``buffers`` map a layer name to ``{array name: array}`` (only layers
    that have any); arrays are C-contiguous, of the network's dtype, in PyTorch's layouts,
    initialized once from ``seed`` (:meth:`initialize`).
    """

    def __init__(self, name: str, input_shape: Shape, nodes: list[Node], *, dtype="float32",
                 config: dict | None = None, devices=None, seed: int = 0):
        self.name = name
        self.input_shape = tuple(input_shape)
        self.nodes = nodes
        self.dtype = np.dtype(dtype)
        self.config = config
        if devices is None:
            from .plugins import default_registries
            devices = default_registries().devices
        self.devices = devices
        self.backend = devices.open("cpu")
        self.params: dict[str, dict[str, np.ndarray]] = {}
        self.grads: dict[str, dict[str, np.ndarray]] = {}
        self.buffers: dict[str, dict[str, np.ndarray]] = {}
        shapes = [(node.name, node.layer.parameter_shapes(*node.input_shapes),
                   node.layer.buffer_shapes(*node.input_shapes)) for node in nodes]
        self._check_memory(shapes)
        for name, params, buffers in shapes:
            if params:
                self.params[name] = {k: np.zeros(s, self.dtype) for k, s in params.items()}
                self.grads[name] = {k: np.zeros(s, self.dtype) for k, s in params.items()}
            if buffers:
                self.buffers[name] = {k: np.zeros(s, self.dtype) for k, s in buffers.items()}
        unseeded = np.random.default_rng(0)  # one for all until initialize() seeds each layer's own
        self.contexts = {node.name: Context(self.params.get(node.name, {}), self.grads.get(node.name, {}),
                                            self.buffers.get(node.name, {}), backend=self.backend, rng=unseeded)
                         for node in nodes}
        self._contract = Contract(nodes, self.dtype, self.params)
        self._forward_done = False
        self.initialize(seed)

    def _check_memory(self, shapes) -> None:
        """Refuse, before allocating, parameters, gradients and buffers that cannot fit in memory."""
        arrays = [(math.prod(shape), f"layer '{name}' {key} of shape {tuple(shape)}")
                  for name, params, buffers in shapes for tree in (params, params, buffers)
                  for key, shape in tree.items()]
        if arrays:
            check_fits(sum(n for n, _ in arrays) * self.dtype.itemsize,
                       f"network '{self.name}': its parameters, gradients and buffers (the largest: "
                       f"{max(arrays)[1]})")

    # -- construction --------------------------------------------------------------------------
    @classmethod
    def from_json(cls, path, registry=None, dtype="float32", seed: int = 0) -> "Network":
        """Build a network from a JSON file, its parameters initialized from ``seed``; every error
        names the file."""
        config = read_network_file(path)
        try:
            return cls.from_config(config, registry=registry, dtype=dtype, seed=seed)
        except ConfigError as err:
            raise err.in_file(str(path)) from None

    @classmethod
    def from_config(cls, config: dict[str, Any], registry=None, dtype="float32", seed: int = 0) -> "Network":
        """Build a network from a parsed JSON description (see docs/format.md), its parameters
        initialized from ``seed``; ``config`` of the network is the description with its blocks
        expanded (:func:`~cnnrun.engine.blocks.expand_blocks`)."""
        if registry is None:
            from .plugins import default_registry
            registry = default_registry()
        if not isinstance(config, dict):
            raise ConfigError(f"the network must be a JSON object; got {show(config)[:60]}")
        for key in config:
            if key not in TOP_LEVEL_KEYS:
                raise ConfigError(f"unknown top-level key '{key}'{did_you_mean(key, TOP_LEVEL_KEYS)}; "
                                  f"expected: {', '.join(TOP_LEVEL_KEYS)}", key=key)
        config = expand_blocks(config)
        if dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}; got {dtype!r}")
        name = config.get("name", "network")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"name must be a non-empty string; got name={show(name)}", key="name")
        input_shape = _input_shape(config)
        layers = config.get("layers")
        if not isinstance(layers, list) or not layers:
            raise ConfigError(f"'layers' must be a non-empty list of layer objects; got layers={show(layers)[:60]}",
                              key="layers")
        return cls(name, input_shape, _build_nodes(layers, input_shape, registry),
                   dtype=dtype, config=config, devices=getattr(registry, "devices", None), seed=seed)

    def initialize(self, seed: int = 0) -> None:
        """(Re)initialize every parameter and buffer with PyTorch's default scheme, from ``seed``."""
        rng = np.random.default_rng(seed)
        for node in self.nodes:
            params = {k: np.zeros(a.shape, self.dtype) for k, a in self.params.get(node.name, {}).items()}
            buffers = {k: np.zeros(a.shape, self.dtype) for k, a in self.buffers.get(node.name, {}).items()}
            node.layer.initialize(params, buffers, rng)
            for tree, fresh in ((self.params, params), (self.buffers, buffers)):
                for key, array in fresh.items():
                    self.backend.copy_into(tree[node.name][key], array)
            self.contexts[node.name].rng = np.random.default_rng(rng.integers(2**63))

    # -- running -------------------------------------------------------------------------------
    @property
    def output_shape(self) -> Shape:
        """The output shape for one sample."""
        return self.nodes[-1].output_shape

    @property
    def device(self) -> str:
        """The name of the device where the arrays live and the layers run ("cpu", "cuda", ...)."""
        return self.backend.name

    def to(self, device) -> "Network":
        """Move parameters, gradients and buffers to ``device`` (a registered device's name, or an
        opened :class:`~cnnrun.engine.device.Device`); returns ``self``.

        Every layer's kernels must exist there: a layer whose kernels do not is a
        :class:`CnnrunError` naming it and them, before anything moves. The device the network is
        on already is a no-op; another instance of the same device keeps the arrays as they are.
        """
        if device is self.backend or device == self.backend.name:
            return self
        backend = self.devices.open(device)
        device = backend.name
        missing = [(n, n.layer.missing_kernels(backend)) for n in self.nodes]
        missing = [(n, ops) for n, ops in missing if ops]
        if missing:
            layers = ", ".join(f"'{n.name}' ({n.layer.type_name})" for n, _ in missing)
            needs = "; ".join(f"'{n.name}' needs {', '.join(ops)}" for n, ops in missing)
            raise CnnrunError(f"{self.name}: no {device} implementation for layer(s) {layers}; {needs}; run them "
                              f"on another device or register {device} kernels for them (cnnrun_register_kernels)")
        if backend.name != self.backend.name:
            for tree in (self.params, self.grads, self.buffers):
                for arrays in tree.values():
                    for key, array in arrays.items():
                        arrays[key] = backend.asarray(self.backend.to_host(array), self.dtype)
        for ctx in self.contexts.values():
            ctx.backend = backend
        self.backend = backend
        self._forward_done = False
        return self

    def forward(self, x, training: bool = False, timer=None):
        """Run the batch ``x`` of shape ``(N, *input_shape)``; returns the last layer's output (an
        array on the network's device).

        ``training=True`` uses batch statistics and dropout and keeps what ``backward`` needs.
        ``timer(node_name, "forward")``, if given, is a context manager wrapped around each layer.
        """
        x = self._check_input(x)
        contract = self._contract.for_batch(x.shape[0])
        values = {INPUT: x}
        for node in self.nodes:
            ctx = self.contexts[node.name]
            ctx.training = training
            ctx.saved.__dict__.clear()
            with timer(node.name, "forward") if timer else nullcontext():
                values[node.name] = node.layer.forward(ctx, *(values[i] for i in node.inputs))
            contract.check_output(node, values[node.name])
        self._forward_done = True
        self._batch = x.shape[0]
        return values[self.nodes[-1].name]

    def backward(self, grad_output, timer=None, *, start: str | None = None, input_grad: bool = True):
        """Back-propagate ``grad_output``, the gradient of the output of layer ``start`` (default: the
        last layer); fills ``grads`` (zero for layers it does not reach), returns the gradient with
        respect to the input, or None with ``input_grad=False`` (training: the layers fed by the
        input alone then skip it, see ``Context.needs_input_grad``).

        ``timer(node_name, "backward")``, if given, is a context manager wrapped around each layer.
        """
        if not self._forward_done:
            raise CnnrunError("backward() needs a forward() first")
        if start is None:
            start, shape = self.nodes[-1].name, self.nodes[-1].output_shape
        else:
            shape = self._output_shape_of(start)
        expected = (self._batch, *shape)
        grad_output = self.backend.asarray(grad_output, self.dtype)
        if tuple(grad_output.shape) != expected:
            raise ShapeError(f"{self.name}: backward expected a gradient of shape {expected}; "
                             f"got {grad_output.shape}")
        grads = {start: grad_output}
        contract = self._contract.for_batch(self._batch)
        for node in reversed(self.nodes):
            grad = grads.pop(node.name, None)
            ctx = self.contexts[node.name]
            if grad is None:  # the node does not reach the output
                for array in ctx.grads.values():
                    self.backend.fill(array, 0)
                continue
            ctx.needs_input_grad = input_grad or any(source != INPUT for source in node.inputs)
            with timer(node.name, "backward") if timer else nullcontext():
                input_grads = node.layer.backward(ctx, grad)
            input_grads = contract.check_backward(node, input_grads, ctx.grads, ctx.needs_input_grad)
            for source, g in zip(node.inputs, input_grads):
                if source == INPUT and not input_grad:
                    continue
                grads[source] = g if source not in grads else self.backend.add(grads[source], g)
        if not input_grad:
            return None
        if INPUT in grads:
            return grads[INPUT]
        return self.backend.zeros((self._batch, *self.input_shape), self.dtype)  # input reaches nothing

    def _output_shape_of(self, name: str) -> Shape:
        if name == INPUT:
            return self.input_shape
        for node in self.nodes:
            if node.name == name:
                return node.output_shape
        raise CnnrunError(f"{self.name}: backward(start={name!r}) names no layer")

    def _check_input(self, x):
        if not hasattr(x, "shape"):
            x = np.asarray(x)
        expected = ("N", *self.input_shape)
        if len(x.shape) != len(expected) or tuple(x.shape[1:]) != self.input_shape or x.shape[0] < 1:
            raise ShapeError(f"{self.name}: expected input of shape ({', '.join(map(str, expected))}); "
                             f"got {tuple(x.shape)}")
        return self.backend.asarray(x, self.dtype)

    # -- inspection ----------------------------------------------------------------------------
    def summary(self) -> list[dict[str, Any]]:
        """One row per layer: name, type, inputs (the names it reads; ``"input"`` is the network's
        input), output_shape, params (trained values), non_trainable_params (buffer values, such as
        batchnorm's running statistics), macs (per sample), and block and instance (the block the
        layer comes from and its instance, or None)."""
        rows = []
        for node in self.nodes:
            layer, shapes = node.layer, node.input_shapes
            rows.append({"name": node.name, "type": layer.type_name, "inputs": list(node.inputs),
                         "output_shape": list(node.output_shape),
                         "params": sum(int(np.prod(s)) for s in layer.parameter_shapes(*shapes).values()),
                         "non_trainable_params": sum(int(np.prod(s)) for s in layer.buffer_shapes(*shapes).values()),
                         "macs": int(layer.macs(*shapes)),
                         "block": node.part_of["block"] if node.part_of else None,
                         "instance": node.part_of["instance"] if node.part_of else None})
        return rows

    def parameter_count(self) -> int:
        """The number of trained values."""
        return sum(a.size for p in self.params.values() for a in p.values())

    def __repr__(self) -> str:
        return f"Network({self.name!r}, input_shape={self.input_shape}, layers={len(self.nodes)})"


def read_network_file(path) -> dict:
    """The parsed JSON of a network file, ``//`` comments allowed: a file that is not UTF-8 JSON (or
    not a regular file) is a :class:`ConfigError` naming it."""
    path = Path(path)
    try:
        text = regular_file(path).read_bytes().decode("utf-8")
    except FileProblem as exc:
        raise ConfigError(exc.reason, file=str(path)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read the file: {exc.strerror or exc}", file=str(path)) from None
    except UnicodeDecodeError as exc:
        line = exc.object.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"not UTF-8 text: invalid byte 0x{exc.object[exc.start]:02x} at line {line} "
                          f"(byte {exc.start})", file=str(path)) from None
    try:
        return json.loads(strip_comments(text))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}",
                          file=str(path)) from None
    except RecursionError:
        raise ConfigError("invalid JSON: arrays or objects nested too deeply", file=str(path)) from None


def _input_shape(config: dict) -> Shape:
    spec = config.get("input")
    if not isinstance(spec, dict) or "shape" not in spec:
        raise ConfigError('missing "input": {"shape": [C, H, W]} (or [C, L] for 1-D data)', key="input")
    for key in spec:
        if key != "shape":
            raise ConfigError(f"unknown key 'input.{key}'; input accepts: shape", key="input")
    shape = spec["shape"]
    if (not isinstance(shape, list) or not 1 <= len(shape) <= 3
            or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape)):
        raise ConfigError(f"input.shape must be a list of 1 to 3 positive integers, [C, H, W] or [C, L] "
                          f"(no batch); got input.shape={show(shape)}", key="input")
    return tuple(shape)


def _build_nodes(layers: list, input_shape: Shape, registry) -> list[Node]:
    explicit = [entry.get("name") for entry in layers if isinstance(entry, dict)]
    taken = {n for n in explicit if isinstance(n, str)}
    counters: dict[str, int] = {}
    shapes: dict[str, Shape] = {INPUT: input_shape}
    defined_later = set(taken)
    nodes: list[Node] = []
    for index, entry in enumerate(layers):
        part_of = _part_of(entry, index)
        try:
            nodes.append(_build_node(entry, index, registry, taken, counters, shapes, defined_later, nodes))
        except ConfigError as err:
            if part_of and err.block is None:  # name the block, the instance and the layer inside it
                err.block = f"block '{part_of['block']}' (instance '{part_of['instance']}')"
                prefix = part_of["instance"] + "."
                err.layer = err.layer[len(prefix):] if str(err.layer).startswith(prefix) else err.layer
            raise
        nodes[-1].part_of = part_of
    return nodes


def _part_of(entry, index: int) -> dict | None:
    part_of = entry.get(PART_OF) if isinstance(entry, dict) else None
    if part_of is not None and not (isinstance(part_of, dict) and set(part_of) == {"block", "instance"}
                                    and all(isinstance(v, str) for v in part_of.values())):
        raise ConfigError(f'{PART_OF} must be {{"block": NAME, "instance": NAME}} (written by block expansion); '
                          f"got {show(part_of)[:60]}", layer=f"layers[{index}]", key=PART_OF)
    return part_of


def _build_node(entry, index, registry, taken, counters, shapes, defined_later, nodes) -> Node:
    where = f"layers[{index}]"
    if not isinstance(entry, dict):
        raise ConfigError(f"{where} must be a JSON object; got {show(entry)[:60]}")
    type_name = entry.get("type")
    label = entry.get("name") if isinstance(entry.get("name"), str) else where
    if "type" not in entry:
        raise ConfigError("missing required key 'type'", layer=label, key="type")
    try:
        layer_class = registry.get(type_name)
    except ConfigError as err:
        err.layer = label
        raise
    name = _node_name(entry, type_name, taken, counters, shapes, label)
    defined_later.discard(name)
    inputs = _node_inputs(entry, name, type_name, nodes, shapes, defined_later)
    options = {k: v for k, v in entry.items() if k not in RESERVED_KEYS and k != PART_OF}
    layer = layer_class.from_config(name, options)
    n = len(inputs)
    if n < layer.min_inputs or (layer.max_inputs is not None and n > layer.max_inputs):
        wanted = (f"{layer.min_inputs}" if layer.min_inputs == layer.max_inputs else
                  f"at least {layer.min_inputs}" if layer.max_inputs is None else
                  f"{layer.min_inputs} to {layer.max_inputs}")
        raise layer.error(f"takes {wanted} input(s); got inputs={show(list(inputs))}", key="inputs")
    input_shapes = tuple(shapes[i] for i in inputs)
    output_shape = tuple(int(s) for s in layer.output_shape(*input_shapes))
    if not output_shape or any(s <= 0 for s in output_shape):
        raise layer.error(f"output shape {output_shape} is empty for input shape(s) "
                          f"{', '.join(map(str, input_shapes))}")
    shapes[name] = output_shape
    return Node(name, layer, inputs, input_shapes, output_shape)


def _node_name(entry, type_name, taken, counters, shapes, label) -> str:
    if "name" in entry:
        name = entry["name"]
        if not isinstance(name, str) or not name:
            raise ConfigError(f"name must be a non-empty string; got name={show(name)}", layer=label,
                              layer_type=type_name, key="name")
        if name == INPUT:
            raise ConfigError(f"the name '{INPUT}' is reserved for the network input", layer=name,
                              layer_type=type_name, key="name")
        if name in shapes:
            raise ConfigError(f"name '{name}' is used by an earlier layer", layer=name,
                              layer_type=type_name, key="name")
        return name
    while True:
        counters[type_name] = counters.get(type_name, 0) + 1
        name = f"{type_name}_{counters[type_name]}"
        if name not in taken:
            taken.add(name)
            return name


def _node_inputs(entry, name, type_name, nodes, shapes, defined_later) -> tuple[str, ...]:
    if "inputs" not in entry:
        return (nodes[-1].name if nodes else INPUT,)
    inputs = entry["inputs"]
    if isinstance(inputs, str):
        inputs = [inputs]
    if not isinstance(inputs, list) or not inputs or not all(isinstance(i, str) for i in inputs):
        raise ConfigError(f"inputs must be a list of earlier layer names or \"input\"; got inputs={show(inputs)}",
                          layer=name, layer_type=type_name, key="inputs")
    for source in inputs:
        if source in shapes:
            continue
        if source == name or source in defined_later:
            raise ConfigError(f"inputs names '{source}', which is not an earlier layer (a layer can only "
                              f"read layers above it)", layer=name, layer_type=type_name, key="inputs")
        hint = did_you_mean(source, list(shapes))
        raise ConfigError(f"inputs names '{source}', which is no layer{hint}", layer=name,
                          layer_type=type_name, key="inputs")
    return tuple(inputs)
