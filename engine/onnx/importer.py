"""Import an ONNX model as a cnnrun network (docs/onnx.md): ``import_onnx(path)`` gives a
:class:`~cnnrun.engine.network.Network` with the model's weights; :func:`onnx_to_cnnrun` gives the
network's JSON description and a checkpoint, which ``cnnrun import`` writes.

The graph is converted node by node with the static input shape: every value is a constant (folded:
initializers, Constant, shape arithmetic such as Shape-Gather-Unsqueeze-Concat) or the output of a
cnnrun layer (:class:`~.graph.Tensor`). Operators map to cnnrun layers by :data:`CONVERTERS`.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from ..checkpoint import Checkpoint, restore_network
from ..files import FileProblem, regular_file
from ..network import Network
from .graph import Builder, OnnxImportError, Tensor, node_label
from .layer_ops import OPS as LAYER_OPS, normalize, softplus, unary
from .patterns import ADAPTIVE_POOL, CIRCULAR_PAD, NORMALIZE, SILU, SOFTPLUS, fuse_patterns, shuffles, tidy_layers
from .repeats import with_blocks
from .structure_ops import OPS as STRUCTURE_OPS, adaptive_pool, circular_pad

INSTALL_HINT = "importing ONNX models needs the onnx package: pip install 'cnnrun[onnx]'"
CONVERTERS = {**LAYER_OPS, **STRUCTURE_OPS, SILU: unary("silu"), NORMALIZE: normalize, ADAPTIVE_POOL: adaptive_pool,
              CIRCULAR_PAD: circular_pad, SOFTPLUS: softplus}
SUPPORTED = sorted(op for op in CONVERTERS if "." not in op)
FOLDED = ("Constant", "ConstantOfShape", "Shape", "and any operator whose inputs are all constants")
MIN_OPSET = 7


def require_onnx():
    """The ``onnx`` module, or an :class:`OnnxImportError` saying how to install it."""
    try:
        import onnx
    except ImportError:
        raise OnnxImportError(INSTALL_HINT) from None
    return onnx


def import_onnx(model, *, input_shape=None, registry=None) -> Network:
    """The network of the ONNX ``model`` (a path or an ``onnx.ModelProto``), its weights loaded.

    ``input_shape``: the per-sample input shape ``(C, H, W)`` where the model leaves it symbolic.
    PyTorch: the ``nn.Module`` that ``torch.onnx.export`` wrote, in evaluation mode.
    """
    config, checkpoint = onnx_to_cnnrun(model, input_shape=input_shape, registry=registry)
    net = Network.from_config(config, registry=registry)
    restore_network(net, checkpoint, "the imported weights")
    return net


def onnx_to_cnnrun(model, *, name: str | None = None, input_shape=None, registry=None) -> tuple[dict, Checkpoint]:
    """``(config, checkpoint)``: the JSON description of the network (docs/format.md; repeated runs of
    layers as blocks, :func:`~.repeats.with_blocks`) and a checkpoint of its weights (no training state: ``eval``, ``predict``, ``describe`` and ``train.init`` take it)."""
    if registry is None:
        from ..plugins import default_registry
        registry = default_registry()
    model, source = _load(model)
    graph = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < MIN_OPSET:
        raise OnnxImportError(f"{source}: opset {opset} is not supported; supported: opsets {MIN_OPSET} and later")
    from onnx import numpy_helper
    consts = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    input_name, shape, batch = _graph_input(graph, consts, input_shape, source)
    if len(graph.output) != 1:
        raise OnnxImportError(f"{source}: the graph has {len(graph.output)} outputs "
                              f"({', '.join(o.name for o in graph.output)}); a cnnrun network has one")
    nodes = fuse_patterns(list(graph.node), consts)
    _check_supported(nodes, set(consts), source)
    uses = Counter(n for node in nodes for n in node.input if n)
    uses[graph.output[0].name] += 1
    builder = Builder(registry, shape, batch, uses)
    values = {**consts, input_name: Tensor("input", shape)}
    try:
        for node in nodes:
            _convert(builder, node, values, opset)
    except OnnxImportError as err:
        raise OnnxImportError(f"{source}: {err}") from None
    output = values[graph.output[0].name]
    if not isinstance(output, Tensor) or output.layer == "input":
        raise OnnxImportError(f"{source}: the graph output {graph.output[0].name} is a constant or the input "
                              f"itself; there is no layer to import")
    builder.node = nodes[-1]
    output = builder.plain(output)
    layers = tidy_layers(shuffles(builder.layers, builder.shapes), output.layer)
    kept = {entry["name"] for entry in layers}
    name = name or (Path(source).stem if source != "the model" else graph.name) or "network"
    config = with_blocks({"name": name, "input": {"shape": list(shape)}, "layers": layers})
    meta = {"network": name, "imported_from": Path(source).name, "normalization": None, "class_names": None}
    checkpoint = Checkpoint({k: v for k, v in builder.params.items() if k in kept},
                            {k: v for k, v in builder.buffers.items() if k in kept}, {}, meta)
    return config, checkpoint


def _load(model):
    onnx = require_onnx()
    if isinstance(model, onnx.ModelProto):
        return model, "the model"
    path = Path(model)
    try:
        data = regular_file(path).read_bytes()
    except FileProblem as exc:
        raise OnnxImportError(f"{path}: {exc.reason}") from None
    except OSError as exc:
        raise OnnxImportError(f"{path}: cannot read the file: {exc.strerror or exc}") from None
    try:
        proto = onnx.load_from_string(data)
    except Exception as exc:  # protobuf raises DecodeError, RuntimeWarning, ValueError alike
        raise OnnxImportError(f"{path}: not an ONNX model ({type(exc).__name__}: {str(exc)[:80]})") from None
    if not proto.graph.node:
        raise OnnxImportError(f"{path}: not an ONNX model (it holds no graph nodes)")
    return proto, str(path)


def _graph_input(graph, consts, input_shape, source):
    """``(name, per-sample shape, batch)`` of the graph's one non-constant input."""
    inputs = [i for i in graph.input if i.name not in consts]
    if len(inputs) != 1:
        raise OnnxImportError(f"{source}: the graph has {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); "
                              f"a cnnrun network has one")
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inputs[0].type.tensor_type.shape.dim]
    if not 2 <= len(dims) <= 4:
        raise OnnxImportError(f"{source}: input {inputs[0].name} has rank {len(dims)}; cnnrun takes (N, C, H, W), "
                              f"(N, C, L) or (N, F)")
    batch = dims[0] or 1
    shape = tuple(input_shape) if input_shape is not None else tuple(dims[1:])
    if len(shape) != len(dims) - 1 or not all(isinstance(d, (int, np.integer)) and d > 0 for d in shape):
        raise OnnxImportError(f"{source}: input {inputs[0].name} has the shape {dims[1:]} per sample (None: symbolic);"
                              f" give the static shape (--input-shape C,H,W), of {len(dims) - 1} positive sizes")
    return inputs[0].name, tuple(int(d) for d in shape), int(batch)


