"""Blocks for the parts of an imported graph that repeat: consecutive runs of layers named
``PREFIX.K.REST`` (PyTorch's ``layer1.0.conv1``, ``layer1.1.conv1``) that are the same layers with the
same wiring become one block used with ``start`` K and ``repeat`` (docs/format.md, Blocks). The
expanded layer names are the flat ones, so the checkpoint is the same either way."""

from __future__ import annotations

import json
import re

from ..blocks import expand_blocks

_NUMBERED = re.compile(r"(?=\.(\d+)\.)")  # a lookahead: "a.4.1.b" holds ".4." and ".1."


def _splits(name: str):
    """Every ``(prefix, K, rest)`` of ``name`` = ``prefix.K.rest``, outermost first."""
    for match in _NUMBERED.finditer(name):
        yield name[:match.start()], int(match.group(1)), name[match.start() + len(match.group(1)) + 2:]


def _options(entry: dict) -> dict:
    return {k: v for k, v in entry.items() if k not in ("name", "inputs")}


def _instance(layers, inputs, start: int, prefix: str, number: int):
    """``(end, block layers)`` of the instance ``prefix.number`` starting at ``layers[start]``, in the
    block's terms (names without the prefix, ``"$in"`` for the layer before it), or None."""
    head = f"{prefix}.{number}."
    end = start
    while end < len(layers) and layers[end]["name"].startswith(head):
        end += 1
    outside = layers[start - 1]["name"] if start else "input"
    inner, body = {}, []
    for index in range(start, end):
        entry = layers[index]
        rest = entry["name"][len(head):]
        sources = []
        for source in inputs[index]:
            if source in inner:
                sources.append(inner[source])
            elif source == outside:
                sources.append("$in")
            else:
                return None  # it reads another layer outside the instance
        default = ["$in"] if index == start else [body[-1]["name"]]
        body.append({"name": rest, **_options(entry), **({} if sources == default else {"inputs": sources})})
        inner[entry["name"]] = rest
    return (end, body) if body else None


def _run(layers, inputs, start: int):
    """``(prefix, first number, repeat, block layers, end)`` of the longest-prefixed repeat at ``start``."""
    for prefix, number, _ in _splits(layers[start]["name"]):
        first = _instance(layers, inputs, start, prefix, number)
        if first is None:
            continue
        end, body = first
        repeat = 1
        while end < len(layers):
            following = _instance(layers, inputs, end, prefix, number + repeat)
            if following is None or following[1] != body:
                break
            end, repeat = following[0], repeat + 1
        if repeat > 1:
            return prefix, number, repeat, body, end
    return None


def with_blocks(config: dict) -> dict:
    """``config`` (flat layers, as the import writes them) with its repeated runs as blocks; the
    config unchanged when there are none (or when the blocks would not expand to the same layers)."""
    layers = config["layers"]
    inputs = _effective_inputs(layers)
    blocks, uses, index = {}, [], 0
    while index < len(layers):
        found = _run(layers, inputs, index)
        if found is None:
            uses.append(layers[index])
            index += 1
            continue
        prefix, number, repeat, body, index = found
        key = json.dumps(body, sort_keys=True)
        name = next((b for b, d in blocks.items() if json.dumps(d["layers"], sort_keys=True) == key), None)
        if name is None:
            name = prefix.replace(".", "_") or "block"
            while name in blocks:
                name += "_"
            blocks[name] = {"layers": body}
        uses.append({"block": name, "name": prefix, "start": number, "repeat": repeat})
    if not blocks:
        return config
    result = {**config, "blocks": blocks, "layers": uses}
    expanded = expand_blocks(result)["layers"]
    same = _effective_inputs(expanded) == inputs and [
        {k: v for k, v in e.items() if k not in ("part_of", "inputs")} for e in expanded] == [
        {k: v for k, v in e.items() if k != "inputs"} for e in layers]
    return result if same else config


def _effective_inputs(layers: list) -> list:
    """What each layer reads, its default (the layer before) written out."""
    return [entry.get("inputs", [layers[i - 1]["name"] if i else "input"]) for i, entry in enumerate(layers)]
