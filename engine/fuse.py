"""Folding layers into the layer before them, for inference (``cnnrun fuse``): a graph rewrite.

A layer folds into its producer when it says so (:meth:`Layer.folds_into`) and computes the
producer's new parameters (:meth:`Layer.fold_parameters`): batchnorm folds into a layer declaring
``affine_output_channels`` (conv2d, conv1d, linear). The folded layer gets ``"bias": true``.
Training the fused network is not the same as training the original (the folded layers are gone).
"""

from __future__ import annotations

import copy

from .checkpoint import Checkpoint, restore_network
from .network import Network
from .plan import foldable_pairs


def fuse_network(config: dict, checkpoint: Checkpoint, registry=None,
                 source: str = "checkpoint") -> tuple[dict, Checkpoint, list]:
    """``(new_config, new_checkpoint, folded_pairs)``: the network described by ``config`` with its
    trained ``checkpoint``, every foldable batchnorm folded into the layer before it.

    ``folded_pairs`` lists ``(layer, folded layer)`` names (:func:`foldable_pairs`). The new checkpoint keeps the
    input normalization and class names of the old one's meta; the optimizer state is left out. ``source`` names the
    checkpoint in the error raised when it does not fit the network.
    """
    net = Network.from_config(config, registry=registry)
    config = net.config  # blocks expanded: one entry per node
    restore_network(net, checkpoint, source)
    pairs = foldable_pairs(net)
    params = {layer: dict(named) for layer, named in checkpoint.params.items()}
    by_name = {node.name: node for node in net.nodes}
    for layer, bn in pairs:
        params[layer].update(by_name[bn].layer.fold_parameters(
            checkpoint.params[layer], checkpoint.params.get(bn, {}), checkpoint.buffers.get(bn, {})))
        params.pop(bn, None)
    removed = {bn for _, bn in pairs}
    buffers = {layer: dict(named) for layer, named in checkpoint.buffers.items() if layer not in removed}
    meta = {"network": net.name, "normalization": checkpoint.meta.get("normalization"),
            "fused": [list(pair) for pair in pairs], "plugins": checkpoint.meta.get("plugins"),
            "class_names": checkpoint.meta.get("class_names")}
    new_config = copy.deepcopy(config)
    if pairs:
        new_config["layers"] = _rewired_layers(config["layers"], net, {bn: layer for layer, bn in pairs})
    fused = Checkpoint(params, buffers, {}, meta)
    restore_network(Network.from_config(new_config, registry=registry), fused, "the fused checkpoint")
    return new_config, fused, pairs


def _rewired_layers(layers: list, net: Network, folded_into: dict[str, str]) -> list:
    """The JSON layer list without the folded batchnorms: each folded layer takes its batchnorm's
    place in the list (so every layer still comes after its inputs), gets ``"bias": true`` (if it said
    false), and inputs that named the batchnorm name the layer. Layers with parameters and layers
    named in ``inputs`` get explicit names, so no auto-generated name ("conv2d_2") shifts when entries
    go away."""
    index_of = {node.name: index for index, node in enumerate(net.nodes)}
    moved = set(folded_into.values())
    order = []  # the new list, as indexes into the old one
    for index, node in enumerate(net.nodes):
        if node.name in folded_into:
            order.append(index_of[folded_into[node.name]])
        elif node.name not in moved:
            order.append(index)
    new_layers = []
    for position, index in enumerate(order):
        entry, node = copy.deepcopy(layers[index]), net.nodes[index]
        if node.name in moved and "bias" in entry:
            entry["bias"] = True
        inputs = [folded_into.get(source, source) for source in node.inputs]
        previous = net.nodes[order[position - 1]].name if position else "input"
        if "inputs" in entry or inputs != [previous]:
            entry["inputs"] = inputs[0] if isinstance(entry.get("inputs"), str) else inputs
        new_layers.append(entry)
    named_in_inputs = {source for entry in new_layers for source in _as_list(entry.get("inputs", []))}
    for position, index in enumerate(order):
        name = net.nodes[index].name
        if "name" not in new_layers[position] and (name in net.params or name in net.buffers
                                                   or name in named_in_inputs):
            new_layers[position] = {"name": name, **new_layers[position]}
    return new_layers


def _as_list(inputs) -> list:
    return [inputs] if isinstance(inputs, str) else list(inputs)
