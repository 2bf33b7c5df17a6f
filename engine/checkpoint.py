"""Checkpoints: a network's parameters, buffers, optimizer state and training position in one
``.npz`` file, written atomically and read without pickle.

Layout: ``param/<layer>/<name>``, ``buffer/<layer>/<name>``, ``optim/<layer>/<param>/<slot>`` arrays,
and ``meta``: a JSON string (format, epoch, optimizer step, RNG states, normalization, class names, metrics).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import CnnrunError
from .files import atomic_write
from .npz import NpzError, read_npz
from .options import _is_int, show

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
    """Read a checkpoint: a missing, truncated, corrupted or malformed file (bad keys, non-numeric or
    non-finite arrays, a meta that is not what :func:`save_checkpoint` writes) is a :class:`CheckpointError`.
    """
    path = Path(path)
    try:
        arrays = read_npz(path, what="the checkpoint")
    except NpzError as exc:
        raise CheckpointError(f"checkpoint {exc}") from None
    if "meta" not in arrays:
        raise CheckpointError(f"{path} is not a cnnrun checkpoint (it has no 'meta' array)")
    meta = _parse_meta(arrays.pop("meta"), path)
    checkpoint = Checkpoint({}, {}, {}, meta)
    for key, array in arrays.items():
        kind, _, rest = key.partition("/")
        layer, _, name = rest.rpartition("/")
        if kind not in KINDS or not rest or (kind != "optim" and not (layer and name)):
            raise CheckpointError(f"{path}: unknown array '{key}'; a checkpoint holds 'meta', "
                                  "'param/LAYER/NAME', 'buffer/LAYER/NAME' and 'optim/LAYER/PARAM/SLOT'")
        check_numbers(array, f"{path}: {KINDS[kind]} '{rest}'")
        if kind == "optim":
            checkpoint.optimizer[rest] = array
        else:
            tree = checkpoint.params if kind == "param" else checkpoint.buffers
            tree.setdefault(layer, {})[name] = array
    return checkpoint


KINDS = {"param": "parameter", "buffer": "buffer", "optim": "optimizer state"}
TRAINING_KEYS = ("epoch", "best", "optimizer", "rng")


def check_numbers(array: np.ndarray, what: str) -> np.ndarray:
    """``array`` if it holds finite real numbers, else a :class:`CheckpointError` naming ``what``."""
    if array.dtype.kind not in "fiu":
        raise CheckpointError(f"{what} must hold real numbers; got dtype {array.dtype}")
    if array.dtype.kind == "f":
        bad = np.count_nonzero(~np.isfinite(array))
        if bad:
            raise CheckpointError(f"{what} has {bad} NaN/Inf values of {array.size}: the checkpoint "
                                  "is unusable (train again or use an earlier checkpoint)")
    return array


def _parse_meta(array: np.ndarray, path: Path) -> dict:
    """The checkpoint's meta, its training fields checked (a fused checkpoint has none of them)."""
    if array.dtype.kind != "U" or array.shape != ():
        raise CheckpointError(f"{path}: meta must be a JSON string; got an array of {array.dtype} "
                              f"of shape {array.shape}")
    try:
        meta = json.loads(str(array))
    except (ValueError, RecursionError) as exc:
        raise CheckpointError(f"{path}: meta is not valid JSON ({type(exc).__name__}: {exc})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: meta must be a JSON object; got {show(meta)[:60]}")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a cnnrun checkpoint (format {show(meta.get('format'))[:60]})")

    def fail(key, expected):
        return CheckpointError(f"{path}: meta {key} must be {expected}; got {key}={show(meta[key])[:60]}")

    if "epoch" in meta and (not _is_int(meta["epoch"]) or meta["epoch"] < 0):
        raise fail("epoch", "an integer >= 0")
    best = meta.get("best")
    if best is not None and not (_is_number(best) and math.isfinite(best)):
        raise fail("best", "a finite number or null")
    optimizer = meta.get("optimizer", {"type": "", "step": 0})
    if not (isinstance(optimizer, dict) and isinstance(optimizer.get("type"), str)
            and _is_int(optimizer.get("step")) and optimizer["step"] >= 0):
        raise fail("optimizer", 'an object {"type": NAME, "step": integer >= 0}')
    if "rng" in meta:
        rng = meta["rng"]
        if not (isinstance(rng, dict) and isinstance(rng.get("layers"), dict) and "shuffle" in rng):
            raise fail("rng", 'an object {"shuffle": STATE, "layers": {LAYER: STATE}}')
        for name, state in [("shuffle", rng["shuffle"]), *((f"layers.{k}", v) for k, v in rng["layers"].items())]:
            _check_generator_state(state, f"{path}: meta rng.{name}")
    _check_normalization(meta.get("normalization"), path)
    names = meta.get("class_names")
    if names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        raise fail("class_names", "null or a list of strings")
    return meta


def _check_generator_state(state, where: str) -> None:
    """A state that ``np.random.default_rng()``'s PCG64 takes (as ``save_checkpoint`` stores it)."""
    try:
        np.random.default_rng().bit_generator.state = state
    except (TypeError, ValueError, KeyError, AttributeError, OverflowError):
        kind = state.get("bit_generator") if isinstance(state, dict) else state
        raise CheckpointError(f"{where} is not a PCG64 random-generator state (got {show(kind)[:60]})") from None


def _check_normalization(normalization, path: Path) -> None:
    if normalization is None:
        return
    lists = (normalization.get("mean"), normalization.get("std")) if isinstance(normalization, dict) else ()
    if not (len(lists) == 2 and all(isinstance(v, list) and v and all(_is_number(x) and math.isfinite(x)
                                                                        for x in v) for v in lists)
            and len(lists[0]) == len(lists[1])):
        raise CheckpointError(f"{path}: meta normalization must be null or {{\"mean\": [...], \"std\": [...]}} "
                              f"(one finite number per channel); got {show(normalization)[:80]}")
    if any(s <= 0 for s in lists[1]):
        raise CheckpointError(f"{path}: meta normalization std must be > 0 for every channel; "
                              f"got std={show(lists[1])[:80]}")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_resumable(checkpoint: Checkpoint, net, source: str) -> None:
    """Check that ``checkpoint`` holds a training position for ``net``: epoch, best, optimizer, and an
    RNG state for layers of the network."""
    meta = checkpoint.meta
    missing = [key for key in TRAINING_KEYS if key not in meta]
    if len(missing) == len(TRAINING_KEYS):
        raise CheckpointError(f"{source} is not a training checkpoint (no optimizer state or position; "
                              f"e.g. the output of cnnrun fuse): it can be evaluated, not resumed")
    if missing:
        raise CheckpointError(f"{source} cannot be resumed: its meta has no {', '.join(map(repr, missing))}")
    unknown = [name for name in meta["rng"]["layers"] if name not in net.contexts]
    if unknown:
        raise CheckpointError(f"{source} does not fit network '{net.name}': meta rng.layers names "
                              f"'{unknown[0]}', which is no layer of the network")


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
    for layer, named in checkpoint.buffers.items():
        variance = np.asarray(named.get("running_var", ()))
        if (variance < 0).any():
            i = int(np.argmax(variance < 0))
            raise CheckpointError(f"{source}: buffer {layer}.running_var holds a negative variance "
                                  f"({float(variance.flat[i])} at index {i}); a variance is >= 0")
    net.params_changed()
    for tree, theirs in ((net.params, checkpoint.params), (net.buffers, checkpoint.buffers)):
        for layer, named in theirs.items():
            for name, array in named.items():
                net.backend.copy_into(tree[layer][name], np.asarray(array, net.dtype))
