"""Graph rewrites around the operator table: subgraphs that exporters emit for one PyTorch module,
found before converting (GELU as Div-Erf-Add-Mul-Mul; x * sigmoid(x), x * hardsigmoid(x),
x * tanh(softplus(x))), and the reshape-permute-reshape channel shuffle found in the cnnrun layers
afterwards; and the layer list tidied (unused layers pruned, default ``inputs`` left out)."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

SILU = "cnnrun.Silu"  # an op type of the rewritten graph only: x * sigmoid(x)


class _Graph:
    """Producers, consumers and constant scalars of a node list."""

    def __init__(self, nodes, consts):
        self.consts = consts
        self.producer = {out: node for node in nodes for out in node.output}
        self.consumers = defaultdict(list)
        for node in nodes:
            for name in node.input:
                self.consumers[name].append(node)

    def scalar(self, name):
        from onnx import helper, numpy_helper
        value = self.consts.get(name)
        node = self.producer.get(name)
        if value is None and node is not None and node.op_type == "Constant" and node.attribute:
            attribute = node.attribute[0]
            value = numpy_helper.to_array(attribute.t) if attribute.name == "value" else \
                np.asarray(helper.get_attribute_value(attribute))
        return float(np.asarray(value).reshape(-1)[0]) if value is not None and np.size(value) == 1 else None

    def is_const(self, name, target) -> bool:
        value = self.scalar(name)
        return value is not None and math.isclose(value, target, rel_tol=1e-4)

    def op(self, name, op_type):
        node = self.producer.get(name)
        return node if node is not None and node.op_type == op_type else None

    def only_reader(self, name, node) -> bool:
        return [id(n) for n in self.consumers[name]] == [id(node)]

    def other(self, node, name):
        """The other input of a two-input node."""
        a, b = node.input
        return b if a == name else a if b == name else None


def _gelu(g: _Graph, erf):
    """``(x, output, removed nodes)`` of x * 0.5 * (1 + erf(x / sqrt 2)) around ``erf``, or None."""
    scaled = g.producer.get(erf.input[0])
    if scaled is None or not ((scaled.op_type == "Div" and g.is_const(scaled.input[1], math.sqrt(2))) or
                              (scaled.op_type == "Mul" and g.is_const(scaled.input[1], math.sqrt(0.5)))):
        return None
    x = scaled.input[0]
    add = g.consumers[erf.output[0]]
    if len(add) != 1 or add[0].op_type != "Add" or not g.is_const(g.other(add[0], erf.output[0]) or "", 1.0):
        return None
    add = add[0]
    first = g.consumers[add.output[0]]
    if len(first) != 1 or first[0].op_type != "Mul":
        return None
    first = first[0]
    removed = [erf, add, first] + ([scaled] if g.only_reader(scaled.output[0], erf) else [])
    other = g.other(first, add.output[0])
    if other == x or g.is_const(other, 0.5):  # (x * (1 + erf)) * 0.5, or (0.5 * (1 + erf)) * x
        last = g.consumers[first.output[0]]
        wanted = 0.5 if other == x else None
        if len(last) != 1 or last[0].op_type != "Mul":
            return None
        rest = g.other(last[0], first.output[0])
        if not (g.is_const(rest, wanted) if wanted is not None else rest == x):
            return None
        return x, last[0].output[0], removed + last
    half = g.op(other, "Mul")  # (x * 0.5) * (1 + erf)
    if half is not None and x in half.input and g.is_const(g.other(half, x), 0.5):
        return x, first.output[0], removed + ([half] if g.only_reader(half.output[0], first) else [])
    return None


def _gated(g: _Graph, mul):
    """``(op type, x)`` when ``mul`` is x * sigmoid(x), x * hardsigmoid(x) (PyTorch's alpha 1/6) or
    x * tanh(softplus(x)), with the gate read by ``mul`` only; and the gate's nodes."""
    for x, gate in (mul.input, mul.input[::-1]):
        node = g.producer.get(gate)
        if node is None or not g.only_reader(gate, mul) or node.input[:1] != [x] and node.op_type != "Tanh":
            continue
        if node.op_type == "Sigmoid":
            return SILU, x, [node]
        if node.op_type == "HardSigmoid" and math.isclose(
                next((a.f for a in node.attribute if a.name == "alpha"), 0.2), 1 / 6, rel_tol=1e-5):
            return "HardSwish", x, [node]
        softplus = g.op(node.input[0], "Softplus") if node.op_type == "Tanh" else None
        if softplus is not None and softplus.input[0] == x and g.only_reader(softplus.output[0], node):
            return "Mish", x, [node, softplus]
    return None


def _axes(node):
    return next((list(a.ints) for a in node.attribute if a.name == "axes"), None)


def _affine(g: _Graph, name):
    """``(the constant, its node)`` when ``name`` is read only by a Mul or Add with a constant, else None."""
    readers = g.consumers[name]
    if len(readers) != 1 or readers[0].op_type not in ("Mul", "Add"):
        return None
    other = g.other(readers[0], name)
    return (other, readers[0]) if other in g.consts else None


def _layer_norm(g: _Graph, div):
    """``(x, epsilon, weight, bias, output, removed nodes)`` of the LayerNorm over the last axis that
    PyTorch exports before opset 17 (ReduceMean, Sub, Pow 2, ReduceMean, Add eps, Sqrt, Div, Mul w, Add b)."""
    sub, sqrt = g.op(div.input[0], "Sub"), g.op(div.input[1], "Sqrt")
    add = sqrt and g.op(sqrt.input[0], "Add")
    var = add and g.op(add.input[0], "ReduceMean")
    power = var and g.op(var.input[0], "Pow")
    mean = sub and g.op(sub.input[1], "ReduceMean")
    if not (power and mean and power.input[0] == div.input[0] and g.is_const(power.input[1], 2.0)
            and mean.input[0] == sub.input[0] and _axes(mean) == _axes(var) == [-1]
            and g.scalar(add.input[1]) is not None):
        return None
    scaled = _affine(g, div.output[0])
    shifted = scaled and scaled[1].op_type == "Mul" and _affine(g, scaled[1].output[0])
    if not shifted or shifted[1].op_type != "Add":
        return None
    return (sub.input[0], g.scalar(add.input[1]), scaled[0], shifted[0], shifted[1].output[0],
            [mean, sub, power, var, add, sqrt, div, scaled[1], shifted[1]])


def fuse_patterns(nodes: list, consts: dict) -> list:
    """``nodes`` with each GELU subgraph replaced by a Gelu node, each LayerNorm subgraph (before
    opset 17) by a LayerNormalization, and x * gate(x) by Silu, HardSwish or Mish, each placed where
    the subgraph ended."""
    from onnx import helper
    g = _Graph(nodes, consts)
    replace, removed = {}, set()
    for node in nodes:
        if id(node) in removed:
            continue
        norm = _layer_norm(g, node) if node.op_type == "Div" else None
        if norm is not None:
            x, eps, weight, bias, output, parts = norm
            replace[id(parts[-1])] = helper.make_node("LayerNormalization", [x, weight, bias], [output],
                                                      name=node.name, axis=-1, epsilon=eps)
            removed.update(id(n) for n in parts)
            continue
        found = _gelu(g, node) if node.op_type == "Erf" else None
        if found is not None:
            x, output, parts = found
            replace[id(g.producer[output])] = helper.make_node("Gelu", [x], [output], name=node.name or output)
            removed.update(id(n) for n in parts)
        elif node.op_type == "Mul":
            gated = _gated(g, node)
            if gated is not None:
                op_type, x, parts = gated
                replace[id(node)] = helper.make_node(op_type, [x], list(node.output), name=node.name)
                removed.update(id(n) for n in parts + [node])
    return [replace[id(n)] if id(n) in replace else n for n in nodes
            if id(n) in replace or id(n) not in removed]


def channel_shuffles(layers: list, shapes: dict) -> list:
    """Each ``reshape`` to (g, C/g, H, W), ``permute`` [0, 2, 1, 3, 4], ``reshape`` to (C, H, W) chain
    (PyTorch's channel_shuffle) as one ``channel_shuffle`` layer with ``groups`` g."""
    readers = defaultdict(int)
    for entry in layers:
        for source in entry["inputs"]:
            readers[source] += 1
    by_name = {entry["name"]: entry for entry in layers}
    dropped = set()
    for last in layers:
        middle = by_name.get(last["inputs"][0]) if last["type"] == "reshape" else None
        first = by_name.get(middle["inputs"][0]) if middle and middle["type"] == "permute" else None
        if first is None or first["type"] != "reshape" or middle["dims"] != [0, 2, 1, 3, 4] or \
                readers[first["name"]] != 1 or readers[middle["name"]] != 1:
            continue
        source = first["inputs"][0]
        groups, per_group, *size = shapes[first["name"]]
        if len(shapes[source]) != 3 or shapes[last["name"]] != shapes[source] or tuple(size) != shapes[source][1:]:
            continue
        for key in [k for k in last if k not in ("name", "inputs")]:
            del last[key]
        last.update(type="channel_shuffle", inputs=[source], groups=groups)
        dropped.update((first["name"], middle["name"]))
    return [entry for entry in layers if entry["name"] not in dropped]


def tidy_layers(layers: list, output: str) -> list:
    """The layers ``output`` depends on, in order, without ``inputs`` where it is the default (the
    layer before, or the network input for the first)."""
    by_name = {entry["name"]: entry for entry in layers}
    needed, stack = set(), [output]
    while stack:
        name = stack.pop()
        if name in by_name and name not in needed:
            needed.add(name)
            stack.extend(by_name[name]["inputs"])
    kept, previous = [], "input"
    for entry in layers:
        if entry["name"] in needed:
            entry = dict(entry)
            if entry["inputs"] == [previous]:
                del entry["inputs"]
            kept.append(entry)
            previous = entry["name"]
    return kept
