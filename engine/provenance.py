"""Which plugin (and version) provided each layer type of a network, as its checkpoints record it.

A checkpoint's meta holds ``"plugins": {type_name: {"plugin": name, "version": version}}`` for the
layer types its network uses (:func:`layer_plugins`). When that network is built again and a type
is unknown, :func:`explains_missing_plugins` turns ``unknown layer type 'prelu'`` into a line naming
the plugin to install.
"""

from __future__ import annotations

import functools
import inspect
import json

import numpy as np

from .errors import ConfigError
from .run_folder import resolve_checkpoint


def layer_plugins(net, registry) -> dict[str, dict]:
    """``{type_name: {"plugin": name, "version": version or None}}`` for every layer type ``net``
    uses, from the registry it was built with (what a checkpoint's meta records as ``"plugins"``)."""
    types = sorted({node.layer.type_name for node in net.nodes})
    return {t: registry.provenance(t) for t in types if t in registry}


def explains_missing_plugins(checkpoint_argument: str):
    """Decorate a function that builds a network and reads the checkpoint passed as its argument
    ``checkpoint_argument`` (a file or a run folder; ``None``: no checkpoint). An unknown layer type
    that the checkpoint's meta says came from a plugin becomes ``layer type 'prelu' of conv3 came
    from plugin 'cnnrun-prelu' 0.2, which is not installed``."""

    def decorate(function):
        signature = inspect.signature(function)

        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            try:
                return function(*args, **kwargs)
            except ConfigError as err:
                checkpoint = signature.bind(*args, **kwargs).arguments.get(checkpoint_argument)
                explained = _explained(err, checkpoint)
                if explained is None:
                    raise
                raise explained from None

        return wrapper

    return decorate


def _explained(err: ConfigError, checkpoint) -> ConfigError | None:
    from .plugins import UnknownTypeError

    if not isinstance(err, UnknownTypeError) or err.kind != "layer type" or checkpoint is None:
        return None
    path, meta = _checkpoint_meta(checkpoint)
    provenance = meta.get("plugins") if isinstance(meta, dict) else None
    source = provenance.get(err.type_name) if isinstance(provenance, dict) else None
    if not isinstance(source, dict) or not isinstance(source.get("plugin"), str):
        return None
    version = f" {source['version']}" if source.get("version") else ""
    return ConfigError(f"layer type '{err.type_name}' of {err.layer} came from plugin '{source['plugin']}'"
                       f"{version}, which is not installed (the checkpoint {path} needs it; "
                       f"`cnnrun plugins` lists what is)", file=err.file)


def _checkpoint_meta(checkpoint):
    """``(path, meta)`` of a checkpoint file or run folder, reading only the meta; ``{}`` when it
    cannot be read (the caller then keeps its own error)."""
    try:
        path = resolve_checkpoint(checkpoint)
        with np.load(path, allow_pickle=False) as data:
            return path, json.loads(str(data["meta"]))
    except Exception:  # missing, not an npz, bad zip/zlib/JSON: nothing to add, the caller's error stands
        return checkpoint, {}
