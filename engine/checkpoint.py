"""Checkpoints: a network's parameters, buffers, optimizer state and training position in one
``.npz`` file, written atomically and read without pickle.

Layout: ``param/<layer>/<name>``, ``buffer/<layer>/<name>``, ``optim/<layer>/<param>/<slot>`` arrays,
and ``meta``: a JSON string (format, epoch, optimizer step, RNG states, normalization, metrics).
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import CnnrunError
from .files import atomic_write

FORMAT = "cnnrun-checkpoint-1"


class CheckpointError(CnnrunError):
    """A checkpoint that cannot be read, or does not fit the network."""


@dataclass
class Checkpoint:
    """What a checkpoint file holds."""

    params: dict[str, dict[str, np.ndarray]]
    buffers: dict[str, dict[str, np.ndarray]]
    optimizer: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)


def save_checkpoint(path, checkpoint: Checkpoint) -> None:
    """Write ``checkpoint`` to ``path`` atomically (:func:`cnnrun.engine.files.atomic_write`): a crash
    mid-write leaves the previous file intact. A checkpoint with a NaN or Inf anywhere is refused
    (:class:`CheckpointError`), and so is a file that cannot be written
    (:class:`~cnnrun.engine.files.WriteError`)."""
    path = Path(path)
    bad = non_finite_arrays(checkpoint)
    if bad:
        raise CheckpointError(f"refusing to write {path}: {', '.join(bad[:3])}"
                              f"{' and more' if len(bad) > 3 else ''} not finite (NaN or Inf)")
    try:
        meta = json.dumps({"format": FORMAT, **checkpoint.meta}, allow_nan=False)
    except ValueError:
        raise CheckpointError(f"refusing to write {path}: its meta holds a NaN or Inf") from None
    arrays = {"meta": np.array(meta)}
    for prefix, tree in (("param", checkpoint.params), ("buffer", checkpoint.buffers)):
        for layer, named in tree.items():
            for name, array in named.items():
                arrays[f"{prefix}/{layer}/{name}"] = np.asarray(array)
    for key, array in checkpoint.optimizer.items():
        arrays[f"optim/{key}"] = np.asarray(array)
    atomic_write(path, lambda f: np.savez(f, **arrays))


def non_finite_arrays(checkpoint: Checkpoint) -> list[str]:
    """The arrays of ``checkpoint`` holding a NaN or Inf: ``["parameter fc.weight", ...]``."""
    named = [(f"{what} {layer}.{name}", array)
             for what, tree in (("parameter", checkpoint.params), ("buffer", checkpoint.buffers))
             for layer, arrays in tree.items() for name, array in arrays.items()]
    named += [(f"optimizer state {key.replace('/', '.')}", array) for key, array in checkpoint.optimizer.items()]
    return [label for label, array in named
            if np.asarray(array).dtype.kind in "fc" and not np.isfinite(array).all()]


def load_checkpoint(path) -> Checkpoint:
    """Read a checkpoint; a missing, truncated or corrupted file is a :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
        meta = json.loads(str(arrays.pop("meta")))
    except (zipfile.BadZipFile, ValueError, KeyError, EOFError, OSError) as exc:
        raise CheckpointError(f"checkpoint {path} is truncated or corrupted ({type(exc).__name__}: {exc})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a cnnrun checkpoint (format {meta.get('format')!r})")
    checkpoint = Checkpoint({}, {}, {}, meta)
    for key, array in arrays.items():
        kind, rest = key.split("/", 1)
        if kind == "optim":
            checkpoint.optimizer[rest] = array
        else:
            layer, name = rest.rsplit("/", 1)
            tree = checkpoint.params if kind == "param" else checkpoint.buffers
            tree.setdefault(layer, {})[name] = array
    return checkpoint


def network_state(net) -> tuple[dict, dict]:
    """Host copies of ``net``'s parameters and buffers, as a checkpoint stores them (device-independent)."""
    to_host = net.backend.to_host
    copy = lambda tree: {layer: {k: to_host(v) for k, v in named.items()} for layer, named in tree.items()}
    return copy(net.params), copy(net.buffers)


def restore_network(net, checkpoint: Checkpoint, source="checkpoint") -> None:
    """Copy the checkpoint's parameters and buffers into ``net``, checking every name and shape."""
    for what, mine, theirs in (("parameter", net.params, checkpoint.params),
                               ("buffer", net.buffers, checkpoint.buffers)):
        expected = {(l, n): a.shape for l, named in mine.items() for n, a in named.items()}
        stored = {(l, n): a.shape for l, named in theirs.items() for n, a in named.items()}
        for key in sorted(set(expected) | set(stored)):
            if key not in stored:
                raise CheckpointError(f"{source} does not fit network '{net.name}': it has no {what} "
                                      f"{key[0]}.{key[1]}")
            if key not in expected:
                raise CheckpointError(f"{source} does not fit network '{net.name}': its {what} "
                                      f"{key[0]}.{key[1]} is not in the network")
            if stored[key] != expected[key]:
                raise CheckpointError(f"{source} does not fit network '{net.name}': {what} {key[0]}.{key[1]} "
                                      f"has shape {stored[key]} in the checkpoint, {expected[key]} in the network")
        for layer, named in theirs.items():
            for name, array in named.items():
                net.backend.copy_into(mine[layer][name], np.asarray(array, net.dtype))
