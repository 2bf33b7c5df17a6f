"""A network file: reading its JSON, and turning its ``layers`` into the nodes of a
:class:`~cnnrun.engine.network.Network` (names, inputs, shapes, block membership)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .blocks import PART_OF, strip_comments
from .errors import ConfigError, did_you_mean
from .files import FileProblem, regular_file
from .layer import RESERVED_KEYS, Layer, Shape
from .options import show

INPUT = "input"


@dataclass
class Node:
    """One layer of a network, the names of the nodes it reads, and its output shape (no batch)."""

    name: str
    layer: Layer
    inputs: tuple[str, ...]
    input_shapes: tuple[Shape, ...]
    output_shape: Shape
    part_of: dict | None = None  # {"block": name, "instance": name} for a layer of a block instance
    trainable: bool = True  # False: parameters frozen ("trainable": false, Network.freeze)



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


def config_input_shape(config: dict) -> Shape:
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


def build_nodes(layers: list, input_shape: Shape, registry) -> list[Node]:
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
    trainable = entry.get("trainable", True)
    if not isinstance(trainable, bool):
        raise layer.error(f"trainable must be true or false; got trainable={show(trainable)}", key="trainable")
    return Node(name, layer, inputs, input_shapes, output_shape, trainable=trainable)


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
