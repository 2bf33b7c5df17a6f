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

from .augment import augment_rng, make_augmenter, training_augmenter
from .checkpoint import Checkpoint, CheckpointError, load_checkpoint, network_state, restore_network, save_checkpoint
from .data import batches, prepare_data
from .errors import CnnrunError, ConfigError, did_you_mean
from .inference import LATEST, BatchLoss, evaluate, resolve_checkpoint
from .losses import LOSSES
from .network import Network
from .optim import make_optimizer
from .options import choice_option, float_option, int_option, show
from .plot import PLOT_HINT, write_curves
from .plugins import Registries, default_registries
from .prefetch import prefetched
from .progress import Reporter
from .provenance import explains_missing_plugins, layer_plugins
from .schedules import check_schedule, lr_at

TRAIN_DEFAULTS = {
    "data": {"type": "digits"},
    "validation_split": 0.2,
    "loss": "cross_entropy",
    "optimizer": {"type": "sgd", "lr": 0.01},
    "schedule": {"type": "constant"},
    "epochs": 10,
    "batch_size": 64,
    "seed": 0,
    "augment": [],
}
BEST = "best.npz"


class TrainingStopped(CnnrunError):
    """Training ended early because the loss stopped being finite; the message says where the last
    good checkpoint is."""


class TrainingInterrupted(TrainingStopped):
    """Training was interrupted (Ctrl-C); the message says how to resume."""


def resolve_train_config(section: dict | None, overrides: dict | None = None) -> dict:
    """The ``train`` section with defaults filled in and ``overrides`` applied, checked.

    ``overrides`` maps dotted keys to values: ``{"epochs": 8, "optimizer.lr": 0.1}``.
    """
    if section is not None and not isinstance(section, dict):
        raise ConfigError(f"the train section must be a JSON object; got {show(section)[:60]}", section="train")
    config = copy.deepcopy(TRAIN_DEFAULTS)
    for key, value in (section or {}).items():
        if key not in TRAIN_DEFAULTS:
            raise ConfigError(f"unknown key '{key}'{did_you_mean(key, TRAIN_DEFAULTS)}; train accepts: "
                              f"{', '.join(TRAIN_DEFAULTS)}", section="train", key=key)
        config[key] = copy.deepcopy(value)
    for dotted, value in (overrides or {}).items():
        _set_dotted(config, dotted, value)
    for key in ("data", "optimizer", "schedule"):
        if not isinstance(config[key], dict):
            raise ConfigError(f"{key} must be a JSON object; got {key}={show(config[key])}", section="train", key=key)
    try:
        config["validation_split"] = float_option(config["validation_split"], "validation_split", low=0.0,
                                                  high=1.0, high_open=True)
        config["epochs"] = int_option(config["epochs"], "epochs")
        config["batch_size"] = int_option(config["batch_size"], "batch_size")
        config["seed"] = int_option(config["seed"], "seed", minimum=0)
        config["loss"] = choice_option(config["loss"], "loss", list(LOSSES))
    except ConfigError as err:
        err.section = "train"
        raise
    check_schedule(config["schedule"], config["epochs"])
    make_augmenter(config["augment"])
    return config


