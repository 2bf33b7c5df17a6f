"""Training: the ``train`` section of a network file, the epoch loop, checkpoints, metrics, resume.

``train("net.json")`` from Python does what ``cnnrun train net.json`` does on the command line.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from .augment import augment_rng, training_augmenter
from .batch_loss import BatchLoss
from .checkpoint import (Checkpoint, check_resumable, load_checkpoint, network_state,
                         non_finite_arrays, restore_network, save_checkpoint)
from .data import batches, prepare_data
from .early_stopping import EarlyStopping, best_scored_by, score
from .errors import CnnrunError, ConfigError
from .files import WriteError, copy_file, write_text
from .inference import evaluate
from .memory import check_batch_fits
from .network import Network, read_network_file
from .optim import make_optimizer
from .plot import PLOT_HINT, write_curves
from .plugins import Registries, default_registries
from .prefetch import DataWait, prefetched
from .progress import Reporter
from .provenance import explains_missing_plugins, layer_plugins
from .run_folder import (BEST, CONFIG, CURVES, LATEST, METRICS, RunFolderError, RunLock, clear_run,
                         create_new_folder, folder_name, make_folder, metrics_up_to, read_metrics,
                         remove_temp_files, resolve_checkpoint, run_files, write_metrics)
from .schedules import check_schedule
from .stopping import TrainingInterrupted, TrainingStopped, interrupted, last_good, sigterm_as_interrupt
from .train_config import resolve_train_config

__all__ = ["Trainer", "TrainResult", "TrainingInterrupted", "TrainingStopped", "train"]


@dataclass
class TrainResult:
    """What a training run leaves: the trained network, one metrics record per epoch (those of the
    run folder: a resumed run's earlier epochs too), the run folder."""

    network: Network
    metrics: list[dict] = field(default_factory=list)
    run_dir: Path | None = None


class Trainer:
    """Runs the epochs of one training run and writes its checkpoints and metrics.

    The run folder (:mod:`cnnrun.engine.run_folder`) holds ``config.json`` (the network with its
    resolved train section), ``metrics.jsonl``, ``latest.npz`` and ``best.npz`` (highest validation
    accuracy, or lowest training loss without validation) and ``curves.png`` when matplotlib is
    installed. A checkpoint is written only when everything in it, and the validation loss, is
    finite; else training stops and the previous checkpoint stays.
    """

    def __init__(self, net: Network, config: dict, *, run_dir: Path | None = None, base_dir: Path = Path("."),
                 registries: Registries | None = None, reporter: Reporter | None = None):
        self.net = net
        self.config = config
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.reporter = reporter or Reporter()
        registries = registries or default_registries()
        self.layer_plugins = layer_plugins(net, registries.layers)  # recorded in every checkpoint
        if len(net.output_shape) != 1:
            raise ConfigError(f"training needs a network output of shape (classes,); the last layer gives "
                              f"{net.output_shape} (add flatten and linear layers)", section="train")
        check_batch_fits(net, config["batch_size"], "train")
        self.train_data, self.validation, self.normalization, self.class_names = prepare_data(
            config["data"], input_shape=net.input_shape, num_classes=net.output_shape[0],
            validation_split=config["validation_split"], seed=config["seed"],
            registry=registries.data_sources, base_dir=base_dir)
        self._check_batches()
        self.optimizer = make_optimizer(config["optimizer"], registries.optimizers)
        self.optimizer.to(net.backend)  # an optimizer without kernels on this device fails now
        self.loss = BatchLoss(net, config["loss"])
        self.schedule = check_schedule(config["schedule"], config["epochs"], base_lr=self.optimizer.lr)
        self.shuffle = np.random.default_rng(config["seed"])
        self.augmenter, self.normalization, self.validation = training_augmenter(
            config["augment"], net.input_shape, self.normalization, self.validation)
        self.augment_rng = augment_rng(config["seed"])
        self.stopper = early_stopper(config, self.validation)
        self.monitor = config["early_stopping"]["monitor"] if self.stopper else "val_accuracy"
        self.epoch = 0
        self.best: float | None = None
        self.last_record: dict | None = None  # the metrics of epoch self.epoch (None before epoch 1)
        self.history: list[dict] = []  # what metrics.jsonl holds: one record per finished epoch

    def _check_batches(self) -> None:
        """Batches that cannot train are an error before anything runs: none at all with drop_last,
        or batches of one example under a batchnorm that sees one value per channel (after a linear)."""
        n, batch_size, drop_last = len(self.train_data), self.config["batch_size"], self.config["drop_last"]
        if drop_last and n < batch_size:
            raise ConfigError(f"drop_last leaves no batch: the training split has {n} examples, fewer than "
                              f"batch_size {batch_size}", section="train", key="drop_last")
        single = batch_size == 1 or n == 1
        last_single = not drop_last and n % batch_size == 1
        if not (single or last_single):
            return
        for node in self.net.nodes:
            if node.layer.type_name == "batchnorm" and math.prod(node.input_shapes[0][1:]) == 1:
                needs = (f"layer '{node.name}' (batchnorm) needs more than one value per channel in training, and "
                         f"it sees one value per example")
                if single:
                    raise ConfigError(f"{needs} while every batch holds 1 example (batch_size {batch_size}, "
                                      f"{n} training examples): use a larger batch_size", section="train")
                raise ConfigError(f"{needs} while the last batch of every epoch holds 1 example ({n} training "
                                  f"examples, batch_size {batch_size}): set \"drop_last\": true "
                                  f"(--set drop_last=true) or another batch_size", section="train")

    # -- state ---------------------------------------------------------------------------------
    def checkpoint(self, metrics: dict | None) -> Checkpoint:
        """The whole training state after ``self.epoch`` epochs."""
        params, buffers = network_state(self.net)
        meta = {"network": self.net.name, "epoch": self.epoch,
                "optimizer": {"type": self.config["optimizer"]["type"], "step": self.optimizer.step},
                "rng": {"shuffle": self.shuffle.bit_generator.state, "augment": self.augment_rng.bit_generator.state,
                        "layers": {n: c.rng.bit_generator.state for n, c in self.net.contexts.items()}},
                "normalization": self.normalization, "best": self.best, "metrics": metrics,
                "class_names": self.class_names, "early_stopping": self.stopper and self.stopper.state}
        meta["plugins"] = self.layer_plugins
        return Checkpoint(params, buffers, self.optimizer.state_arrays(), meta)

    def restore(self, checkpoint: Checkpoint, source: str) -> None:
        """Continue from ``checkpoint`` exactly where it stopped."""
        meta = checkpoint.meta
        check_resumable(checkpoint, self.net, source)
        restore_network(self.net, checkpoint, source)
        if meta["optimizer"]["type"] != self.config["optimizer"]["type"]:
            raise CnnrunError(f"{source} was trained with optimizer '{meta['optimizer']['type']}', "
                              f"not '{self.config['optimizer']['type']}'")
        self.optimizer.load_state_arrays(checkpoint.optimizer, meta["optimizer"]["step"], self.net.params)
        self.shuffle.bit_generator.state = meta["rng"]["shuffle"]
        self.augment_rng.bit_generator.state = meta["rng"].get("augment", self.augment_rng.bit_generator.state)
        for name, state in meta["rng"]["layers"].items():
            self.net.contexts[name].rng.bit_generator.state = state
        self.epoch, self.best, self.last_record = meta["epoch"], meta["best"], meta.get("metrics")
        if self.stopper:
            self.stopper.restore(meta.get("early_stopping"), source)
        if best_scored_by(meta) != self.monitor and self.last_record is not None:  # another monitor now:
            self.best = score(self.last_record, self.monitor)  # best.npz is tracked from the resumed epoch on
        if self.epoch > self.config["epochs"]:
            raise CnnrunError(f"{source} holds epoch {self.epoch}, past epochs {self.config['epochs']} (the total, "
                              f"not the number to add): nothing to train; pass --epochs {self.epoch + 1} or more "
                              f"to train on")

    def write_start(self, best: Checkpoint | None = None) -> None:
        """Write the starting state into a run folder that does not hold it yet: latest.npz, best.npz
        (``best``, or the starting state when it is the best so far) and the metrics so far."""
        start = self.checkpoint(self.last_record)
        if best is None and self.last_record is not None and score(self.last_record, self.monitor) == self.best:
            best = start
        self._write_checkpoints(start, best)
        write_metrics(self.run_dir / METRICS, self.history)

    def _write_checkpoints(self, latest: Checkpoint, best: Checkpoint | None) -> None:
        """best.npz (``best``, unless None), then latest.npz; the same checkpoint for both is
        serialized once and copied."""
        if best is not None:
            save_checkpoint(self.run_dir / BEST, best)
        if best is latest:
            copy_file(self.run_dir / BEST, self.run_dir / LATEST)
        else:
            save_checkpoint(self.run_dir / LATEST, latest)

    # -- the loop ------------------------------------------------------------------------------
    def fit(self) -> None:
        """Train until ``config["epochs"]`` epochs are done; each epoch's record joins ``history``."""
        epochs, batch_size = self.config["epochs"], self.config["batch_size"]
        while self.epoch < epochs and not self._stops_early():
            record = self._epoch(self.epoch + 1, epochs, batch_size)
            self.epoch += 1
            self._save(record)
            self.reporter.epoch_end({**record, "data_wait_seconds": self.data_wait})

    def _stops_early(self) -> bool:
        """Whether early stopping ends the run now (said on the reporter)."""
        if self.stopper is None or not self.stopper.should_stop:
            return False
        self.reporter.note(f"{self.stopper.reason()}; stopped after epoch {self.epoch}")
        return True

    def _epoch(self, epoch: int, epochs: int, batch_size: int) -> dict:
        lr = self.schedule.lr(epoch, self.optimizer.lr, epochs)
        drop_last = self.config["drop_last"]
        n_batches = (len(self.train_data) // batch_size if drop_last
                     else math.ceil(len(self.train_data) / batch_size))
        self.reporter.epoch_start(epoch, epochs, n_batches)
        started = time.perf_counter()
        total_loss = correct = seen = 0.0
        wait = DataWait()
        for index, (x, y) in enumerate(prefetched(batches(self.train_data, batch_size, self.shuffle), wait=wait), 1):
            if index > n_batches:
                break  # drop_last: the smaller last batch
            x = self.augmenter(x, self.augment_rng)
            output = self.net.forward(x, training=True)
            loss, batch_correct, grad, _ = self.loss(output, y)
            if not math.isfinite(loss):
                raise self._stopped(f"the loss became {loss} at epoch {epoch}, batch {index} (lr {lr:g})")
            self.loss.backward(self.net, grad, input_grad=False)
            self.optimizer.apply(self.net.params, self.net.grads, lr)
            total_loss += loss * len(y)
            correct += batch_correct
            seen += len(y)
            self.reporter.batch_end(index, int(seen), total_loss / seen)
        seconds = time.perf_counter() - started
        self.data_wait = wait.seconds  # for the reporter: the summary shows the share
        val_loss, val_accuracy = (evaluate(self.net, self.validation, self.config["loss"], batch_size)[:2]
                                  if self.validation is not None else (None, None))
        if val_loss is not None and not math.isfinite(val_loss):
            raise self._stopped(f"the validation loss became {val_loss} after epoch {epoch} (lr {lr:g})")
        return {"epoch": epoch, "train_loss": total_loss / seen, "train_accuracy": correct / seen,
                "val_loss": val_loss, "val_accuracy": val_accuracy, "lr": lr, "seconds": seconds,
                "samples_per_second": seen / seconds if seconds > 0 else None}

    def _save(self, record: dict) -> None:
        """best.npz (if improved), then latest.npz (then a copy of best.npz), then metrics.jsonl: after
        a kill anywhere in between, resuming from latest.npz redoes or completes exactly what is missing."""
        improved = self.best is None or score(record, self.monitor) > self.best
        previous_best, previous_stop = self.best, self.stopper and self.stopper.state
        if improved:
            self.best = score(record, self.monitor)
        if self.stopper:
            self.stopper.state = self.stopper.after(record)
        checkpoint = self.checkpoint(record)
        bad = non_finite_arrays(checkpoint)
        if bad:
            self.best = previous_best
            if self.stopper:
                self.stopper.state = previous_stop
            raise self._stopped(f"epoch {record['epoch']} left non-finite values in {', '.join(bad[:3])} "
                                f"(lr {record['lr']:g})")
        self._write_checkpoints(checkpoint, checkpoint if improved else None)
        self.last_record = record
        self.history.append(record)
        write_metrics(self.run_dir / METRICS, self.history)

    def _stopped(self, reason: str) -> TrainingStopped:
        return TrainingStopped(f"{reason}; training stopped. {last_good(self.run_dir)}; try a lower learning rate")


def early_stopper(config: dict, validation) -> EarlyStopping | None:
    """The run's :class:`EarlyStopping` (None without ``early_stopping``); it needs a validation set."""
    if config["early_stopping"] is None:
        return None
    if validation is None:
        raise ConfigError(f"early_stopping monitors {config['early_stopping']['monitor']}, but there is no "
                          f"validation set (validation_split is 0 and the data source has none)",
                          section="train", key="early_stopping")
    return EarlyStopping(config["early_stopping"])


@explains_missing_plugins("resume")
def train(network, *, overrides: dict | None = None, out=None, resume=None, force: bool = False,
          reporter: Reporter | None = None, registries: Registries | None = None, device: str = "cpu") -> TrainResult:
    """Train a network described by a JSON file path or a config dict.

    ``overrides``: dotted train keys (``{"epochs": 8, "optimizer.lr": 0.1}``); ``out``: the run folder
    (default: a new ``runs/<name>-<timestamp>``, or the resumed run's folder); a folder that already
    holds a run is refused unless ``force`` (its run files are then replaced). ``resume``: a run folder
    or a checkpoint file to continue from (``epochs`` is the total, so 4 done + ``epochs=8`` trains 4
    more); resuming from a checkpoint other than a run's latest.npz (best.npz, a copy) writes a new
    run folder and leaves that run as it is. ``device``: "cpu" or "cuda" (parameters, gradients,
    optimizer state and activations stay there; checkpoints are the same either way, so a run can
    resume on the other device).
    """
    registries = registries or default_registries()
    if isinstance(network, dict):
        config, base_dir, source = copy.deepcopy(network), Path("."), None
    else:
        source = Path(network)
        config, base_dir = read_network_file(source), source.parent  # read and parsed once
    try:
        section = config.get("train") if isinstance(config, dict) else None  # not an object: from_config says so
        train_config = resolve_train_config(section, overrides)
        net = Network.from_config(config, registry=registries.layers, seed=train_config["seed"])
        net.to(device)
        trainer = Trainer(net, train_config, base_dir=base_dir, registries=registries, reporter=reporter)
    except ConfigError as err:
        raise (err.in_file(str(source)) if source else err) from None
    start = resolve_checkpoint(resume) if resume is not None else None
    in_place = start is not None and start.name == LATEST and (out is None or _same_folder(out, start.parent))
    if start is not None and not in_place:
        if out is not None and _same_folder(out, start.parent):
            raise RunFolderError(f"cannot resume from {start} into its own run folder {start.parent}: that would "
                                 f"drop the run's later epochs; leave out --out (a new run folder is made) or "
                                 f"choose another")
        trainer.restore(load_checkpoint(start), str(start))
    with sigterm_as_interrupt():
        if in_place:
            folder = start.parent
        elif out is not None:
            folder = make_folder(out)
        else:
            folder = create_new_folder("runs", f"{folder_name(net.name)}-{datetime.now():%Y%m%d-%H%M%S}")
        trainer.run_dir = folder
        with RunLock(folder) as lock:
            if lock.stale_pid:
                trainer.reporter.note(f"took over {lock.path} from pid {lock.stale_pid}, which is no longer running")
            if start is not None and not in_place:
                trainer.reporter.note(f"resuming {start} (epoch {trainer.epoch}) in the run folder {folder}; "
                                      f"{start.parent} is left as it is")
            started = False
            try:
                try:
                    _prepare_folder(trainer, start, in_place, force)
                    started = True
                    write_text(folder / CONFIG, json.dumps({**config, "train": train_config}, indent=2) + "\n")
                    if trainer.epoch == train_config["epochs"]:
                        trainer.reporter.note(f"nothing to train: {start} already holds all {trainer.epoch} "
                                              f"epochs (--epochs is the total; pass a larger one to train on)")
                    trainer.fit()
                finally:
                    if started:
                        _draw_curves(trainer)
            except KeyboardInterrupt as exc:  # also one during the curves: the message says what is on disk
                raise interrupted(exc, folder, trainer.epoch, train_config["epochs"]) from None
            except WriteError as err:
                raise TrainingStopped(f"{err}; training stopped. {last_good(folder)}") from None
    return TrainResult(net, trainer.history, folder)


def _same_folder(a, b) -> bool:
    return Path(a).resolve() == Path(b).resolve()


def _prepare_folder(trainer: Trainer, start: Path | None, in_place: bool, force: bool) -> None:
    """With the lock held: check the folder, remove a killed run's temporary files, and bring
    latest.npz, best.npz and metrics.jsonl to the starting state."""
    folder = trainer.run_dir
    if in_place:
        remove_temp_files(folder)
        trainer.restore(load_checkpoint(start), str(start))  # read again under the lock
        trainer.history = metrics_up_to(read_metrics(folder / METRICS), trainer.epoch, trainer.last_record)
        write_metrics(folder / METRICS, trainer.history)
        return
    held = run_files(folder)
    if held and not force:
        raise RunFolderError(f"{folder} already holds a run ({', '.join(held)}); resume it with --resume {folder}, "
                             f"choose another --out, or pass --force to replace it")
    clear_run(folder)
    remove_temp_files(folder)
    best = None
    if start is not None:
        trainer.history = metrics_up_to(read_metrics(start.parent / METRICS), trainer.epoch, trainer.last_record)
        candidate = start.parent / BEST
        if start.name != BEST and candidate.is_file():
            best = load_checkpoint(candidate)
            if not isinstance(best.meta.get("epoch"), int) or best.meta["epoch"] > trainer.epoch:
                best = None  # a later epoch than the one resumed from: not this run's history
    trainer.write_start(best)


def _draw_curves(trainer: Trainer) -> None:
    """curves.png; one that cannot be drawn or written is a warning: the run itself is complete."""
    if not trainer.history:
        return
    try:
        drawn = write_curves(trainer.history, trainer.run_dir / CURVES, trainer.monitor)
    except WriteError as err:
        trainer.reporter.warning(f"{err} (the checkpoints and metrics are not affected)")
        return
    if not drawn:
        trainer.reporter.note(PLOT_HINT)
