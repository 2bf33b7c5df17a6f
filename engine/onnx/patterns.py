"""Graph rewrites around the operator table: subgraphs that exporters (PyTorch's, cnnrun's) emit for
one layer, found before converting (GELU as Div-Erf-Add-Mul-Mul or its tanh form; x * sigmoid(x),
x * hardsigmoid(x), x * tanh(softplus(x)); the ReduceMean normalization of layer and group norm; the
Slice-Reduce-Concat bins of adaptive pooling; the Slice-Concat of circular padding; softplus with
beta and threshold), and the
reshape-permute-reshape channel shuffle and pixel unshuffle found in the cnnrun layers afterwards;
and the layer list tidied (unused layers pruned, default ``inputs`` left out)."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

# op types of the rewritten graph only
SILU = "cnnrun.Silu"  # x * sigmoid(x)
NORMALIZE = "cnnrun.Normalize"  # (x - mean) / sqrt(var + eps), and the affine map after it
ADAPTIVE_POOL = "cnnrun.AdaptivePool"  # the bins of adaptive pooling along H, W or both
CIRCULAR_PAD = "cnnrun.CircularPad"  # circular padding of H, W or both
SOFTPLUS = "cnnrun.Softplus"  # softplus(beta x) / beta, x above a threshold
PER_AXIS = (ADAPTIVE_POOL, CIRCULAR_PAD)


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

    def is_constant(self, name) -> bool:
        """Whether ``name`` is an initializer or computed from initializers only (a weight reshaped)."""
        stack, seen = [name], set()
        while stack:
            value = stack.pop()
            if value in self.consts or value in seen:
                continue
            seen.add(value)
            node = self.producer.get(value)
            if node is None or node.op_type == "Shape":
                return False
            stack.extend(n for n in node.input if n)
        return True

    def op(self, name, op_type):
        node = self.producer.get(name)
        return node if node is not None and node.op_type == op_type else None

    def only_reader(self, name, node) -> bool:
        return [id(n) for n in self.consumers[name]] == [id(node)]

    def other(self, node, name):
        """The other input of a two-input node."""
        a, b = node.input
        return b if a == name else a if b == name else None


def _gelu_input(g: _Graph, erf):
    """``(x, the nodes)`` of erf(x / sqrt 2) (an Erf node) or tanh(sqrt(2 / pi) * (x + 0.044715 x^3)) (a
    Tanh node: GELU's tanh form) ending in ``erf``; or None."""
    scaled = g.producer.get(erf.input[0])
    if scaled is None:
        return None
    if erf.op_type == "Erf":
        if not ((scaled.op_type == "Div" and g.is_const(scaled.input[1], math.sqrt(2))) or
                (scaled.op_type == "Mul" and g.is_const(scaled.input[1], math.sqrt(0.5)))):
            return None
        return scaled.input[0], [scaled] if g.only_reader(scaled.output[0], erf) else []
    if scaled.op_type != "Mul" or not any(g.is_const(n, math.sqrt(2 / math.pi)) for n in scaled.input):
        return None
    add = g.op(next(n for n in scaled.input if not g.is_const(n, math.sqrt(2 / math.pi))), "Add")
    for x, cubic in (add.input, add.input[::-1]) if add else ():
        cube = g.op(cubic, "Mul")
        power = cube and next((g.op(n, "Pow") for n in cube.input if g.op(n, "Pow")), None)
        if power and power.input[0] == x and g.is_const(power.input[1], 3.0) and \
                g.is_const(g.other(cube, power.output[0]), 0.044715) and \
                all(g.only_reader(a.output[0], b) for a, b in ((power, cube), (cube, add), (add, scaled),
                                                                (scaled, erf))):
            return x, [power, cube, add, scaled]
    return None


def _gelu(g: _Graph, erf):
    """``(x, output, removed nodes)`` of x * 0.5 * (1 + erf(x / sqrt 2)) (or its tanh form) around ``erf``
    (an Erf or Tanh node), or None."""
    found = _gelu_input(g, erf)
    if found is None:
        return None
    x, before = found
    add = g.consumers[erf.output[0]]
    if len(add) != 1 or add[0].op_type != "Add" or not g.is_const(g.other(add[0], erf.output[0]) or "", 1.0):
        return None
    add = add[0]
    first = g.consumers[add.output[0]]
    if len(first) != 1 or first[0].op_type != "Mul":
        return None
    first = first[0]
    removed = [erf, add, first] + before
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


def _softplus(g: _Graph, softplus):
    """A ``cnnrun.Softplus`` node (``beta``, ``threshold``) of softplus(beta x) / beta (Mul, Softplus, Div:
    PyTorch's and cnnrun's export), and of x where beta x > threshold (Greater, Where: cnnrun's); with the
    nodes, or None."""
    from onnx import helper
    bx, parts, beta = softplus.input[0], [softplus], 1.0
    x, y = bx, softplus.output[0]
    scaled, readers = g.op(bx, "Mul"), g.consumers[y]
    if scaled and any(g.scalar(n) is not None for n in scaled.input) and len(readers) == 1 and \
            readers[0].op_type == "Div" and readers[0].input[0] == y:
        k = next(n for n in scaled.input if g.scalar(n) is not None)
        if not g.is_const(readers[0].input[1], g.scalar(k)):
            return None
        x, y, beta, parts = g.other(scaled, k), readers[0].output[0], g.scalar(k), parts + [scaled, readers[0]]
    where, threshold = g.consumers[y], 20.0
    greater = len(where) == 1 and where[0].op_type == "Where" and g.op(where[0].input[0], "Greater")
    if greater and list(where[0].input[1:]) == [x, y] and greater.input[0] == bx and \
            g.scalar(greater.input[1]) is not None and g.only_reader(greater.output[0], where[0]):
        threshold, y, parts = g.scalar(greater.input[1]), where[0].output[0], parts + [greater, where[0]]
    inner = {id(n) for n in parts}
    if len(parts) == 1 or bx != x and not all(id(n) in inner for n in g.consumers[bx]):
        return None
    return helper.make_node(SOFTPLUS, [x], [y], name=softplus.name, beta=beta, threshold=threshold), parts


def _ints(g: _Graph, node, index, name):
    """An integer list: attribute ``name`` (older opsets) or the constant input ``index``; None otherwise."""
    attribute = next((list(a.ints) for a in node.attribute if a.name == name), None)
    if attribute is not None or len(node.input) <= index:
        return attribute
    value = g.consts.get(node.input[index])
    return None if value is None else [int(v) for v in np.asarray(value).reshape(-1)]


def _keeps_dims(reduce) -> bool:
    return bool(next((a.i for a in reduce.attribute if a.name == "keepdims"), 1))


def _affine(g: _Graph, name):
    """``(weight, bias, output, nodes)`` when ``name`` is read only by a Mul by a constant, itself read
    only by an Add of a constant (the affine map after a normalization); else ``("", "", name, [])``."""
    mul = g.consumers[name]
    add = g.consumers[mul[0].output[0]] if len(mul) == 1 and mul[0].op_type == "Mul" else []
    if len(add) == 1 and add[0].op_type == "Add":
        weight, bias = g.other(mul[0], name), g.other(add[0], mul[0].output[0])
        if g.is_constant(weight) and g.is_constant(bias):
            return weight, bias, add[0].output[0], [mul[0], add[0]]
    return "", "", name, []


def _normalize(g: _Graph, div):
    """The nodes of (x - mean) / sqrt(var + eps), mean and biased var over the same axes (ReduceMean,
    Sub, Pow 2 or Mul by itself, ReduceMean, Add eps, Sqrt, Div) ending in ``div``, with the affine
    map after it, and the Reshapes around it of cnnrun's group_norm export: a ``cnnrun.Normalize``
    node (attributes ``axes``, ``epsilon``, and for group_norm ``groups`` and the ``shape`` reshaped
    back to), or None."""
    from onnx import helper
    sub, sqrt = g.op(div.input[0], "Sub"), g.op(div.input[1], "Sqrt")
    add = sqrt and g.op(sqrt.input[0], "Add")
    var = add and g.op(add.input[0], "ReduceMean")
    square = var and g.producer.get(var.input[0])
    mean = sub and g.op(sub.input[1], "ReduceMean")
    if not (square and mean and mean.input[0] == sub.input[0] and g.scalar(add.input[1]) is not None):
        return None
    centered = div.input[0]
    if not (square.op_type == "Pow" and square.input[0] == centered and g.is_const(square.input[1], 2.0) or
            square.op_type == "Mul" and list(square.input) == [centered, centered]):
        return None
    axes = _ints(g, mean, 1, "axes")
    parts = [mean, sub, square, var, add, sqrt, div]
    if axes is None or axes != _ints(g, var, 1, "axes") or not all(_keeps_dims(r) for r in (mean, var)) or \
            {id(n) for n in g.consumers[centered]} != {id(square), id(div)} or not g.only_reader(mean.output[0], sub) \
            or not all(g.only_reader(n.output[0], m) for n, m in zip(parts[2:6], parts[3:7])):
        return None
    x, output, attributes = sub.input[0], div.output[0], {}
    grouped, back = g.op(x, "Reshape"), g.consumers[output]
    shape = grouped and g.consts.get(grouped.input[1])
    if shape is not None and list(shape[:1]) == [0] and len(shape) == 3 and shape[2] == -1 and axes == [2] and \
            len(back) == 1 and back[0].op_type == "Reshape" and back[0].input[1] in g.consts and \
            {id(n) for n in g.consumers[x]} == {id(mean), id(sub)}:  # group_norm: (N, groups, -1)
        x, output = grouped.input[0], back[0].output[0]
        attributes = {"groups": int(shape[1]), "shape": [int(d) for d in g.consts[back[0].input[1]]]}
        parts += [grouped, back[0]]
    weight, bias, output, affine = _affine(g, output)
    node = helper.make_node(NORMALIZE, [x, weight, bias], [output], name=div.name, axes=axes,
                            epsilon=g.scalar(add.input[1]), **attributes)
    return node, parts + affine


def _adaptive(g: _Graph, reduces, output):
    """A ``cnnrun.AdaptivePool`` node (``kind`` avg or max; per axis, ``axes``, ``sizes`` and ``bins``) when
    ``reduces`` (concatenated along their axis into ``output``) are ReduceMean or ReduceMax nodes over one
    axis of Slices of one value along it that are the bins of adaptive pooling; with the nodes, or None."""
    from onnx import helper
    kinds = {r.op_type for r in reduces}
    slices = [g.op(r.input[0], "Slice") for r in reduces]
    if len(kinds) != 1 or not kinds <= {"ReduceMean", "ReduceMax"} or not all(slices) or \
            len({s.input[0] for s in slices}) != 1:
        return None
    axes = {tuple(_ints(g, r, 1, "axes") or ()) for r in reduces} | {tuple(_ints(g, s, 3, "axes") or ())
                                                                    for s in slices}
    steps = {tuple(_ints(g, s, 4, "steps") or [1]) for s in slices}
    bounds = [(_ints(g, s, 1, "starts"), _ints(g, s, 2, "ends")) for s in slices]
    if len(axes) != 1 or len(next(iter(axes))) != 1 or steps != {(1,)} or any(None in b for b in bounds) or \
            not all(g.only_reader(s.output[0], r) and _keeps_dims(r) for s, r in zip(slices, reduces)):
        return None
    bins, size = len(reduces), bounds[-1][1][0]
    if [(b[0][0], b[1][0]) for b in bounds] != [(i * size // bins, -(-(i + 1) * size // bins)) for i in range(bins)]:
        return None
    node = helper.make_node(ADAPTIVE_POOL, [slices[0].input[0]], [output], name=reduces[0].name,
                            kind="avg" if kinds == {"ReduceMean"} else "max", axes=list(next(iter(axes))),
                            sizes=[size], bins=[bins])
    return node, slices + list(reduces)


def _circular(g: _Graph, concat):
    """A ``cnnrun.CircularPad`` node (per axis, ``axes``, ``before``, ``after`` and the ``sizes`` that the
    last ``before`` positions end at, 0 if none) when ``concat`` joins, along a spatial axis, the last
    positions of a value, the value and its first positions (Slices of it); with the nodes, or None."""
    from onnx import helper
    axis = next((a.i for a in concat.attribute if a.name == "axis"), 0)
    inputs = list(concat.input)
    place = next((i for i, x in enumerate(inputs) if all(
        g.op(n, "Slice") and g.producer[n].input[0] == x for n in inputs[:i] + inputs[i + 1:])), None)
    if axis < 2 or place is None or place > 1 or not 2 <= len(inputs) <= place + 2:
        return None
    x, slices = inputs[place], [g.producer[n] for n in inputs[:place] + inputs[place + 1:]]
    bounds = [(_ints(g, s, 1, "starts"), _ints(g, s, 2, "ends")) for s in slices]
    if not all(g.only_reader(s.output[0], concat) and _ints(g, s, 3, "axes") == [axis] and start and end and
               _ints(g, s, 4, "steps") in (None, [1]) for s, (start, end) in zip(slices, bounds)):
        return None
    pairs = [(start[0], end[0]) for start, end in bounds]
    start, size = pairs.pop(0) if place else (0, 0)  # the last positions: [size - before, size)
    before, after = size - start, pairs[0] if pairs else (0, 0)  # the first positions: [0, after)
    if place and before <= 0 or pairs and (after[0] != 0 or after[1] <= 0):
        return None
    node = helper.make_node(CIRCULAR_PAD, [x], list(concat.output), name=concat.name, axes=[axis],
                            before=[before], after=[after[1]], sizes=[size])
    return node, slices + [concat]


def fuse_patterns(nodes: list, consts: dict) -> list:
    """``nodes`` with each GELU subgraph replaced by a Gelu node, x * gate(x) by Silu, HardSwish or Mish,
    each normalization subgraph by a ``cnnrun.Normalize`` node, each set of adaptive pooling bins by a
    ``cnnrun.AdaptivePool`` node, each circular padding by a ``cnnrun.CircularPad`` node (those of
    consecutive axes by one) and softplus(beta x) / beta by a ``cnnrun.Softplus`` node, each placed where
    the subgraph ended."""
    from onnx import helper
    g = _Graph(nodes, consts)
    replace, removed = {}, set()
    for node in nodes:
        if id(node) in removed:
            continue
        found = None
        if node.op_type == "Div":
            found = _normalize(g, node)
        elif node.op_type == "Concat" and all(g.op(n, "ReduceMean") or g.op(n, "ReduceMax") for n in node.input):
            found = _adaptive(g, [g.producer[n] for n in node.input], node.output[0])
            found = found and (found[0], found[1] + [node])
        elif node.op_type == "Concat":
            found = _circular(g, node)
        elif node.op_type == "Softplus":
            found = _softplus(g, node)
        elif node.op_type in ("ReduceMean", "ReduceMax") and [n.op_type for n in g.consumers[node.output[0]]] != \
                ["Concat"]:
            found = _adaptive(g, [node], node.output[0])
        elif node.op_type in ("Erf", "Tanh"):
            gelu = _gelu(g, node)
            found = gelu and (helper.make_node("Gelu", [gelu[0]], [gelu[1]], name=node.name or gelu[1],
                                               approximate="none" if node.op_type == "Erf" else "tanh"), gelu[2])
        elif node.op_type == "Mul":
            gated = _gated(g, node)
            found = gated and (helper.make_node(gated[0], [gated[1]], list(node.output), name=node.name),
                               gated[2] + [node])
        if found:
            fused, parts = found
            replace[id(g.producer[fused.output[0]])] = fused
            removed.update(id(n) for n in parts)
    fused = [replace[id(n)] if id(n) in replace else n for n in nodes if id(n) in replace or id(n) not in removed]
    return _axes_merged(fused)


def _axes_merged(nodes: list) -> list:
    """Each ``cnnrun.AdaptivePool`` (``cnnrun.CircularPad``) node that reads only the output of another one
    of the same kind, over another axis, merged with it (adaptive pooling and padding are separable)."""
    from onnx import helper
    g = _Graph(nodes, {})
    merged, dropped = {}, set()
    for node in nodes:
        first = g.op(node.input[0], node.op_type) if node.op_type in PER_AXIS else None
        attrs = {a.name: helper.get_attribute_value(a) for a in (first.attribute if first else [])}
        if first is None or not g.only_reader(first.output[0], node) or \
                any(value != _attr(node, key) for key, value in attrs.items() if not isinstance(value, list)):
            continue
        attrs = {key: value + _attr(node, key) if isinstance(value, list) else value for key, value in attrs.items()}
        merged[id(node)] = helper.make_node(node.op_type, list(first.input), list(node.output), name=first.name,
                                            **attrs)
        dropped.add(id(first))
    return [merged.get(id(n), n) for n in nodes if id(n) not in dropped]


def _attr(node, name):
    from onnx import helper
    return next(helper.get_attribute_value(a) for a in node.attribute if a.name == name)


def _shuffle(first: dict, middle: dict, shapes: dict, source: str, last: str):
    """``(type, options)`` of the channel_shuffle or pixel_unshuffle layer that reshaping ``source`` as
    ``first``, permuting as ``middle`` and reshaping as ``last`` is, or None."""
    size, out = shapes[source], shapes[last]
    if len(size) != 3:
        return None
    if middle["dims"] == [0, 2, 1, 3, 4] and out == size:
        groups, per_group, *rest = shapes[first["name"]]
        return ("channel_shuffle", {"groups": groups}) if tuple(rest) == size[1:] else None
    if middle["dims"] == [0, 1, 3, 5, 2, 4] and len(shapes[first["name"]]) == 5:
        c, h, w = size
        r = shapes[first["name"]][2]
        if shapes[first["name"]] == (c, h // r, r, w // r, r) and out == (c * r * r, h // r, w // r):
            return "pixel_unshuffle", {"downscale_factor": r}
    return None


def shuffles(layers: list, shapes: dict) -> list:
    """Each ``reshape``-``permute``-``reshape`` chain that is a channel_shuffle (to (g, C/g, H, W), permute
    [0, 2, 1, 3, 4], back: PyTorch's) or a pixel_unshuffle (to (C, H/r, r, W/r, r), permute
    [0, 1, 3, 5, 2, 4], to (C r^2, H/r, W/r): cnnrun's export) as that one layer."""
    readers = defaultdict(int)
    for entry in layers:
        for source in entry["inputs"]:
            readers[source] += 1
    by_name = {entry["name"]: entry for entry in layers}
    dropped = set()
    for last in layers:
        middle = by_name.get(last["inputs"][0]) if last["type"] == "reshape" else None
        first = by_name.get(middle["inputs"][0]) if middle and middle["type"] == "permute" else None
        if first is None or first["type"] != "reshape" or readers[first["name"]] != 1 or \
                readers[middle["name"]] != 1:
            continue
        found = _shuffle(first, middle, shapes, first["inputs"][0], last["name"])
        if found is None:
            continue
        for key in [k for k in last if k not in ("name", "inputs")]:
            del last[key]
        last.update(type=found[0], inputs=[first["inputs"][0]], **found[1])
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