def _set_dotted(config: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    if not last or parents[:1] and parents[0] not in ("data", "optimizer", "schedule") or \
            not parents and last not in TRAIN_DEFAULTS:
        raise ConfigError(f"cannot override '{dotted}': use a train key ({', '.join(TRAIN_DEFAULTS)}) "
                          f"or a key inside data, optimizer or schedule, e.g. optimizer.lr", section="train")
    target = config
    for key in parents:
        target = target.setdefault(key, {})
        if not isinstance(target, dict):
            raise ConfigError(f"cannot override '{dotted}': {key} is not an object", section="train")
    target[last] = value


@dataclass
class TrainResult:
    """What a training run leaves: the trained network, one metrics record per epoch, the run folder."""

    network: Network
    metrics: list[dict] = field(default_factory=list)
    run_dir: Path | None = None


class Trainer:
    """Runs the epochs of one training run and writes its run folder.

    The run folder holds ``config.json`` (the network with its resolved train section),
    ``metrics.jsonl``, ``latest.npz`` and ``best.npz`` (highest validation accuracy, or lowest training
    loss without validation) and ``curves.png`` when matplotlib is installed.
    """

    def __init__(self, net: Network, config: dict, *, run_dir: Path, base_dir: Path = Path("."),
                 registries: Registries | None = None, reporter: Reporter | None = None):
        self.net = net
        self.config = config
        self.run_dir = Path(run_dir)
        self.reporter = reporter or Reporter()
        registries = registries or default_registries()
        self.layer_plugins = layer_plugins(net, registries.layers)  # recorded in every checkpoint
        if len(net.output_shape) != 1:
            raise ConfigError(f"training needs a network output of shape (classes,); the last layer gives "
                              f"{net.output_shape} (add flatten and linear layers)", section="train")
        self.train_data, self.validation, self.normalization = prepare_data(
            config["data"], input_shape=net.input_shape, num_classes=net.output_shape[0],
            validation_split=config["validation_split"], seed=config["seed"],
            registry=registries.data_sources, base_dir=base_dir)
        self.optimizer = make_optimizer(config["optimizer"], registries.optimizers)
        self.optimizer.implementation(net.device)  # an optimizer without this device fails now
        self.loss = BatchLoss(net, config["loss"])
        check_schedule(config["schedule"], config["epochs"], base_lr=self.optimizer.lr)
        self.shuffle = np.random.default_rng(config["seed"])
        self.augmenter, self.normalization, self.validation = training_augmenter(
            config["augment"], net.input_shape, self.normalization, self.validation)
        self.augment_rng = augment_rng(config["seed"])
        self.epoch = 0
        self.best: float | None = None

    # -- state ---------------------------------------------------------------------------------
    def checkpoint(self, metrics: dict | None) -> Checkpoint:
        """The whole training state after ``self.epoch`` epochs."""
        params, buffers = network_state(self.net)
        meta = {"network": self.net.name, "epoch": self.epoch,
                "optimizer": {"type": self.config["optimizer"]["type"], "step": self.optimizer.step},
                "rng": {"shuffle": self.shuffle.bit_generator.state, "augment": self.augment_rng.bit_generator.state,
                        "layers": {n: c.rng.bit_generator.state for n, c in self.net.contexts.items()}},
                "normalization": self.normalization, "best": self.best, "metrics": metrics}
        meta["plugins"] = self.layer_plugins
        return Checkpoint(params, buffers, self.optimizer.state_arrays(), meta)

    def restore(self, checkpoint: Checkpoint, source: str) -> None:
        """Continue from ``checkpoint`` exactly where it stopped."""
        meta = checkpoint.meta
        if not {"optimizer", "rng", "epoch"} <= set(meta):
            raise CheckpointError(f"{source} is not a training checkpoint (no optimizer state or position; "
                                  f"e.g. the output of cnnrun fuse): it can be evaluated, not resumed")
        restore_network(self.net, checkpoint, source)
        if meta["optimizer"]["type"] != self.config["optimizer"]["type"]:
            raise CnnrunError(f"{source} was trained with optimizer '{meta['optimizer']['type']}', "
                              f"not '{self.config['optimizer']['type']}'")
        self.optimizer.load_state_arrays(checkpoint.optimizer, meta["optimizer"]["step"], self.net.params)
        self.shuffle.bit_generator.state = meta["rng"]["shuffle"]
        self.augment_rng.bit_generator.state = meta["rng"].get("augment", self.augment_rng.bit_generator.state)
        for name, state in meta["rng"]["layers"].items():
            self.net.contexts[name].rng.bit_generator.state = state
        self.epoch, self.best = meta["epoch"], meta["best"]

    # -- the loop ------------------------------------------------------------------------------
    def fit(self) -> list[dict]:
        """Train until ``config["epochs"]`` epochs are done; returns this run's metrics records."""
        epochs, batch_size = self.config["epochs"], self.config["batch_size"]
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.epoch == 0:
            save_checkpoint(self.run_dir / LATEST, self.checkpoint(None))
        records = []
        try:
            while self.epoch < epochs:
                record = self._epoch(self.epoch + 1, epochs, batch_size)
                self.epoch += 1
                records.append(record)
                self._save(record)
                self.reporter.epoch_end(record)
        except KeyboardInterrupt:
            raise TrainingInterrupted(f"interrupted during epoch {self.epoch + 1}; the checkpoint "
                                  f"{self.run_dir / LATEST} holds epoch {self.epoch}. "
                                  f"Resume with --resume {self.run_dir}") from None
        return records

    def _epoch(self, epoch: int, epochs: int, batch_size: int) -> dict:
        lr = lr_at(epoch, self.optimizer.lr, self.config["schedule"], epochs)
        n_batches = math.ceil(len(self.train_data) / batch_size)
        self.reporter.epoch_start(epoch, epochs, n_batches)
        started = time.perf_counter()
        total_loss = correct = seen = 0.0
        for index, (x, y) in enumerate(prefetched(batches(self.train_data, batch_size, self.shuffle)), start=1):
            x = self.augmenter(x, self.augment_rng)
            output = self.net.forward(x, training=True)
            loss, batch_correct, grad, _ = self.loss(output, y)
            if not math.isfinite(loss):
                raise TrainingStopped(
                    f"the loss became {loss} at epoch {epoch}, batch {index} (lr {lr:g}); training stopped. "
                    f"The last good checkpoint is {self.run_dir / LATEST} (epoch {self.epoch}); "
                    f"try a lower learning rate")
            self.net.backward(grad, skip_last=self.loss.skip_last)
            self.optimizer.apply(self.net.params, self.net.grads, lr)
            total_loss += loss * len(y)
            correct += batch_correct
            seen += len(y)
            self.reporter.batch_end(index, int(seen), total_loss / seen)
        seconds = time.perf_counter() - started
        val_loss, val_accuracy = (evaluate(self.net, self.validation, self.config["loss"], batch_size)[:2]
                                  if self.validation is not None else (None, None))
        return {"epoch": epoch, "train_loss": total_loss / seen, "train_accuracy": correct / seen,
                "val_loss": val_loss, "val_accuracy": val_accuracy, "lr": lr, "seconds": seconds,
                "samples_per_second": seen / seconds if seconds > 0 else None}

    def _save(self, record: dict) -> None:
        score = record["val_accuracy"] if record["val_accuracy"] is not None else -record["train_loss"]
        improved = self.best is None or score > self.best
        if improved:
            self.best = score
        checkpoint = self.checkpoint(record)
        save_checkpoint(self.run_dir / LATEST, checkpoint)
        if improved:
            save_checkpoint(self.run_dir / BEST, checkpoint)
        with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


@explains_missing_plugins("resume")
def train(network, *, overrides: dict | None = None, out=None, resume=None, reporter: Reporter | None = None,
          registries: Registries | None = None, device: str = "cpu") -> TrainResult:
    """Train a network described by a JSON file path or a config dict.

    ``overrides``: dotted train keys (``{"epochs": 8, "optimizer.lr": 0.1}``); ``out``: the run folder
    (default ``runs/<name>-<timestamp>``, or the resumed run's folder); ``resume``: a run folder or a
    checkpoint file to continue from (``epochs`` is the total, so 4 done + ``epochs=8`` trains 4 more);
    ``device``: "cpu" or "cuda" (parameters, gradients, optimizer state and activations stay there;
    checkpoints are the same either way, so a run can resume on the other device).
    """
    registries = registries or default_registries()
    if isinstance(network, dict):
        config, base_dir, source = copy.deepcopy(network), Path("."), None
        net = Network.from_config(config, registry=registries.layers)
    else:
        source = Path(network)
        net = Network.from_json(source, registry=registries.layers)
        config, base_dir = json.loads(source.read_text(encoding="utf-8")), source.parent
    try:
        train_config = resolve_train_config(config.get("train"), overrides)
    except ConfigError as err:
        raise (err.in_file(str(source)) if source else err) from None
    net.initialize(train_config["seed"])
    net.to(device)
    checkpoint_path = resolve_checkpoint(resume) if resume is not None else None
    if out is None:
        out = checkpoint_path.parent if checkpoint_path else \
            Path("runs") / f"{net.name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    try:
        trainer = Trainer(net, train_config, run_dir=Path(out), base_dir=base_dir, registries=registries,
                          reporter=reporter)
    except ConfigError as err:
        raise (err.in_file(str(source)) if source else err) from None
    if checkpoint_path:
        trainer.restore(load_checkpoint(checkpoint_path), str(checkpoint_path))
    trainer.run_dir.mkdir(parents=True, exist_ok=True)
    _keep_metrics_up_to(trainer.run_dir / "metrics.jsonl", trainer.epoch)
    (trainer.run_dir / "config.json").write_text(json.dumps({**config, "train": train_config}, indent=2) + "\n")
    try:
        trainer.fit()
    finally:
        metrics = _read_metrics(trainer.run_dir / "metrics.jsonl")
        if metrics and not write_curves(metrics, trainer.run_dir / "curves.png"):
            trainer.reporter.note(PLOT_HINT)
    return TrainResult(net, metrics, trainer.run_dir)


def _keep_metrics_up_to(path: Path, epoch: int) -> None:
    """Drop records after ``epoch`` (a resumed run rewrites them)."""
    if path.exists():
        kept = [m for m in _read_metrics(path) if m["epoch"] <= epoch]
        path.write_text("".join(json.dumps(m) + "\n" for m in kept))


def _read_metrics(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
