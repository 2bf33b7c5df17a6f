"""Folding batchnorm into the conv2d, conv1d or linear layer before it, for inference (``cnnrun fuse``).

In evaluation mode a batchnorm is a per-channel affine map, so a layer ``y = w * x + b`` followed by
it computes the same as one layer with, per output channel c (s = gamma / sqrt(running_var + eps)):

    w'[c] = w[c] * s[c]        b'[c] = (b[c] - running_mean[c]) * s[c] + beta[c]

(b = 0 for a layer without bias; the folded layer gets one). PyTorch: ``fuse_conv_bn_eval``.
Training the fused network is not the same as training the original (it has no batchnorm left).
"""

from __future__ import annotations

import copy
from collections import Counter

import numpy as np

from .checkpoint import Checkpoint, restore_network
from .network import Network

FOLDABLE = ("conv2d", "conv1d", "linear")  # weight (out_channels, ...): output channels on axis 0


def fuse_network(config: dict, checkpoint: Checkpoint, registry=None,
                 source: str = "checkpoint") -> tuple[dict, Checkpoint, list]:
    """``(new_config, new_checkpoint, folded_pairs)``: the network described by ``config`` with its
    trained ``checkpoint``, every foldable batchnorm folded into the layer before it.

    ``folded_pairs`` lists ``(layer, batchnorm)`` names. A batchnorm is folded when its only input is
    a conv2d, conv1d or linear layer whose output nothing else reads. The new checkpoint keeps the
    input normalization of the old one's meta; the optimizer state is left out. ``source`` names the
    checkpoint in the error raised when it does not fit the network.
    """
    net = Network.from_config(config, registry=registry)
    restore_network(net, checkpoint, source)
    pairs = foldable_pairs(net)
    params = {layer: dict(named) for layer, named in checkpoint.params.items()}
    eps = {node.name: getattr(node.layer, "eps", None) for node in net.nodes}
    for layer, bn in pairs:
        params[layer]["weight"], params[layer]["bias"] = folded_parameters(
            checkpoint.params[layer], checkpoint.params[bn], checkpoint.buffers[bn], eps[bn])
        del params[bn]
    removed = {bn for _, bn in pairs}
    buffers = {layer: dict(named) for layer, named in checkpoint.buffers.items() if layer not in removed}
    meta = {"network": net.name, "normalization": checkpoint.meta.get("normalization"),
            "fused": [list(pair) for pair in pairs], "plugins": checkpoint.meta.get("plugins")}
    new_config = copy.deepcopy(config)
    if pairs:
        new_config["layers"] = _rewired_layers(config["layers"], net, {bn: layer for layer, bn in pairs})
    fused = Checkpoint(params, buffers, {}, meta)
    restore_network(Network.from_config(new_config, registry=registry), fused, "the fused checkpoint")
    return new_config, fused, pairs


def foldable_pairs(net: Network) -> list[tuple[str, str]]:
    """``(layer, batchnorm)`` for every batchnorm whose only input is a conv2d/conv1d/linear layer read
    by nothing else."""
    readers = Counter(source for node in net.nodes for source in node.inputs)
    by_name = {node.name: node for node in net.nodes}
    pairs = []
    for node in net.nodes:
        if node.layer.type_name != "batchnorm":
            continue
        source = by_name.get(node.inputs[0])  # None for the network input
        if source is not None and source.layer.type_name in FOLDABLE and readers[source.name] == 1:
            pairs.append((source.name, node.name))
    return pairs


def folded_parameters(layer_params: dict, bn_params: dict, bn_buffers: dict, eps: float):
    """``(weight, bias)`` of the layer with the batchnorm folded in (computed in float64)."""
    weight = np.asarray(layer_params["weight"])
    variance = np.asarray(bn_buffers["running_var"], np.float64)
    scale = np.asarray(bn_params["weight"], np.float64) / np.sqrt(variance + eps)
    bias = np.asarray(layer_params.get("bias", np.zeros(weight.shape[0])), np.float64)
    new_weight = weight * scale.reshape((-1,) + (1,) * (weight.ndim - 1))
    new_bias = (bias - bn_buffers["running_mean"]) * scale + bn_params["bias"]
    return new_weight.astype(weight.dtype), new_bias.astype(weight.dtype)


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
