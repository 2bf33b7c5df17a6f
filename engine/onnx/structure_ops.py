"""ONNX operators that move, merge or resize values: arithmetic with broadcasting, concat, split,
slice, reshapes and transposes, pad, resize, reductions over H and W, and the ones dropped in
inference (same converter signature as :mod:`.layer_ops`)."""

from __future__ import annotations

import math

import numpy as np

from .graph import Builder, Tensor, attr_float
from .layer_ops import const, tensor


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _ints(b, inputs, attrs, opset, index, name, since):
    """An integer list given as attribute ``name`` before opset ``since`` and as input ``index`` from it."""
    if opset < since:
        return None if name not in attrs else [int(v) for v in attrs[name]]
    if len(inputs) <= index or inputs[index] is None:
        return None
    return [int(v) for v in np.asarray(const(b, inputs[index], name)).reshape(-1)]


# -- arithmetic ----------------------------------------------------------------------------------
def _same_order(b: Builder, tensors) -> list[Tensor]:
    """The tensors in one axis order: kept when all are seen through the same transpose, else plain."""
    if len({t.perm for t in tensors}) == 1:
        return list(tensors)
    return [b.plain(t) for t in tensors]


def _merge(b, type_name, tensors):
    tensors = _same_order(b, tensors)
    ranks = {len(t.shape) for t in tensors}
    if len(ranks) > 1:
        raise b.error(f"inputs of different ranks {[t.onnx_shape(b.batch) for t in tensors]} are not supported; "
                      f"supported: inputs of one rank, each dimension equal or 1")
    y = b.emit(type_name, [Tensor(t.layer, t.shape) for t in tensors])
    return Tensor(y.layer, y.shape, tensors[0].perm)


def _channel_values(b, t: Tensor, k) -> np.ndarray:
    values = b.per_channel(t, k)
    if values is None:
        raise b.error(f"a constant of shape {np.shape(k)} against an input of shape {t.onnx_shape(b.batch)} is not "
                      f"supported; supported: a scalar or one value per channel (C,), (C, 1, 1), ...")
    return values


def scale(b, t: Tensor, values: np.ndarray, suffix="") -> Tensor:
    """``t`` times one value per channel: a ``scale`` layer (ConvNeXt's layer scale)."""
    y = b.emit("scale", [Tensor(t.layer, t.shape)], params={"weight": values}, suffix=suffix)
    return Tensor(y.layer, y.shape, t.perm)


def add_bias(b, t: Tensor, values: np.ndarray, index: int) -> Tensor:
    """``t`` plus one value per channel: into the bias of the conv or linear layer before it when
    nothing else reads that layer, else a depthwise 1x1 convolution with weight 1 and that bias."""
    entry = b.foldable(t, index)
    if entry is not None:
        params = b.params.setdefault(entry["name"], {})
        params["bias"] = params.get("bias", np.zeros(len(values), np.float32)) + values
        entry["bias"] = True
        return t
    spatial = len(t.shape) - 1
    if spatial not in (1, 2):
        raise b.error(f"adding a constant to an input of shape {t.onnx_shape(b.batch)} that no conv or linear "
                      f"layer computes is not supported; supported: (N, C, L) and (N, C, H, W) inputs")
    channels = t.shape[0]
    y = b.emit(f"conv{spatial}d", [Tensor(t.layer, t.shape)], suffix="",
               params={"weight": np.ones((channels, 1) + (1,) * spatial, np.float32), "bias": values},
               out_channels=channels, kernel_size=1, groups=channels)
    return Tensor(y.layer, y.shape, t.perm)


