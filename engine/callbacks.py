"""Callbacks: code that the training loop calls at fixed points (Keras' ``keras.callbacks``,
Lightning's ``Callback``), and the built-in ones.

The protocol (every method optional; :class:`Callback` has them all as no-ops), in the order they
are called; epochs and batches are counted from 1:

- ``on_train_begin(logs)``: before the first epoch (after a resumed run's state is restored);
- ``on_epoch_begin(epoch, logs)``: ``trainer.lr`` is the epoch's learning rate, which may be changed;
- ``on_batch_begin(batch, logs)``: ``logs["size"]``, the batch's examples;
- ``on_batch_end(batch, logs)``: ``batch_loss`` (this batch's loss, before its step; a non-finite
  one is not applied), ``loss`` (the epoch's running mean) and ``samples`` (seen this epoch);
- ``on_epoch_end(epoch, logs)``: ``logs`` is the epoch's metrics record (``train_loss``,
  ``train_accuracy``, ``val_loss``, ``val_accuracy``, ``train_<metric>``, ``val_<metric>``, ``lr``,
  ``seconds``, ...), as metrics.jsonl holds it;
- ``on_train_end(logs)``: after the last epoch, also when training stopped early; not after an error.

``self.trainer`` is the :class:`~cnnrun.engine.trainer.Trainer` (``net``, ``optimizer``, ``epoch``,
``history``, ``lr``). To stop, set ``self.trainer.stop_training = True`` (and ``stop_reason``, a
line said at the end): training ends after the current batch, keeping the epochs already recorded
(an epoch cut short gets no record). Keras: ``self.model.stop_training = True``.
"""

from __future__ import annotations

import math
from pathlib import Path

from .checkpoint import CheckpointError, Checkpoint, network_state, restore_network, save_checkpoint
from .errors import CnnrunError
from .files import write_text
from .options import _is_int, choice_option, float_option, int_option, show
from .run_folder import metrics_csv

MODES = ("auto", "min", "max")


class Callback:
    """Base class of callbacks: every method of the protocol, doing nothing."""

    trainer = None

    def set_trainer(self, trainer) -> None:
        self.trainer = trainer

    def on_train_begin(self, logs: dict | None = None) -> None: ...
    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None: ...
    def on_batch_begin(self, batch: int, logs: dict | None = None) -> None: ...
    def on_batch_end(self, batch: int, logs: dict | None = None) -> None: ...
    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None: ...
    def on_train_end(self, logs: dict | None = None) -> None: ...


class CallbackList:
    """Callbacks called in their order; an object without a method of the protocol is skipped for it."""

    def __init__(self, callbacks, trainer):
        self.callbacks = list(callbacks)
        for callback in self.callbacks:
            if hasattr(callback, "set_trainer"):
                callback.set_trainer(trainer)

    def call(self, hook: str, *args) -> None:
        for callback in self.callbacks:
            method = getattr(callback, hook, None)
            if method is not None:
                method(*args)


def check_callbacks(callbacks) -> list[Callback]:
    """``callbacks`` as a list of :class:`Callback`; anything else is one clear error."""
    callbacks = list(callbacks or [])
    for index, callback in enumerate(callbacks):
        if not isinstance(callback, Callback):
            raise CnnrunError(f"callbacks[{index}] is {callback!r}, not a cnnrun.engine.callbacks.Callback "
                              f"(subclass it and implement on_epoch_end(epoch, logs), ...)")
    return callbacks


