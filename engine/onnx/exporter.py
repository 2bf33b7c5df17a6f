"""``export_onnx``: a network with its weights as an ONNX model, for runtimes such as onnxruntime.

Each layer writes its own nodes (:meth:`cnnrun.engine.Layer.to_onnx`, into an
:class:`~cnnrun.engine.onnx.export_graph.OnnxGraph`); the engine adds the input ``input`` of shape
``(N, *input_shape)`` with a dynamic batch axis ``N``, the output ``output`` and the initializers
(the parameters and buffers, named ``LAYER.KEY``, in their PyTorch layouts), and checks the model
with ``onnx.checker``. The model computes what ``net.forward(x, training=False)`` does.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import CnnrunError
from ..files import atomic_write
from ..layer import Layer
from ..network import INPUT, Network
from .export_graph import OnnxGraph

MIN_OPSET = 13
DEFAULT_OPSET = 17
BATCH = "N"  # the name of the dynamic batch axis


def onnx_package():
    """The ``onnx`` module, or a :class:`CnnrunError` saying how to install it."""
    try:
        import onnx
    except ImportError:
        raise CnnrunError("ONNX export needs the onnx package: pip install 'cnnrun[onnx]'") from None
    return onnx


def opset_range() -> tuple[int, int]:
    """The opsets ``export_onnx`` writes: 13 to the newest the installed onnx knows."""
    return MIN_OPSET, onnx_package().defs.onnx_opset_version()


def check_opset(opset) -> int:
    """``opset`` (default :data:`DEFAULT_OPSET`, or the newest known if older), or a one-line error."""
    low, high = opset_range()
    if opset is None:
        return min(DEFAULT_OPSET, high)
    if isinstance(opset, bool) or not isinstance(opset, int) or not low <= opset <= high:
        raise CnnrunError(f"opset must be an integer from {low} to {high} (the newest the installed onnx "
                          f"knows); got opset={opset!r}")
    return opset


def export_onnx(net: Network, path, *, opset: int | None = None, fuse: bool = False,
                metadata: dict[str, str] | None = None):
    """Write ``net`` (evaluation mode) to the ONNX file ``path``; returns the ``onnx.ModelProto``.

    ``opset``: the ONNX opset (default 17; :func:`opset_range`). ``fuse``: fold every batchnorm that
    follows a conv/linear layer into it first (:func:`cnnrun.engine.fuse.fuse_network`), else
    batchnorm is a BatchNormalization node. ``metadata``: strings stored in the model's
    ``metadata_props``. A layer whose type has no :meth:`~Layer.to_onnx` is a :class:`CnnrunError`
    naming it and its type, before anything is written.
    """
    onnx = onnx_package()
    opset = check_opset(opset)
    _check_exportable(net)
    if fuse:
        net = fused(net)
    model = _model(onnx, net, opset, metadata or {})
    try:
        data = model.SerializeToString()
    except ValueError as exc:  # protobuf's 2 GB limit
        raise CnnrunError(f"network '{net.name}': the ONNX model is too large to write: {exc}") from None
    try:
        onnx.checker.check_model(data, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CnnrunError(f"network '{net.name}': the exported graph is not valid ONNX: {first}") from None
    atomic_write(Path(path), lambda file: file.write(data))
    return model


def _check_exportable(net: Network) -> None:
    missing = [node for node in net.nodes if type(node.layer).to_onnx is Layer.to_onnx]
    if missing:
        layers = ", ".join(f"'{node.name}' ({node.layer.type_name})" for node in missing)
        raise CnnrunError(f"network '{net.name}': no ONNX export for layer(s) {layers}: the layer type has no "
                          f"to_onnx method (docs/plugins.md, Exporting to ONNX)")


def fused(net: Network) -> Network:
    """A copy of ``net`` with its batchnorms folded into the conv/linear layers before them (``cnnrun fuse``)."""
    from ..checkpoint import Checkpoint, network_state, restore_network
    from ..fuse import fuse_network
    from ..plugins import LayerRegistry

    if net.config is None:
        raise CnnrunError(f"network '{net.name}': fuse needs the network's description (a network built "
                          "by Network.from_config or Network.from_json)")
    registry = LayerRegistry()  # the network's own layer types, wherever they were registered
    registry.devices = net.devices
    for layer_class in {type(node.layer) for node in net.nodes}:
        registry.register(layer_class)
    params, buffers = network_state(net)
    config, checkpoint, _ = fuse_network(net.config, Checkpoint(params, buffers), registry, f"network '{net.name}'")
    folded = Network.from_config(config, registry=registry, dtype=net.dtype.name)
    restore_network(folded, checkpoint, "the fused checkpoint")
    return folded


def _model(onnx, net: Network, opset: int, metadata: dict):
    from cnnrun import __version__

    helper = onnx.helper
    graph = OnnxGraph(opset, net.dtype, net.backend.to_host)
    values = {INPUT: "input"}
    for node in net.nodes:
        graph.begin(node, {**net.params.get(node.name, {}), **net.buffers.get(node.name, {})})
        values[node.name] = graph.end(node.layer.to_onnx(graph, *(values[i] for i in node.inputs)))
    result = values[net.nodes[-1].name]
    if graph.end(result, "output") != "output":  # the last layer passes on an earlier value (dropout)
        graph.nodes.append(helper.make_node("Identity", [result], ["output"], name="output"))
    element = helper.np_dtype_to_tensor_dtype(net.dtype)
    model = graph.model
    model.graph.name = net.name
    model.graph.node.extend(graph.nodes)
    model.graph.input.append(helper.make_tensor_value_info("input", element, [BATCH, *net.input_shape]))
    model.graph.output.append(helper.make_tensor_value_info("output", element, [BATCH, *net.output_shape]))
    model.opset_import.append(helper.make_opsetid("", opset))
    model.ir_version = helper.find_min_ir_version_for(model.opset_import)
    model.producer_name, model.producer_version = "cnnrun", __version__
    helper.set_model_props(model, {str(k): str(v) for k, v in metadata.items()})
    return model
