"""Early stopping (``train.early_stopping``): stop when the monitored validation metric has not
improved for ``patience`` epochs (Keras' ``EarlyStopping(monitor, patience, min_delta)``,
Lightning's ``EarlyStopping``).

An epoch improves on the best so far when ``val_loss < best - min_delta`` (or ``val_accuracy >
best + min_delta``); ``wait`` counts the epochs since the last improvement, and training stops
after the epoch where ``wait`` reaches ``patience``. The state (``best``, ``best_epoch``, ``wait``)
is in every checkpoint's meta, so a resumed run stops where the uninterrupted one would.
"""

from __future__ import annotations

import math

from .checkpoint import CheckpointError
from .errors import ConfigError
from .options import _is_int, float_option, int_option, show

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


class EarlyStopping:
    """The stopping state of a run: ``monitor``, ``best`` (the best monitored value), ``best_epoch``
    and ``wait`` (epochs since it); :meth:`after` gives the state after one more epoch without
    changing this one."""

    def __init__(self, config: dict):
        self.config = config
        self.state = {"monitor": config["monitor"], "best": None, "best_epoch": None, "wait": 0}

    def restore(self, state, source: str) -> None:
        """Continue from a checkpoint's ``early_stopping`` state; none (a run trained without early
        stopping) or one for another monitor starts counting afresh."""
        if state is None or isinstance(state, dict) and state.get("monitor") != self.config["monitor"]:
            return
        if not _valid_state(state):
            raise CheckpointError(f"{source}: meta early_stopping must be {{\"monitor\", \"best\", \"best_epoch\", "
                                  f"\"wait\"}} as training writes it; got {show(state)[:80]}")
        self.state = dict(state)

    def after(self, record: dict) -> dict:
        """The state once the epoch of ``record`` is counted."""
        value, best = record[self.config["monitor"]], self.state["best"]
        delta = self.config["min_delta"]
        improved = best is None or (value < best - delta if self.config["monitor"] == "val_loss"
                                    else value > best + delta)
        if improved:
            return {**self.state, "best": value, "best_epoch": record["epoch"], "wait": 0}
        return {**self.state, "wait": self.state["wait"] + 1}

    @property
    def should_stop(self) -> bool:
        return self.state["wait"] >= self.config["patience"]

    def reason(self) -> str:
        """Why training stopped: ``early stopping: val_loss did not improve ... (best epoch 3, best.npz)``."""
        config = self.config
        by = f" by more than {config['min_delta']:g}" if config["min_delta"] else ""
        return (f"early stopping: {config['monitor']} did not improve{by} for {config['patience']} epoch(s); "
                f"the best was {self.state['best']:.4f} at epoch {self.state['best_epoch']} (best.npz)")


def _valid_state(state) -> bool:
    """Whether ``state`` is an :class:`EarlyStopping` state (a finite best with its epoch, or neither)."""
    if not isinstance(state, dict):
        return False
    best, epoch, wait = state.get("best"), state.get("best_epoch"), state.get("wait")
    if not (_is_int(wait) and wait >= 0):
        return False
    if best is None:
        return epoch is None
    return isinstance(best, (int, float)) and not isinstance(best, bool) and math.isfinite(best) and _is_int(epoch)