class Monitor:
    """A monitored value of the epoch records: ``mode`` "min" or "max" ("auto": "min" for a name
    with "loss" in it, else "max"), improved when beyond the best by more than ``min_delta``."""

    def __init__(self, monitor: str, mode: str = "auto", min_delta: float = 0.0, who: str = "callback"):
        if not isinstance(monitor, str) or not monitor:
            raise CnnrunError(f"{who}: monitor must be a metric name such as \"val_loss\"; got {show(monitor)}")
        self.monitor, self.who = monitor, who
        self.mode = choice_option(mode, "mode", MODES)
        if self.mode == "auto":
            self.mode = "min" if "loss" in monitor else "max"
        self.min_delta = float_option(min_delta, "min_delta", low=0.0)

    def value(self, logs: dict) -> float:
        value = logs.get(self.monitor)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            hint = " (no validation data: pass validation_data or validation_split)" \
                if self.monitor.startswith("val_") and logs.get("val_loss") is None else ""
            held = ", ".join(k for k, v in logs.items() if v is not None)
            raise CnnrunError(f"{self.who} monitors '{self.monitor}', which epoch {logs.get('epoch')} does not "
                              f"measure{hint}; the records hold: {held}")
        return float(value)

    def improved(self, value: float, best: float | None) -> bool:
        if best is None:
            return True
        return value < best - self.min_delta if self.mode == "min" else value > best + self.min_delta


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved for ``patience`` epochs (Keras' ``EarlyStopping``;
    ``train.early_stopping`` of a network file uses this class too).

    An epoch improves on the best so far when ``value < best - min_delta`` ("min") or ``value > best
    + min_delta`` ("max"); ``wait`` counts the epochs since the last improvement, and training stops
    after the epoch where it reaches ``patience``. ``state`` (``monitor``, ``best``, ``best_epoch``,
    ``wait``) is in every checkpoint's meta, so a resumed run stops where the uninterrupted one
    would. ``restore_best_weights``: when training ends, the network gets back the parameters and
    buffers of its best epoch (of this run; kept as host copies).
    """

    def __init__(self, monitor="val_loss", patience=1, min_delta=0.0, mode="auto", restore_best_weights=False):
        self.watch = Monitor(monitor, mode, min_delta, who="early stopping")
        self.config = {"monitor": monitor, "patience": int_option(patience, "patience"),
                       "min_delta": self.watch.min_delta}
        self.restore_best_weights = bool(restore_best_weights)
        self.state = self._fresh()
        self.resumed = False  # the state came from a checkpoint: the next run continues it
        self.best_weights: tuple[dict, dict] | None = None

    def _fresh(self) -> dict:
        return {"monitor": self.config["monitor"], "best": None, "best_epoch": None, "wait": 0}

    def restore(self, state, source: str) -> None:
        """Continue from a checkpoint's ``early_stopping`` state; none (a run trained without early
        stopping) or one for another monitor starts counting afresh."""
        self.resumed = True
        if state is None or isinstance(state, dict) and state.get("monitor") != self.config["monitor"]:
            return
        if not _valid_state(state):
            raise CheckpointError(f"{source}: meta early_stopping must be {{\"monitor\", \"best\", \"best_epoch\", "
                                  f"\"wait\"}} as training writes it; got {show(state)[:80]}")
        self.state = dict(state)

    def after(self, record: dict) -> dict:
        """The state once the epoch of ``record`` is counted (this one is left as it is)."""
        value = self.watch.value(record)
        if self.watch.improved(value, self.state["best"]):
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

    def _stop(self) -> None:
        self.trainer.stop_training, self.trainer.stop_reason = True, self.reason()

    def on_train_begin(self, logs=None):
        if not self.resumed:  # a new run (one callback may serve several fits)
            self.state = self._fresh()
        self.resumed, self.best_weights = False, None
        if self.should_stop:  # a resumed run that had stopped
            self._stop()

    def on_epoch_end(self, epoch, logs=None):
        self.state = self.after(logs)
        if self.restore_best_weights and self.state["best_epoch"] == epoch:
            self.best_weights = network_state(self.trainer.net)
        if self.should_stop:
            self._stop()

    def on_train_end(self, logs=None):
        if self.restore_best_weights and self.best_weights is not None:
            restore_network(self.trainer.net, Checkpoint(*self.best_weights), "the best weights")


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


class ModelCheckpoint(Callback):
    """Write the training state after each epoch (Keras' ``ModelCheckpoint``) to ``path``, a
    checkpoint file that ``cnnrun eval``/``predict``, ``load_checkpoint`` and ``--resume`` read.

    ``path`` may hold ``{epoch}`` and record keys (``"ckpt-{epoch:03d}-{val_loss:.3f}.npz"``);
    ``save_best_only`` writes only epochs that improve ``monitor`` (see :class:`Monitor`).
    """

    def __init__(self, path, monitor="val_loss", mode="auto", save_best_only=False, min_delta=0.0):
        self.path = str(path)
        self.watch = Monitor(monitor, mode, min_delta, who="ModelCheckpoint")
        self.save_best_only = bool(save_best_only)
        self.best: float | None = None

    def on_epoch_end(self, epoch, logs=None):
        if self.save_best_only:
            value = self.watch.value(logs)
            if not self.watch.improved(value, self.best):
                return
            self.best = value
        save_checkpoint(Path(self.path.format(**{**logs, "epoch": epoch})), self.trainer.checkpoint(logs))


class CSVLogger(Callback):
    """The epoch records of this run as CSV in ``path`` (Keras' ``CSVLogger``), rewritten atomically
    after each epoch, in the format of a run folder's metrics.csv."""

    def __init__(self, path):
        self.path = Path(path)
        self.records: list[dict] = []

    def on_train_begin(self, logs=None):
        self.records = []

    def on_epoch_end(self, epoch, logs=None):
        self.records.append(dict(logs))
        write_text(self.path, metrics_csv(self.records))


class LearningRateScheduler(Callback):
    """Set each epoch's learning rate to ``schedule(epoch, lr)`` (epoch from 1; ``lr`` the rate the
    ``train.schedule`` gives for it). Keras: ``LearningRateScheduler`` (epochs from 0 there)."""

    def __init__(self, schedule):
        if not callable(schedule):
            raise CnnrunError(f"LearningRateScheduler needs a function schedule(epoch, lr); got {schedule!r}")
        self.schedule = schedule

    def on_epoch_begin(self, epoch, logs=None):
        lr = self.schedule(epoch, self.trainer.lr)
        if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not (math.isfinite(lr) and lr > 0):
            raise CnnrunError(f"LearningRateScheduler: schedule({epoch}, {self.trainer.lr:g}) returned {lr!r}; "
                              f"expected a positive number")
        self.trainer.lr = float(lr)


class ReduceLROnPlateau(Callback):
    """Multiply the optimizer's base learning rate by ``factor`` (not below ``min_lr``) once
    ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs, then wait
    ``cooldown`` epochs before counting again (Keras' ``ReduceLROnPlateau``; PyTorch's
    ``ReduceLROnPlateau`` with ``threshold_mode="abs"``). The ``train.schedule`` then runs on the
    reduced base rate."""

    def __init__(self, monitor="val_loss", factor=0.1, patience=10, mode="auto", min_delta=1e-4, cooldown=0,
                 min_lr=0.0):
        self.watch = Monitor(monitor, mode, min_delta, who="ReduceLROnPlateau")
        self.factor = float_option(factor, "factor", low=0.0, high=1.0, low_open=True, high_open=True)
        self.patience = int_option(patience, "patience")
        self.cooldown = int_option(cooldown, "cooldown", minimum=0)
        self.min_lr = float_option(min_lr, "min_lr", low=0.0)
        self.best, self.wait, self.cooling = None, 0, 0

    def on_train_begin(self, logs=None):
        self.best, self.wait, self.cooling = None, 0, 0

    def on_epoch_end(self, epoch, logs=None):
        value = self.watch.value(logs)
        if self.cooling:
            self.cooling -= 1
            self.wait = 0
        if self.watch.improved(value, self.best):
            self.best, self.wait = value, 0
        elif not self.cooling:
            self.wait += 1
            if self.wait >= self.patience:
                optimizer = self.trainer.optimizer
                optimizer.lr = max(optimizer.lr * self.factor, self.min_lr)
                self.cooling, self.wait = self.cooldown, 0


class TerminateOnNaN(Callback):
    """Stop training cleanly at the first batch whose loss is NaN or infinite (Keras'
    ``TerminateOnNaN``): that batch's step is not applied, the network keeps the weights of the step
    before, and ``fit`` returns the epochs recorded so far. Without it, such a loss raises
    :class:`~cnnrun.engine.stopping.TrainingStopped`."""

    def on_batch_end(self, batch, logs=None):
        loss = logs["batch_loss"]
        if not math.isfinite(loss):
            self.trainer.stop_training = True
            self.trainer.stop_reason = (f"TerminateOnNaN: the loss became {loss} at epoch {self.trainer.epoch + 1}, "
                                        f"batch {batch}")


class History(Callback):
    """The epoch records of a run, as ``fit`` returns them (Keras' ``History``): ``history`` maps each
    record key to its values per epoch (``history.history["val_loss"]``), ``epoch`` lists the
    epochs, ``records`` the records themselves."""

    def __init__(self, records: list[dict] | None = None):
        self.records: list[dict] = list(records or [])

    def on_epoch_end(self, epoch, logs=None):
        self.records.append(dict(logs))

    @property
    def epoch(self) -> list[int]:
        return [r["epoch"] for r in self.records]

    @property
    def history(self) -> dict[str, list]:
        keys = dict.fromkeys(k for r in self.records for k in r if k != "epoch")
        return {k: [r.get(k) for r in self.records] for k in keys}

    def __repr__(self) -> str:
        return f"History(epochs={len(self.records)}, keys={list(self.history)})"