def _check_supported(nodes, consts: set, source) -> None:
    """One line per operator type that cnnrun cannot express, naming its nodes (an operator whose
    inputs are all constants is folded, whatever it is)."""
    constant = set(consts)
    unsupported: dict[str, list] = {}
    for node in nodes:
        inputs = [n for n in node.input if n]
        if node.op_type == "Shape" or all(n in constant for n in inputs):
            constant.update(node.output)
        elif node.op_type not in CONVERTERS or node.domain not in ("", "ai.onnx"):
            unsupported.setdefault(node.op_type, []).append(node_label(node))
    if unsupported:
        lines = [f"{source}: operator {op} is not supported (nodes: {', '.join(labels[:5])}"
                 f"{f' and {len(labels) - 5} more' if len(labels) > 5 else ''})" for op, labels in unsupported.items()]
        lines.append(f"supported: {', '.join(SUPPORTED)}; folded: {', '.join(FOLDED)}")
        raise OnnxImportError("\n".join(lines))


def _convert(builder: Builder, node, values: dict, opset: int) -> None:
    from onnx import helper
    builder.node = node
    inputs = []
    for name in node.input:
        if name and name not in values:
            raise builder.error(f"input {name} is computed by no earlier node (the graph is not sorted)")
        inputs.append(values[name] if name else None)
    if not any(isinstance(v, Tensor) for v in inputs):
        outputs = _fold(builder, node, inputs, opset)
    else:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        outputs = CONVERTERS[node.op_type](builder, inputs, attrs, opset)
    for name, value in zip(node.output, outputs):
        values[name] = value
        if isinstance(value, Tensor):
            builder.bound.setdefault(value.layer, []).append(name)


def _fold(builder: Builder, node, inputs, opset) -> list:
    """The outputs of a node whose inputs are all constants, computed by ONNX's reference evaluator."""
    from onnx import TensorProto, helper
    from onnx.reference import ReferenceEvaluator
    feeds = {name: value for name, value in zip(node.input, inputs) if name}
    untyped = lambda name: helper.make_tensor_value_info(name, TensorProto.UNDEFINED, None)
    graph = helper.make_graph([node], "fold", [untyped(n) for n in feeds], [untyped(n) for n in node.output])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])  # the node's version
    try:
        return ReferenceEvaluator(model).run(None, feeds)
    except Exception as exc:  # the reference evaluator raises whatever its operator does
        raise builder.error(f"cannot fold it as a constant ({type(exc).__name__}: {str(exc)[:100]})") from None
