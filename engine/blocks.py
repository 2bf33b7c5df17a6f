"""Blocks: named, parameterized groups of layers that a network file defines once and uses many times.

:func:`expand_blocks` turns a network description with a ``"blocks"`` section and block uses
(``{"block": "basic", "name": "stage1", "repeat": 3, "channels": 16}``) into the same description
with a flat ``"layers"`` list, before the network is built; docs/format.md has the rules. Instance
``K`` of a use named ``stage1`` is ``stage1.K``; its layer ``conv1`` is ``stage1.K.conv1``.
"""

from __future__ import annotations

import re
from typing import Any

from .errors import ConfigError, did_you_mean
from .options import show

BLOCK_KEYS = ("params", "layers")
USE_KEYS = ("block", "name", "inputs", "repeat", "start")
PART_OF = "part_of"  # on an expanded layer: {"block": block name, "instance": instance name}
BLOCK_INPUT = "$in"
NETWORK_INPUT = "input"
_COMMENT = re.compile(r'"(?:[^"\\\n]|\\.)*"|//[^\n]*')


def strip_comments(text: str) -> str:
    """``text`` without ``//`` comments (from ``//`` to the end of the line, outside strings); the
    newlines stay, so JSON errors keep their line and column numbers."""
    return _COMMENT.sub(lambda m: m.group() if m.group().startswith('"') else "", text)


def is_block_use(entry) -> bool:
    """Whether a ``layers`` entry uses a block (it has ``block`` and no ``type``)."""
    return isinstance(entry, dict) and "block" in entry and "type" not in entry


def expand_blocks(config: Any) -> Any:
    """``config`` with every block use replaced by its layers and no ``blocks`` section (the same
    object when there is nothing to expand); each expanded layer has an explicit name and
    ``part_of``."""
    if not isinstance(config, dict):
        return config
    layers = config.get("layers")
    if "blocks" not in config and not (isinstance(layers, list) and any(map(is_block_use, layers))):
        return config
    blocks = _check_blocks(config.get("blocks", {}))
    flat = {k: v for k, v in config.items() if k != "blocks"}
    if not isinstance(layers, list):
        return flat  # from_config says what is wrong with it
    try:
        flat["layers"] = _expand_layers(layers, blocks)
    except RecursionError:
        raise ConfigError("blocks nested too deeply (blocks using blocks using blocks ...)", key="blocks") from None
    return flat


def _expand_layers(layers: list, blocks: dict) -> list:
    expanded: list = []
    for index, entry in enumerate(layers):
        if not is_block_use(entry):
            expanded.append(entry)
            continue
        name = entry.get("name")
        where = f"block '{entry['block']}' (use '{name if isinstance(name, str) else f'layers[{index}]'}')"
        source = _use_source(entry, expanded, where)
        expanded += _expand_use(entry, blocks, source, (), where)
    return expanded


def _check_blocks(blocks) -> dict:
    if not isinstance(blocks, dict):
        raise ConfigError(f"'blocks' must be an object of block definitions; got {show(blocks)[:60]}", key="blocks")
    for name, block in blocks.items():
        section = f"blocks.{name}"
        if not isinstance(block, dict):
            raise ConfigError(f"a block must be an object with 'params' and 'layers'; got {show(block)[:60]}",
                              section=section)
        for key in block:
            if key not in BLOCK_KEYS:
                raise ConfigError(f"unknown key '{key}'{did_you_mean(key, BLOCK_KEYS)}; a block accepts: "
                                  f"{', '.join(BLOCK_KEYS)}", section=section)
        params = block.get("params", {})
        if not isinstance(params, dict):
            raise ConfigError(f"params must be an object {{name: default or null}}; got {show(params)[:60]}",
                              section=section)
        for param in params:
            if param in USE_KEYS or param == BLOCK_INPUT[1:]:
                raise ConfigError(f"'{param}' cannot be a parameter name (reserved: "
                                  f"{', '.join(USE_KEYS)}, {BLOCK_INPUT[1:]})", section=section)
        layers = block.get("layers")
        if not isinstance(layers, list) or not layers:
            raise ConfigError(f"'layers' must be a non-empty list of layer objects; got layers={show(layers)[:60]}",
                              section=section)
    return blocks


def _use_source(entry, expanded: list, where: str) -> str | None:
    """The name of the layer a top-level use reads: its ``inputs``, else the layer before it
    (``None`` when that layer has no name: the first expanded layer reads it implicitly)."""
    if "inputs" in entry:
        return _single_input(entry["inputs"], where)
    if not expanded:
        return NETWORK_INPUT
    previous = expanded[-1]
    return previous.get("name") if isinstance(previous, dict) and isinstance(previous.get("name"), str) else None


def _single_input(inputs, where: str) -> str:
    if isinstance(inputs, list) and len(inputs) == 1:
        inputs = inputs[0]
    if not isinstance(inputs, str):
        raise ConfigError(f"a block reads one input: inputs must be a layer name; got inputs={show(inputs)}",
                          section=where)
    return inputs


