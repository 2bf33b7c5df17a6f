"""A network's state outside the network: saved whole, PyTorch-style state dicts, frozen layers.

:func:`save_network` writes one checkpoint (:mod:`cnnrun.engine.checkpoint`: one ``.npz``, written
atomically, read without pickle) holding the parameters and buffers and, in its meta, the network's
JSON (blocks expanded, each layer's ``trainable`` as it is now) and dtype; :func:`read_saved_network`
reads it back. Such a file is also a checkpoint for ``cnnrun eval`` and ``predict``.

A state dict is PyTorch's flat ``{"conv1.weight": array, "bn1.running_mean": array, ...}``: the
layer's name, a dot, the parameter or buffer name (the layer name may hold dots itself).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .checkpoint import (Checkpoint, CheckpointError, check_numbers, load_checkpoint, network_state, restore_network,
                         save_checkpoint)
from .errors import CnnrunError, did_you_mean
from .options import show

DTYPES = ("float32", "float64")
IGNORED = "num_batches_tracked"  # PyTorch's batchnorm counter: cnnrun's batchnorm uses momentum only


class StateDictError(CnnrunError):
    """A state dict that does not fit the network: every mismatched key, in one message."""


class IncompatibleKeys(NamedTuple):
    """What :func:`load_state_dict` left out (PyTorch's ``_IncompatibleKeys``)."""

    missing_keys: list[str]
    unexpected_keys: list[str]


def save_network(net, path) -> None:
    """Write ``net`` (its JSON, dtype, parameters and buffers) to ``path``; PyTorch:
    ``torch.save(model)`` without pickle."""
    if net.config is None:
        raise CnnrunError(f"network '{net.name}' has no JSON description (it was built from nodes, not "
                          "from_config/from_json): it cannot be saved whole; save its state_dict() instead")
    layers = [{k: v for k, v in entry.items() if k != "trainable"} for entry in net.config["layers"]]
    for entry, node in zip(layers, net.nodes):
        if not node.trainable:
            entry["trainable"] = False
    params, buffers = network_state(net)
    meta = {"network": net.name, "config": {**net.config, "layers": layers}, "dtype": net.dtype.name}
    save_checkpoint(path, Checkpoint(params, buffers, meta=meta))


def read_saved_network(path) -> tuple[dict, str, Checkpoint]:
    """``(config, dtype, checkpoint)`` of a file :func:`save_network` wrote."""
    checkpoint = load_checkpoint(path)
    config, dtype = checkpoint.meta.get("config"), checkpoint.meta.get("dtype", "float32")
    if not isinstance(config, dict):
        raise CheckpointError(f"{path} holds weights, not a whole network (its meta has no config): load it "
                              f"with Network.from_json(NETWORK.json).load_weights('{path}')")
    if dtype not in DTYPES:
        raise CheckpointError(f"{path}: meta dtype must be one of {', '.join(DTYPES)}; got {show(dtype)[:40]}")
    return config, dtype, checkpoint


def load_weights(net, path) -> None:
    """Copy the parameters and buffers of the checkpoint ``path`` (a file, or a run folder's best.npz:
    :func:`~cnnrun.engine.run_folder.inference_checkpoint`) into ``net``, every name and shape checked."""
    from .run_folder import inference_checkpoint

    path = inference_checkpoint(path)
    restore_network(net, load_checkpoint(path), str(path))


def state_dict(net) -> dict[str, np.ndarray]:
    """Host copies of every parameter and buffer, ``{"layer.name": array}`` in layer order (parameters
    before buffers, as PyTorch's ``model.state_dict()``)."""
    params, buffers = network_state(net)
    return {f"{node.name}.{key}": array for node in net.nodes
            for tree in (params, buffers) for key, array in tree.get(node.name, {}).items()}


def load_state_dict(net, mapping, strict: bool = True) -> IncompatibleKeys:
    """Copy ``mapping`` (``{"conv1.weight": array, ...}``, arrays or anything ``np.asarray`` takes) into
    ``net``. PyTorch: ``model.load_state_dict(mapping, strict)``.

    A shape that differs, and with ``strict`` a missing or an unexpected key, is a
    :class:`StateDictError` listing every such key; nothing is copied then. ``num_batches_tracked``
    of a batchnorm is accepted and ignored. Returns the missing and unexpected keys.
    """
    if not hasattr(mapping, "items"):
        raise StateDictError(f"load_state_dict takes a mapping of 'layer.name' -> array; got {type(mapping).__name__}")
    params, buffers = network_state(net)
    wanted = {f"{layer}.{key}": (tree, layer, key) for tree in (params, buffers)
              for layer, named in tree.items() for key in named}
    given, unexpected = {}, []
    for key, value in mapping.items():
        layer, _, name = str(key).rpartition(".")
        if key in wanted:
            given[key] = check_numbers(np.asarray(value), f"state dict '{key}'")
        elif not (name == IGNORED and f"{layer}.running_mean" in wanted):
            unexpected.append(str(key))
    missing = [key for key in wanted if key not in given]
    shapes = {key: tree[layer][name].shape for key, (tree, layer, name) in wanted.items()}
    misshaped = [f"{key} {tuple(array.shape)} in the mapping, {shapes[key]} in the network"
                 for key, array in given.items() if array.shape != shapes[key]]
    problems = [f"mis-shaped: {', '.join(misshaped)}"] if misshaped else []
    if strict and missing:
        problems.append(f"missing: {', '.join(missing)}")
    if strict and unexpected:
        problems.append(f"unexpected: {', '.join(f'{key}{did_you_mean(key, missing)}' for key in unexpected)}")
    if problems:
        hint = " (strict=False loads the keys that fit)" if strict and not misshaped else ""
        raise StateDictError(f"the state dict does not fit network '{net.name}': {'; '.join(problems)}{hint}")
    for key, array in given.items():
        tree, layer, name = wanted[key]
        tree[layer][name] = array
    restore_network(net, Checkpoint(params, buffers), "the state dict")
    return IncompatibleKeys(missing, unexpected)


def layer_names(net, names, what: str) -> list[str]:
    """``names`` (one name, a list of them, or None for every layer) checked against ``net``'s layers."""
    known = [node.name for node in net.nodes]
    if names is None:
        return known
    names = [names] if isinstance(names, str) else list(names)
    for name in names:
        if name not in known:
            raise CnnrunError(f"{net.name}: {what} names '{name}', which is no layer{did_you_mean(name, known)}")
    return names


def untrained(net) -> set[str]:
    """The layers whose backward no trainable parameter needs: neither they nor any layer they read,
    directly or not, has trainable parameters."""
    needed: dict[str, bool] = {}
    for node in net.nodes:
        needed[node.name] = (node.trainable and node.name in net.params) or any(needed.get(i, False)
                                                                                for i in node.inputs)
    return {name for name, need in needed.items() if not need}


def set_trainable(net, names, trainable: bool) -> None:
    """Mark the layers ``names`` (None: all) trainable or frozen; a frozen layer's gradients are zeroed."""
    for name in layer_names(net, names, "unfreeze" if trainable else "freeze"):
        node = next(n for n in net.nodes if n.name == name)
        node.trainable = net.contexts[name].trainable = trainable
        for array in net.grads.get(name, {}).values():
            net.backend.fill(array, 0)

