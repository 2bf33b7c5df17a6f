"""The training loop: one :class:`Trainer` runs the epochs of ``net.fit(...)`` and of ``cnnrun train``
(which adds the run folder as a callback, :mod:`cnnrun.engine.train`)."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from .augment import augment_rng, training_augmenter
from .batch_loss import BatchLoss
from .callbacks import CallbackList, EarlyStopping
from .checkpoint import Checkpoint, check_resumable, network_state, non_finite_arrays, restore_network
from .data import batches, prepare_data
from .distributed import OneProcess
from .early_stopping import best_scored_by, score
from .errors import CnnrunError, ConfigError
from .memory import check_batch_fits
from .metrics import make_metrics, update
from .optim import make_optimizer
from .plugins import Registries, default_registries
from .prefetch import DataWait, prefetched
from .progress import Reporter, as_callback
from .provenance import layer_plugins
from .schedules import check_schedule
from .stopping import TrainingStopped, last_good


class Trainer:
    """Runs the epochs of one training run, calling its callbacks (:mod:`cnnrun.engine.callbacks`).

    ``config`` is a resolved train section (:func:`~cnnrun.engine.train_config.resolve_train_config`);
    the examples come from ``source`` (a :class:`~cnnrun.engine.data.DataSource`, e.g. arrays) or
    else ``config["data"]``. ``optimizer`` (an :class:`~cnnrun.engine.optim.Optimizer`) replaces
    ``config["optimizer"]``. The callbacks run in the order: the ``early_stopping`` of ``config``,
    ``callbacks``, ``reporter``. A batch whose loss is not finite is never applied: it raises
    :class:`TrainingStopped` unless a callback stops training (:class:`TerminateOnNaN`).

    State for callbacks: ``epoch`` (epochs done), ``history`` (their records), ``lr`` (this
    epoch's), ``stop_training``/``stop_reason``, ``best`` (the best score of ``monitor``, that a run
    folder's best.npz holds), ``data_wait`` (seconds the last epoch waited for its batches).
    """

    def __init__(self, net, config: dict, *, run_dir: Path | None = None, base_dir: Path = Path("."),
                 registries: Registries | None = None, reporter: Reporter | None = None, callbacks=(),
                 source=None, optimizer=None, comm=None):
        self.net = net
        self.comm = comm or OneProcess()  # the ranks of a data-parallel run (engine/distributed.py)
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
            source if source is not None else config["data"], input_shape=net.input_shape,
            num_classes=net.output_shape[0], validation_split=config["validation_split"], seed=config["seed"],
            registry=registries.data_sources, base_dir=base_dir)
        self._check_batches()
        self.comm.attach(self)
        self.optimizer = optimizer or make_optimizer(config["optimizer"], registries.optimizers)
        self.optimizer.to(net.backend)  # an optimizer without kernels on this device fails now
        self.loss = BatchLoss(net, config["loss"], registries.losses)
        self.metrics = make_metrics(config["metrics"], registries.metrics)
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
        self.lr: float | None = None
        self.batches = 0  # of the current epoch
        self.data_wait = 0.0
        self.stop_training, self.stop_reason = False, None
        self.callbacks = CallbackList([*([self.stopper] if self.stopper else []), *callbacks,
                                       as_callback(self.reporter)], self)

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
        self.optimizer.load_state_arrays(checkpoint.optimizer, meta["optimizer"]["step"], self.net.trainable_params)
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

    # -- the loop ------------------------------------------------------------------------------
    def fit(self) -> None:
        """Train until ``config["epochs"]`` epochs are done or a callback stops training. An epoch
        that leaves a NaN or Inf in the parameters, buffers or optimizer state raises
        :class:`TrainingStopped`; else its record joins ``history``, then the callbacks get it."""
        epochs, batch_size = self.config["epochs"], self.config["batch_size"]
        self.stop_training, self.stop_reason = False, None
        self.callbacks.call("on_train_begin", {})
        while self.epoch < epochs and not self.stop_training:
            record = self._epoch(self.epoch + 1, epochs, batch_size)
            if record is None:  # stopped during the epoch
                break
            self.epoch += 1
            bad = non_finite_arrays(self.checkpoint(record))
            if bad:
                raise self.stopped(f"epoch {record['epoch']} left non-finite values in {', '.join(bad[:3])} "
                                   f"(lr {record['lr']:g})")
            self.last_record = record
            self.history.append(record)
            self.callbacks.call("on_epoch_end", self.epoch, record)
        if self.stop_training and self.stop_reason:
            self.reporter.note(f"{self.stop_reason}; stopped after epoch {self.epoch}")
        self.callbacks.call("on_train_end", {})

    def _epoch(self, epoch: int, epochs: int, batch_size: int) -> dict | None:
        """One epoch's training steps and validation: its record, or None when stopped during it."""
        self.lr = self.schedule.lr(epoch, self.optimizer.lr, epochs)
        drop_last = self.config["drop_last"]
        self.batches = (len(self.train_data) // batch_size if drop_last
                        else math.ceil(len(self.train_data) / batch_size))
        self.callbacks.call("on_epoch_begin", epoch, {})
        self.comm.seed_streams(self, epoch)
        lr = self.lr
        started = time.perf_counter()
        total_loss = correct = seen = 0.0
        for metric in self.metrics:
            metric.reset()
        wait = DataWait()
        shards = batches(self.train_data, batch_size, self.shuffle, shard=self.comm.shard)
        for index, (x, y) in enumerate(prefetched(shards, wait=wait), 1):
            if index > self.batches:
                break  # drop_last: the smaller last batch
            self.callbacks.call("on_batch_begin", index, {"size": len(y)})
            x = self.augmenter(x, self.augment_rng)
            output = self.net.forward(x, training=True)
            loss, batch_correct, grad, _ = self.loss(output, y)
            finite = math.isfinite(loss)
            if finite:
                update(self.metrics, self.net, output, y)
                global_batch = min(batch_size, len(self.train_data) - (index - 1) * batch_size)
                grad = self.comm.weight_gradient(grad, len(y), global_batch)
                self.loss.backward(self.net, grad, input_gradient=False)  # skips a frozen backbone
                self.comm.sum_gradients(self.net)
                self.optimizer.apply(self.net.trainable_params, self.net.grads, lr)  # frozen layers stay
                total_loss += loss * len(y)
                correct += batch_correct
                seen += len(y)
            self.callbacks.call("on_batch_end", index, {"batch_loss": loss, "loss": total_loss / seen if seen else loss,
                                                        "samples": int(seen)})
            if not finite and not self.stop_training:
                raise self.stopped(f"the loss became {loss} at epoch {epoch}, batch {index} (lr {lr:g})")
            if self.stop_training:
                return None
        seconds = time.perf_counter() - started
        self.data_wait = wait.seconds  # for the reporter: the summary shows the share
        total_loss, correct, seen = self.comm.epoch_totals(self.net, total_loss, correct, seen)
        record = {"epoch": epoch, "train_loss": total_loss / seen, "train_accuracy": correct / seen,
                  **{f"train_{m.name}": m.result() for m in self.metrics}}
        if self.validation is not None:
            measured = self.comm.evaluate(self.net, self.loss, self.validation, batch_size, self.metrics)
            if not math.isfinite(measured["loss"]):
                raise self.stopped(f"the validation loss became {measured['loss']} after epoch {epoch} (lr {lr:g})")
        else:
            measured = dict.fromkeys(["loss", "accuracy", *(m.name for m in self.metrics)])
        record.update({f"val_{k}": v for k, v in measured.items()})
        record.update(lr=lr, seconds=seconds, samples_per_second=seen / seconds if seconds > 0 else None)
        return record

    def stopped(self, reason: str) -> TrainingStopped:
        """The error that ends a diverged run, saying where its last good checkpoint is (a run folder's)."""
        where = f". {last_good(self.run_dir)};" if self.run_dir is not None else ";"
        return TrainingStopped(f"{reason}; training stopped{where} try a lower learning rate")


def early_stopper(config: dict, validation) -> EarlyStopping | None:
    """The run's :class:`EarlyStopping` (None without ``early_stopping``); it needs a validation set."""
    if config["early_stopping"] is None:
        return None
    if validation is None:
        raise ConfigError(f"early_stopping monitors {config['early_stopping']['monitor']}, but there is no "
                          f"validation set (validation_split is 0 and the data source has none)",
                          section="train", key="early_stopping")
    return EarlyStopping(**config["early_stopping"])