def arithmetic(op):
    def convert(b, inputs, attrs, opset):
        first, second = inputs
        if isinstance(first, Tensor) and isinstance(second, Tensor):
            if op == "Div":
                raise b.error("dividing by a computed tensor is not supported; supported: dividing by a constant")
            return [_merge(b, op.lower(), [first, second])]
        t, k, index = (first, second, 0) if isinstance(first, Tensor) else (second, first, 1)
        k = np.asarray(k, np.float32)
        kind = op
        if op == "Div":
            if index == 1:
                raise b.error("dividing a constant by a tensor is not supported; supported: tensor / constant")
            kind, k = "Mul", 1.0 / k
        if op == "Sub":
            kind = "Add"
            if index == 0:
                k = -k
            else:  # k - t = -t + k
                t = scale(b, t, -np.ones(_channel_values(b, t, k).shape, np.float32), suffix=".neg")
        values = _channel_values(b, t, k)
        if kind == "Mul":
            return [t if np.all(values == 1) else scale(b, t, values)]
        return [t if not np.any(values) else add_bias(b, t, values, index)]
    return convert


def sum_(b, inputs, attrs, opset):
    tensors = [tensor(b, v, "every input") for v in inputs]
    return [tensors[0] if len(tensors) == 1 else _merge(b, "add", tensors)]


# -- channels ------------------------------------------------------------------------------------
def concat(b, inputs, attrs, opset):
    tensors = _same_order(b, [tensor(b, v, "every input") for v in inputs])
    axis = tensors[0].cnnrun_axis(int(attrs["axis"]))
    if axis != 1:
        raise b.error(f"concatenating along axis {attrs['axis']} is not supported; supported: the channel axis")
    if len(tensors) == 1:  # DenseNet's torch.cat([x], 1)
        return tensors
    y = b.emit("concat", [Tensor(t.layer, t.shape) for t in tensors])
    return [Tensor(y.layer, y.shape, tensors[0].perm)]


def _channel_slice(b, x: Tensor, start, stop, step, suffix=""):
    y = b.emit("slice", [Tensor(x.layer, x.shape)], start=start, stop=stop, step=step, suffix=suffix)
    return Tensor(y.layer, y.shape, x.perm)