def _expand_use(entry: dict, blocks: dict, source: str | None, stack: tuple, where: str) -> list:
    block_name = entry["block"]
    if not isinstance(block_name, str) or block_name not in blocks:
        raise ConfigError(f"block {show(block_name)} is not defined{did_you_mean(block_name, blocks)}; defined "
                          f"blocks: {', '.join(blocks) or 'none'}", section=where)
    if block_name in stack:
        raise ConfigError(f"block '{block_name}' uses itself ({' -> '.join([*stack, block_name])})", section=where)
    block = blocks[block_name]
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"a block use needs a name (its layers are named NAME.K.LAYER); got name={show(name)}",
                          section=where)
    declared = block.get("params", {})
    for key in entry:
        if key not in USE_KEYS and key not in declared:
            raise ConfigError(f"unknown parameter '{key}'{did_you_mean(key, [*declared, *USE_KEYS])}; block "
                              f"'{block_name}' takes: {', '.join(declared) or 'no parameters'}", section=where)
    params = {**declared, **{k: v for k, v in entry.items() if k in declared}}
    for param, value in params.items():
        if value is None:
            raise ConfigError(f"missing required parameter '{param}' of block '{block_name}'", section=where)
    repeat, start = entry.get("repeat", 1), entry.get("start", 1)
    for key, value, minimum in (("repeat", repeat, 1), ("start", start, 0)):  # start 0: PyTorch's numbering
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise ConfigError(f"{key} must be an integer >= {minimum}; got {key}={show(value)}", section=where)
    flat: list = []
    for number in range(start, start + repeat):
        flat += _expand_instance(blocks, block_name, f"{name}.{number}", params, source, (*stack, block_name))
        source = flat[-1]["name"]
    return flat


def _expand_instance(blocks: dict, block_name: str, instance: str, params: dict, source: str | None,
                     stack: tuple) -> list:
    """The flat layers of one instance of block ``block_name``, reading ``source``."""
    block = blocks[block_name]
    label = f"block '{block_name}' (instance '{instance}')"
    local: dict[str, str] = {}  # a name inside the block -> the expanded layer name of its output
    counters: dict[str, int] = {}
    flat: list = []
    for index, entry in enumerate(block["layers"]):
        where = {"block": label, "layer": f"layers[{index}]"}
        if not isinstance(entry, dict):
            raise ConfigError(f"must be a JSON object; got {show(entry)[:60]}", **where)
        use = is_block_use(entry)
        kind = _substitute(entry.get("type"), params, block_name, "type", where)  # "type": "$activation" works
        kind = kind if isinstance(kind, str) else None
        inner = entry.get("name") if "name" in entry else None
        if inner is None and not use:
            counters[kind] = counters.get(kind, 0) + 1
            inner = f"{kind}_{counters[kind]}"
        if not isinstance(inner, str) or not inner:
            raise ConfigError(f"name must be a non-empty string; got name={show(inner)}", **where, layer_type=kind)
        where = {"block": label, "layer": inner, "layer_type": kind}
        if inner in local:
            raise ConfigError(f"name '{inner}' is used by an earlier layer of the block", **where, key="name")
        resolved = {k: (v if k in ("name", "inputs", "block") else _substitute(v, params, block_name, k, where))
                    for k, v in entry.items()}
        resolved["name"] = f"{instance}.{inner}"
        if "inputs" in entry:
            resolved["inputs"] = _local_inputs(entry["inputs"], local, source, block_name, where)
        elif not flat and source is not None:
            resolved["inputs"] = [source]
        if use:
            use_where = f"{label}, block '{entry['block']}' (use '{inner}')"
            first = resolved["inputs"][0] if "inputs" in resolved else (flat[-1]["name"] if flat else source)
            flat += _expand_use(resolved, blocks, first, stack, use_where)
        else:
            resolved[PART_OF] = {"block": block_name, "instance": instance}
            flat.append(resolved)
        local[inner] = flat[-1]["name"]
    return flat


def _substitute(value, params: dict, block_name: str, key: str, where: dict):
    """``value`` with every string ``"$p"`` (in lists and objects too) replaced by parameter ``p``."""
    if isinstance(value, list):
        return [_substitute(v, params, block_name, key, where) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, params, block_name, key, where) for k, v in value.items()}
    if isinstance(value, str) and value.startswith("$"):
        if value[1:] in params:
            return params[value[1:]]
        hint = " ('$in' is for inputs only)" if value == BLOCK_INPUT else did_you_mean(value[1:], params)
        raise ConfigError(f"{key}={show(value)} refers to no parameter{hint}; block '{block_name}' takes: "
                          f"{', '.join(params) or 'no parameters'}", **where, key=key)
    return value


def _local_inputs(inputs, local: dict, source: str | None, block_name: str, where: dict) -> list:
    """Inputs inside a block: ``"$in"`` (the instance's input) or names of earlier layers of the block."""
    names = [inputs] if isinstance(inputs, str) else inputs
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ConfigError(f'inputs must be a list of earlier layer names of the block or "{BLOCK_INPUT}"; '
                          f"got inputs={show(inputs)}", **where, key="inputs")
    resolved = []
    for name in names:
        if name == BLOCK_INPUT:
            if source is None:
                raise ConfigError(f"'{BLOCK_INPUT}' is the layer before the block use, which has no name: name it "
                                  f"or give the use 'inputs'", **where, key="inputs")
            resolved.append(source)
        elif name in local:
            resolved.append(local[name])
        else:
            raise ConfigError(f"inputs names '{name}', which is no earlier layer of block '{block_name}'"
                              f"{did_you_mean(name, local)} (the block's input is \"{BLOCK_INPUT}\")",
                              **where, key="inputs")
    return resolved
