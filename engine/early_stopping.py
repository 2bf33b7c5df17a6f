"""Early stopping (``train.early_stopping``): stop when the monitored validation metric has not
improved for ``patience`` epochs (Keras' ``EarlyStopping(monitor, patience, min_delta)``,
Lightning's ``EarlyStopping``).

An epoch improves on the best so far when ``val_loss < best - min_delta`` (or ``val_accuracy >
best + min_delta``); ``wait`` counts the epochs since the last improvement, and training stops
after the epoch where ``wait`` reaches ``patience``. The state (``best``, ``best_epoch``, ``wait``)
is in every checkpoint's meta, so a resumed run stops where the uninterrupted one would. The rule is
:class:`~cnnrun.engine.callbacks.EarlyStopping`'s, the callback that ``fit`` takes too.
"""

from __future__ import annotations

from .callbacks import EarlyStopping
from .errors import ConfigError
from .options import float_option, int_option, show

__all__ = ["EarlyStopping", "best_scored_by", "check_early_stopping", "monitored_score", "score"]

MONITORS = ("val_loss", "val_accuracy")
KEYS = ("monitor", "patience", "min_delta")
SECTION = "train.early_stopping"


def check_early_stopping(value) -> dict | None:
    """``train.early_stopping`` with defaults filled in (``monitor`` "val_loss", ``min_delta`` 0;
    ``patience`` is required), or None when it is null."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ConfigError(f'must be null or an object {{"monitor": ..., "patience": N, "min_delta": d}}; '
                          f"got {show(value)[:60]}", section=SECTION)
    for key in value:
        if key not in KEYS:
            raise ConfigError(f"unknown key '{key}'; early_stopping accepts: {', '.join(KEYS)}",
                              section=SECTION, key=key)
    if "patience" not in value:
        raise ConfigError("missing required key 'patience' (epochs without improvement before stopping)",
                          section=SECTION, key="patience")
    monitor = value.get("monitor", "val_loss")
    if monitor not in MONITORS:
        raise ConfigError(f"monitor must be one of {', '.join(MONITORS)}; got monitor={show(monitor)}",
                          section=SECTION, key="monitor")
    try:
        patience = int_option(value["patience"], "patience")
        min_delta = float_option(value.get("min_delta", 0.0), "min_delta", low=0.0)
    except ConfigError as err:
        err.section = SECTION
        raise
    return {"monitor": monitor, "patience": patience, "min_delta": min_delta}


def monitored_score(record: dict, monitor: str) -> float:
    """The monitored value of an epoch's metrics record as a score to maximize (``-val_loss``)."""
    return -record["val_loss"] if monitor == "val_loss" else record["val_accuracy"]


def score(record: dict, monitor: str = "val_accuracy") -> float:
    """What best.npz maximizes: the validation accuracy (minus the validation loss when early stopping
    monitors it), or minus the training loss without validation."""
    return monitored_score(record, monitor) if record["val_accuracy"] is not None else -record["train_loss"]


def best_scored_by(meta: dict) -> str:
    """The metric that the ``best`` of a checkpoint's meta scores: the early-stopping monitor it was
    trained with, else ``val_accuracy``."""
    state = meta.get("early_stopping")
    monitor = state.get("monitor") if isinstance(state, dict) else None
    return monitor if monitor in MONITORS else "val_accuracy"