def split(b, inputs, attrs, opset):
    x = tensor(b, inputs[0])
    axis = int(attrs.get("axis", 0))
    if x.cnnrun_axis(axis) != 1:
        raise b.error(f"splitting along axis {axis} is not supported; supported: the channel axis")
    channels, count = x.shape[0], len(b.node.output)
    sizes = _ints(b, inputs, attrs, opset, 1, "split", 13)
    if sizes is None:
        part = -(-channels // count)
        sizes = [min(part, channels - i * part) for i in range(count)]
    starts = np.cumsum([0, *sizes])
    return [_channel_slice(b, x, int(s), int(e), 1, suffix=f".{i}") for i, (s, e) in
            enumerate(zip(starts[:-1], starts[1:]))]


def slice_(b, inputs, attrs, opset):
    x = tensor(b, inputs[0])
    shape = x.onnx_shape(b.batch)
    starts, ends = (_ints(b, inputs, attrs, opset, i, name, 10) for i, name in ((1, "starts"), (2, "ends")))
    axes = _ints(b, inputs, attrs, opset, 3, "axes", 10) or list(range(len(starts)))
    steps = _ints(b, inputs, attrs, opset, 4, "steps", 10) or [1] * len(starts)
    taken = []
    for axis, start, end, step in zip(axes, starts, ends, steps):
        start, stop, step = slice(start, end, step).indices(shape[axis])
        if (start, stop, step) != (0, shape[axis], 1):
            taken.append((axis, start, stop, step))
    if not taken:
        return [x]
    if len(taken) > 1 or x.cnnrun_axis(taken[0][0]) != 1 or taken[0][3] < 1:
        raise b.error(f"slicing {[(a, f'{s}:{e}:{st}') for a, s, e, st in taken]} of a shape {shape} input is not "
                      f"supported; supported: one slice of the channel axis with a positive step")
    return [_channel_slice(b, x, *taken[0][1:])]


# -- shapes --------------------------------------------------------------------------------------
def reshape_to(b, x: Tensor, shape) -> Tensor:
    """``x`` as ONNX shape ``shape`` (the batch first): a ``flatten`` or ``reshape`` layer."""
    shape = tuple(int(d) for d in shape)
    if len(shape) < 2 or shape[0] != b.batch or math.prod(shape[1:]) != math.prod(x.shape):
        raise b.error(f"a reshape of {x.onnx_shape(b.batch)} to {shape} that does not keep the batch axis "
                      f"first is not supported")
    if shape == x.onnx_shape(b.batch):
        return x
    x = b.plain(x)
    if len(shape) == 2:
        return x if len(x.shape) == 1 else b.emit("flatten", [x])
    return b.emit("reshape", [x], shape=list(shape[1:]))


def reshape(b, inputs, attrs, opset):
    x = tensor(b, inputs[0])
    target = [int(d) for d in const(b, inputs[1], "the shape (input 2)")]
    current = x.onnx_shape(b.batch)
    if not attrs.get("allowzero", 0):
        target = [current[i] if d == 0 else d for i, d in enumerate(target)]
    if -1 in target:
        known = math.prod(d for d in target if d != -1)
        target[target.index(-1)] = math.prod(current) // max(known, 1)
    return [reshape_to(b, x, target)]


def flatten(b, inputs, attrs, opset):
    x = tensor(b, inputs[0])
    shape = x.onnx_shape(b.batch)
    axis = int(attrs.get("axis", 1))
    if axis + (len(shape) if axis < 0 else 0) != 1:
        raise b.error(f"axis {attrs.get('axis', 1)} joins the batch axis with others; supported: axis 1")
    return [reshape_to(b, x, (shape[0], math.prod(shape[1:])))]


def squeeze(b, inputs, attrs, opset):
    x = tensor(b, inputs[0])
    shape = x.onnx_shape(b.batch)
    axes = _ints(b, inputs, attrs, opset, 1, "axes", 13)
    axes = {a % len(shape) for a in axes} if axes is not None else {i for i, d in enumerate(shape) if d == 1 and i}
    return [reshape_to(b, x, [d for i, d in enumerate(shape) if i not in axes])]


def unsqueeze(b, inputs, attrs, opset):
    x = tensor(b, inputs[0])
    shape = list(x.onnx_shape(b.batch))
    axes = _ints(b, inputs, attrs, opset, 1, "axes", 13)
    rank = len(shape) + len(axes)
    for axis in sorted(a % rank for a in axes):
        shape.insert(axis, 1)
    return [reshape_to(b, x, shape)]


def transpose(b, inputs, attrs, opset):
    x = tensor(b, inputs[0])
    rank = len(x.shape) + 1
    order = [int(p) for p in attrs.get("perm", range(rank - 1, -1, -1))]
    perm = tuple(x.cnnrun_axis(p) for p in order)
    if perm[0] != 0:
        raise b.error(f"perm {order} moves the batch axis; supported: permutations that keep axis 0 first")
    return [Tensor(x.layer, x.shape, None if perm == tuple(range(rank)) else perm)]


def depth_to_space(b, inputs, attrs, opset):
    """DepthToSpace in CRD mode: PyTorch's PixelShuffle (DCR orders the channels otherwise)."""
    if _text(attrs.get("mode", "DCR")) != "CRD":
        raise b.error(f"mode {_text(attrs.get('mode', 'DCR'))} is not supported; supported: CRD (PyTorch's PixelShuffle)")
    return [b.emit("pixel_shuffle", [b.plain(tensor(b, inputs[0]))], upscale_factor=int(attrs["blocksize"]))]


def shape(b, inputs, attrs, opset):
    full = np.array(tensor(b, inputs[0]).onnx_shape(b.batch), np.int64)
    start, end = int(attrs.get("start", 0)), attrs.get("end")
    return [full[start:None if end is None else int(end)]]


# -- padding, resizing, reductions ---------------------------------------------------------------
PAD_MODES = {"constant": "constant", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}


def pad(b, inputs, attrs, opset):
    x = b.plain(tensor(b, inputs[0]))
    rank = len(x.shape) + 1
    mode = _text(attrs.get("mode", "constant"))
    if mode not in PAD_MODES:
        raise b.error(f"mode {mode} is not supported; supported: {', '.join(PAD_MODES)}")
    if opset < 11:
        pads, value = [int(p) for p in attrs["pads"]], attr_float(attrs.get("value", 0.0))
    else:
        pads = [int(p) for p in const(b, inputs[1], "pads")]
        value = 0.0 if len(inputs) < 3 or inputs[2] is None else float(np.asarray(const(b, inputs[2], "value")))
    axes = _ints(b, inputs, attrs, opset, 3, "axes", 18)
    if axes is not None:
        full = [0] * (2 * rank)
        for i, axis in enumerate(a % rank for a in axes):
            full[axis], full[rank + axis] = pads[i], pads[len(axes) + i]
        pads = full
    before, after = pads[:rank], pads[rank:]
    if before[:2] != [0, 0] or after[:2] != [0, 0] or rank not in (3, 4) or min(pads) < 0:
        raise b.error(f"pads {pads} of a shape {x.onnx_shape(b.batch)} input are not supported; supported: "
                      f"padding >= 0 of H and W (or L), none of the batch and channels")
    options = {"padding": before[2:] + after[2:], "mode": PAD_MODES[mode]}
    if mode == "constant":
        options["value"] = value
    return [b.emit("pad", [x], **options)]


def circular_pad(b, inputs, attrs, opset):
    """``cnnrun.CircularPad`` (:func:`~.patterns.fuse_patterns`): per axis of ``axes``, its last ``before``
    positions (those before ``sizes``) and its first ``after`` positions around it (Slice and Concat nodes)."""
    x = b.plain(tensor(b, inputs[0]))
    shape = x.onnx_shape(b.batch)
    before, after = [0] * (len(shape) - 2), [0] * (len(shape) - 2)
    for axis, first, last, size in zip(attrs["axes"], attrs["before"], attrs["after"], attrs["sizes"]):
        if len(shape) not in (3, 4) or axis >= len(shape) or first and shape[axis] != size:
            raise b.error(f"the positions {size - first}:{size} and 0:{last} around axis {axis} of an input of shape "
                          f"{shape} are not a circular padding; supported: the last positions of H or W (or L)")
        before[axis - 2], after[axis - 2] = first, last
    return [b.emit("pad", [x], padding=before + after, mode="circular")]


def resize(b, inputs, attrs, opset):
    x = b.plain(tensor(b, inputs[0]))
    if len(x.shape) != 3:
        raise b.error(f"needs an (N, C, H, W) input; got shape {x.onnx_shape(b.batch)}")
    mode = _text(attrs.get("mode", "nearest"))
    old = b.node.op_type == "Upsample" or opset < 11
    coordinates = "asymmetric" if old else _text(attrs.get("coordinate_transformation_mode", "half_pixel"))
    nearest = "floor" if old else _text(attrs.get("nearest_mode", "round_prefer_floor"))
    if b.node.op_type == "Upsample" and opset < 9:
        scales, sizes = [float(s) for s in attrs["scales"]], None
    else:
        index = 1 if old else 2
        scales = None if len(inputs) <= index or inputs[index] is None or not np.size(inputs[index]) else \
            [float(s) for s in const(b, inputs[index], "scales")]
        sizes = None if old or len(inputs) < 4 or inputs[3] is None else [int(s) for s in const(b, inputs[3], "sizes")]
    if mode == "nearest" and coordinates == "asymmetric" and nearest == "floor":
        options = {"mode": "nearest"}
    elif mode in ("linear", "bilinear") and coordinates in ("half_pixel", "pytorch_half_pixel", "align_corners"):
        options = {"mode": "bilinear", "align_corners": coordinates == "align_corners"}
    else:
        raise b.error(f"mode {mode} with coordinate_transformation_mode {coordinates} (nearest_mode {nearest}) is "
                      f"not supported; supported: nearest with asymmetric and floor (PyTorch's nearest), linear "
                      f"with half_pixel, pytorch_half_pixel or align_corners (PyTorch's bilinear)")
    if attrs.get("antialias", 0) or _text(attrs.get("keep_aspect_ratio_policy", "stretch")) != "stretch":
        raise b.error("antialias and keep_aspect_ratio_policy are not supported")
    if scales is None and sizes is None:
        raise b.error("it has neither scales nor sizes")
    if attrs.get("axes") is not None:  # opset 18: scales or sizes of these axes only
        axes = [int(a) % 4 for a in attrs["axes"]]
        if sorted(axes) != [2, 3]:
            raise b.error(f"axes {list(attrs['axes'])} are not supported; supported: H and W ([2, 3])")
        given = dict(zip(axes, scales if sizes is None else sizes))
        if sizes is None:
            scales = [1.0, 1.0, given[2], given[3]]
        else:
            sizes = [b.batch, x.shape[0], given[2], given[3]]
    if sizes is not None:
        if len(sizes) != 4 or sizes[1] != x.shape[0]:
            raise b.error(f"sizes {sizes} change the channels; supported: H and W only")
        options["size"] = sizes[2:]
    else:
        if scales[:2] != [1.0, 1.0]:
            raise b.error(f"scales {scales} change the batch or channels; supported: H and W only")
        if old and min(scales) < 1:
            raise b.error(f"scales {scales}: before opset 11 nearest shrinks by rounding up, not PyTorch's floor; "
                          f"supported: scales >= 1")
        options["scale_factor"] = scales[2:]
    return [b.emit("upsample", [x], **options)]


def reduce(kind):
    def convert(b, inputs, attrs, opset):
        x = b.plain(tensor(b, inputs[0]))
        rank = len(x.shape) + 1
        axes = _ints(b, inputs, attrs, opset, 1, "axes", 18)
        if axes is None or {a % rank for a in axes} != set(range(2, rank)) or rank < 3:
            raise b.error(f"reducing axes {axes} of a rank-{rank} input is not supported; supported: every "
                          f"axis after the channels (H and W, or L)")
        return [b.emit(f"global_{kind}pool", [x], flatten=not attrs.get("keepdims", 1))]
    return convert


def adaptive_pool(b, inputs, attrs, opset):
    """``cnnrun.AdaptivePool`` (:func:`~.patterns.fuse_patterns`): per axis of ``axes``, the mean or max
    of each of ``bins`` bins of an axis of ``sizes`` (Slice, Reduce and Concat nodes)."""
    x = b.plain(tensor(b, inputs[0]))
    shape = x.onnx_shape(b.batch)
    output_size = [None, None]
    for axis, size, bins in zip(attrs["axes"], attrs["sizes"], attrs["bins"]):
        if len(shape) != 4 or axis % 4 < 2 or shape[axis] != size:
            raise b.error(f"slices of {size} positions along axis {axis} of an input of shape {shape} are not the bins "
                          f"of adaptive pooling; supported: all of H or W of an (N, C, H, W) input")
        output_size[axis % 4 - 2] = int(bins)
    return [b.emit(f"adaptive_{_text(attrs['kind'])}pool2d", [x], output_size=output_size)]


def passed(b, inputs, attrs, opset):
    """Dropout and Identity (and a Cast to float): the input itself, in inference."""
    if b.node.op_type == "Dropout" and len(b.node.output) > 1 and b.uses.get(b.node.output[1]):
        raise b.error("its mask output is not supported; supported: the output in inference")
    if b.node.op_type == "Cast" and attrs.get("to") not in (1, 10, 11):
        raise b.error("a cast of a computed tensor to a non-float type is not supported")
    return [tensor(b, inputs[0])]


OPS = {
    "Add": arithmetic("Add"), "Sub": arithmetic("Sub"), "Mul": arithmetic("Mul"), "Div": arithmetic("Div"),
    "Sum": sum_, "Concat": concat, "Split": split, "Slice": slice_, "Reshape": reshape, "Flatten": flatten,
    "Squeeze": squeeze, "Unsqueeze": unsqueeze, "Transpose": transpose, "DepthToSpace": depth_to_space, "Shape": shape, "Pad": pad,
    "Resize": resize, "Upsample": resize, "ReduceMean": reduce("avg"), "ReduceMax": reduce("max"),
    "Dropout": passed, "Identity": passed, "Cast": passed,
}
