"""The Python API of a network, Keras-style: ``net.fit``, ``net.evaluate``, ``net.predict``
(:class:`~cnnrun.engine.network.Network` delegates to the functions here).

``fit`` runs the training loop of ``cnnrun train`` (:class:`~cnnrun.engine.trainer.Trainer`) on
arrays or a data source, without a run folder; the same data, seed and settings give the same
metrics and weights as ``cnnrun train``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from .batch_loss import BatchLoss, ends_in_softmax
from .callbacks import History, check_callbacks
from .data import ArraySource, Examples, with_channel_axis
from .errors import CnnrunError
from .memory import check_batch_fits
from .metrics import make_metrics, measure
from .optim import Optimizer
from .plugins import Registries, default_registries
from .progress import Reporter, TextReporter
from .train_config import resolve_train_config
from .trainer import Trainer

TRAIN_KEYS = ("epochs", "batch_size", "validation_split", "loss", "augment", "seed", "schedule", "drop_last",
              "early_stopping")


def fit(net, x=None, y=None, *, data=None, validation_data=None, optimizer=None, metrics=None, callbacks=None,
        verbose: bool = False, registries: Registries | None = None, base_dir=None, **train_keys) -> History:
    """Train ``net`` in place and return its :class:`~cnnrun.engine.callbacks.History`.

    The settings are the network's ``train`` section (``net.config["train"]``, docs/format.md), each
    replaced by the argument of its name where given: ``epochs``, ``batch_size``,
    ``validation_split``, ``loss``, ``augment``, ``seed`` (the split, the shuffling and the
    augmentation; the weights are the network's own, initialized when it was built), ``schedule``,
    ``drop_last``, ``early_stopping``. The examples: arrays ``x`` (``(N, *input_shape)``) and integer
    labels ``y``, with ``validation_data=(xv, yv)`` or a stratified ``validation_split``; or ``data``,
    a ``train.data`` object (``{"type": "image_folder", ...}``, paths relative to ``base_dir``, by
    default the network file's folder); or else the train section's ``data``. ``optimizer``: a
    ``train.optimizer`` object or an :class:`~cnnrun.engine.optim.Optimizer`. ``metrics``: names,
    objects, :class:`~cnnrun.engine.metrics.Metric` instances or functions ``f(outputs, labels)``.
    ``callbacks``: :class:`~cnnrun.engine.callbacks.Callback` instances (a
    :class:`~cnnrun.engine.progress.Reporter` among them shows progress); ``verbose`` adds the
    progress display of ``cnnrun train``.
    """
    unknown = [k for k in train_keys if k not in TRAIN_KEYS]
    if unknown:
        raise CnnrunError(f"fit() got an unexpected argument '{unknown[0]}'; it takes x, y, data, validation_data, "
                          f"optimizer, metrics, callbacks, verbose, registries, base_dir, {', '.join(TRAIN_KEYS)}")
    registries = registries or default_registries()
    overrides = {k: v for k, v in train_keys.items() if v is not None}
    if data is not None:
        overrides["data"] = data
    if isinstance(optimizer, dict):
        overrides["optimizer"] = optimizer
    elif optimizer is not None and not isinstance(optimizer, Optimizer):
        raise CnnrunError(f"optimizer must be a train.optimizer object ({{\"type\": \"sgd\", \"lr\": 0.1}}) or an "
                          f"Optimizer; got {optimizer!r}")
    config = resolve_train_config((net.config or {}).get("train"), overrides)
    if isinstance(optimizer, Optimizer):
        config["optimizer"] = {"type": optimizer.type_name, "lr": optimizer.lr}
    if metrics is not None:
        config["metrics"] = list(metrics)
    source = _array_source(x, y, validation_data, data)
    callbacks = check_callbacks(callbacks)
    reporter = next((c for c in callbacks if isinstance(c, Reporter)), None)
    if reporter is None and verbose:
        reporter = TextReporter(sys.stdout)
    history = History()
    trainer = Trainer(net, config, base_dir=Path(base_dir) if base_dir is not None else net.base_dir,
                      registries=registries, reporter=reporter, source=source,
                      optimizer=optimizer if isinstance(optimizer, Optimizer) else None,
                      callbacks=[c for c in callbacks if c is not reporter] + [history])
    trainer.fit()
    return history


def _array_source(x, y, validation_data, data) -> ArraySource | None:
    if x is None and y is None:
        if validation_data is not None:
            raise CnnrunError("validation_data goes with arrays x and y; a data source has its own validation "
                              "split (validation_split, or the source's validation set)")
        return None
    if x is None or y is None:
        raise CnnrunError("fit(x, y) needs both the inputs x and the labels y")
    if data is not None:
        raise CnnrunError("fit() takes arrays x and y or a data source data=..., not both")
    return ArraySource(x, y, validation_data)


def evaluate(net, x, y, *, batch_size: int = 256, loss=None, metrics=None,
             registries: Registries | None = None) -> dict:
    """``{"loss", "accuracy", <metric>: value, ...}`` of ``net`` in evaluation mode over ``x`` and
    integer labels ``y``, on the network's device. ``loss`` defaults to the train section's;
    ``metrics`` are as in :func:`fit` (default: the train section's)."""
    registries = registries or default_registries()
    section = resolve_train_config((net.config or {}).get("train"), {} if loss is None else {"loss": loss})
    x = _inputs(net, x)
    labels = np.asarray(y)
    if labels.shape != (len(x),) or not np.issubdtype(labels.dtype, np.integer):
        raise CnnrunError(f"evaluate: y must be {len(x)} integer labels (one per input); got {labels.dtype} "
                          f"of shape {labels.shape}")
    check_batch_fits(net, min(batch_size, len(x)), "evaluate", training=False)
    chosen = make_metrics(section["metrics"] if metrics is None else metrics, registries.metrics)
    with np.errstate(over="ignore", invalid="ignore"):
        return measure(net, BatchLoss(net, section["loss"], registries.losses), Examples(x, labels), batch_size, chosen)


def predict(net, x, *, batch_size: int = 256, probabilities: bool | None = None) -> np.ndarray:
    """The outputs of ``net`` in evaluation mode for ``x``, on the host (float64): class
    probabilities (a softmax of the outputs, unless the network ends in one), or, with
    ``probabilities=False``, the raw outputs. The default is probabilities for a classifier (an
    output of shape ``(classes,)`` trained with cross_entropy, the train section's ``loss``), raw
    outputs otherwise (a regression network)."""
    x = _inputs(net, x)
    if probabilities is None:
        loss = ((net.config or {}).get("train") or {}).get("loss", "cross_entropy")
        name = loss.get("type") if isinstance(loss, dict) else loss  # {"type": ..., options}
        probabilities = len(net.output_shape) == 1 and name == "cross_entropy"
    check_batch_fits(net, min(batch_size, len(x)), "predict", training=False)
    net.inference()
    with np.errstate(over="ignore", invalid="ignore"):
        outputs = [net.backend.to_host(net.forward(x[i:i + batch_size])) for i in range(0, len(x), batch_size)]
        output = np.concatenate(outputs).astype(np.float64)
        if probabilities and not ends_in_softmax(net):
            output = np.exp(output - output.max(axis=1, keepdims=True))
            output /= output.sum(axis=1, keepdims=True)
    return output


def _inputs(net, x) -> np.ndarray:
    """``x`` as float32 inputs of the network (a missing channel axis of one channel added)."""
    x = np.asarray(x)
    if x.dtype.kind not in "biuf" or x.ndim == 0 or x.shape[0] == 0:
        raise CnnrunError(f"{net.name}: inputs must be a non-empty array of real numbers; got {x.dtype} of "
                          f"shape {x.shape}")
    x = with_channel_axis(x, net.input_shape)
    if not np.isfinite(x).all():
        raise CnnrunError(f"{net.name}: the inputs hold NaN or Inf (the first in example "
                          f"{int(np.argmax(~np.isfinite(x).reshape(len(x), -1).all(axis=1)))})")
    return np.ascontiguousarray(x, dtype=np.float32)

