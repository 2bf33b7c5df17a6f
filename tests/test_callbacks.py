"""Callbacks: the order they are called in, stopping, and what each built-in one does."""

import csv
import io
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import cnnrun.plugins
from cnnrun.engine import CnnrunError, Network
from cnnrun.engine import early_stopping
from cnnrun.engine.callbacks import (Callback, CSVLogger, EarlyStopping, LearningRateScheduler, ModelCheckpoint,
                                     ReduceLROnPlateau, TerminateOnNaN)
from cnnrun.engine.checkpoint import load_checkpoint, network_state
from cnnrun.engine.progress import TextReporter, summary_line
from cnnrun.engine.stopping import TrainingStopped

LINEAR = {"name": "linear", "input": {"shape": [1, 8, 8]},
          "layers": [{"type": "flatten"}, {"name": "fc", "type": "linear", "out_features": 10}]}
FAST = {"type": "sgd", "lr": 1.0, "momentum": 0.9}  # val_loss goes up and down: early stopping has work


@pytest.fixture(scope="module")
def digits():
    with np.load(Path(cnnrun.plugins.__file__).parent / "data" / "digits.npz") as data:
        return data["x"][:500, None].astype(np.float32) / 16, data["y"][:500].astype(np.int64)


@pytest.fixture
def net(registries):
    return Network.from_config(LINEAR, registry=registries.layers, seed=0)


def fit(net, digits, registries, **options):
    options = {"epochs": 2, "batch_size": 100, "optimizer": FAST, **options}
    return net.fit(*digits, registries=registries, **options)


class Recorder(Callback):
    def __init__(self, stop_at=None):
        self.events, self.stop_at = [], stop_at

    def on_train_begin(self, logs=None):
        self.events.append(("train_begin",))

    def on_epoch_begin(self, epoch, logs=None):
        self.events.append(("epoch_begin", epoch, self.trainer.lr))

    def on_batch_begin(self, batch, logs=None):
        self.events.append(("batch_begin", batch, logs["size"]))

    def on_batch_end(self, batch, logs=None):
        self.events.append(("batch_end", batch, logs["samples"]))
        if (self.trainer.epoch + 1, batch) == self.stop_at:
            self.trainer.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        self.events.append(("epoch_end", epoch, logs["epoch"]))
        if (epoch, None) == self.stop_at:
            self.trainer.stop_training, self.trainer.stop_reason = True, "enough"

    def on_train_end(self, logs=None):
        self.events.append(("train_end", len(self.trainer.history)))


def test_callbacks_fire_in_order(net, digits, registries):
    first, second = Recorder(), Recorder()
    fit(net, digits, registries, validation_split=0.2, batch_size=150, callbacks=[first, second])  # 400: 150+150+100
    batches = [e for b, size in ((1, 150), (2, 150), (3, 100))
               for e in (("batch_begin", b, size), ("batch_end", b, sum((150, 150, 100)[:b])))]
    epoch = lambda n: [("epoch_begin", n, 1.0), *batches, ("epoch_end", n, n)]
    assert first.events == [("train_begin",), *epoch(1), *epoch(2), ("train_end", 2)]
    assert second.events == first.events


@pytest.mark.parametrize("stop_at, epochs_recorded", [((1, None), 1), ((2, 2), 1), ((1, 1), 0)])
def test_a_callback_stops_training(net, digits, registries, stop_at, epochs_recorded):
    recorder = Recorder(stop_at)
    history = fit(net, digits, registries, epochs=3, callbacks=[recorder])
    assert history.epoch == list(range(1, epochs_recorded + 1))
    assert recorder.events[-1] == ("train_end", epochs_recorded)
    assert [e for e in recorder.events if e[0] == "batch_end"][-1][1] == (stop_at[1] or 4)  # 400 / 100 batches


def test_early_stopping_restores_the_best_weights(registries, digits):
    class Weights(Callback):
        def __init__(self):
            self.kept = []

        def on_epoch_end(self, epoch, logs=None):
            self.kept.append(network_state(self.trainer.net)[0]["fc"]["weight"].copy())

    runs = {}
    for restore in (False, True):
        net, weights = Network.from_config(LINEAR, registry=registries.layers), Weights()
        stopper = EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=restore)
        history = fit(net, digits, registries, epochs=10, callbacks=[stopper, weights])
        runs[restore] = (net.params["fc"]["weight"].copy(), weights.kept, history.history["val_loss"])
    final, kept, losses = runs[True]
    assert losses == runs[False][2]  # the same run; only the end differs
    best = int(np.argmin(losses))
    assert len(losses) < 10 and best < len(losses) - 1  # it stopped, and the best epoch is not the last
    np.testing.assert_array_equal(final, kept[best])
    np.testing.assert_array_equal(runs[False][0], kept[-1])
    assert early_stopping.EarlyStopping is EarlyStopping  # the train section's early stopping is this class
    again = fit(Network.from_config(LINEAR, registry=registries.layers), digits, registries, epochs=10,
                callbacks=[stopper])  # the callback of the last run: it starts counting afresh
    assert again.history["val_loss"] == losses


def test_model_checkpoint_writes_every_epoch_or_the_best(net, digits, registries, tmp_path):
    every = ModelCheckpoint(tmp_path / "every-{epoch}.npz")
    best = ModelCheckpoint(tmp_path / "best-{epoch}-{val_accuracy:.4f}.npz", monitor="val_accuracy",
                           save_best_only=True)
    history = fit(net, digits, registries, epochs=6, callbacks=[every, best])
    scores = history.history["val_accuracy"]
    improving = [e for e in range(1, 7) if scores[e - 1] > max(scores[:e - 1], default=-math.inf)]
    assert improving != list(range(1, 7))  # some epochs are not written
    assert sorted(p.name for p in tmp_path.glob("best-*")) == sorted(
        f"best-{e}-{scores[e - 1]:.4f}.npz" for e in improving)
    last = load_checkpoint(tmp_path / "every-6.npz")
    assert last.meta["epoch"] == 6 and last.meta["metrics"] == history.records[-1]
    np.testing.assert_array_equal(last.params["fc"]["weight"], net.params["fc"]["weight"])


def test_csv_logger_writes_the_records(net, digits, registries, tmp_path):
    history = fit(net, digits, registries, callbacks=[CSVLogger(tmp_path / "log.csv")])
    with open(tmp_path / "log.csv", newline="") as f:
        header, *rows = list(csv.reader(f))
    assert header == list(history.records[0])
    assert [[float(cell) for cell in row] for row in rows] == [[float(r[k]) for k in header] for r in history.records]


def test_learning_rate_scheduler_sets_each_epochs_rate(net, digits, registries):
    history = fit(net, digits, registries, epochs=3, optimizer={"type": "sgd", "lr": 0.3},
                  callbacks=[LearningRateScheduler(lambda epoch, lr: lr / epoch)])
    assert history.history["lr"] == pytest.approx([0.3, 0.15, 0.1])
    with pytest.raises(CnnrunError, match=r"schedule\(1, 0.3\) returned -1; expected a positive number"):
        fit(net, digits, registries, optimizer={"type": "sgd", "lr": 0.3},
            callbacks=[LearningRateScheduler(lambda epoch, lr: -1)])


def reference_plateau(values, lr, factor, patience, cooldown, min_delta, min_lr):
    """The learning rate after each epoch by Keras' ReduceLROnPlateau rule, written out (mode min)."""
    best, wait, cooling, rates = None, 0, 0, []
    for value in values:
        if cooling > 0:
            cooling, wait = cooling - 1, 0
        if best is None or value < best - min_delta:
            best, wait = value, 0
        elif cooling == 0:
            wait += 1
            if wait >= patience:
                lr, cooling, wait = max(lr * factor, min_lr), cooldown, 0
        rates.append(lr)
    return rates


def test_reduce_lr_on_plateau_follows_the_rule(rng):
    values = list(rng.random(40))
    reducer = ReduceLROnPlateau(factor=0.5, patience=2, cooldown=1, min_delta=0.01, min_lr=0.01)
    trainer = SimpleNamespace(optimizer=SimpleNamespace(lr=1.0))
    reducer.set_trainer(trainer)
    reducer.on_train_begin()
    rates = []
    for epoch, value in enumerate(values, 1):
        reducer.on_epoch_end(epoch, {"epoch": epoch, "val_loss": value})
        rates.append(trainer.optimizer.lr)
    assert rates == reference_plateau(values, 1.0, 0.5, 2, 1, 0.01, 0.01)
    assert len(set(rates)) > 3


def test_reduce_lr_on_plateau_lowers_the_rate_of_the_next_epochs(net, digits, registries):
    reducer = ReduceLROnPlateau(monitor="train_loss", mode="max", factor=0.5, patience=1)  # never improves after 1
    history = fit(net, digits, registries, epochs=3, optimizer={"type": "sgd", "lr": 0.2}, callbacks=[reducer])
    assert history.history["lr"] == [0.2, 0.2, 0.1]


def test_terminate_on_nan_stops_cleanly_and_keeps_the_last_good_weights(registries, digits):
    diverging = {"epochs": 3, "loss": "mse", "optimizer": {"type": "sgd", "lr": 1000}, "batch_size": 50}
    with pytest.raises(TrainingStopped, match=r"the loss became (nan|inf) at epoch 1, batch \d+ \(lr 1000\); "
                                              r"training stopped; try a lower learning rate"):
        fit(Network.from_config(LINEAR, registry=registries.layers), digits, registries, **diverging)
    net, notes = Network.from_config(LINEAR, registry=registries.layers), io.StringIO()
    history = fit(net, digits, registries, callbacks=[TerminateOnNaN(), TextReporter(notes)], **diverging)
    assert history.records == [] and np.isfinite(net.params["fc"]["weight"]).all()
    assert notes.getvalue().startswith("TerminateOnNaN: the loss became")
    assert notes.getvalue().endswith("; stopped after epoch 0\n")


def test_the_progress_display_is_a_callback(net, digits, registries):
    out = io.StringIO()
    history = fit(net, digits, registries, callbacks=[TextReporter(out)])
    lines = out.getvalue().splitlines()
    assert [line.split("  data wait")[0] for line in lines] == [summary_line(r, 2) for r in history.records]


@pytest.mark.parametrize("make, message", [
    (lambda: EarlyStopping(monitor="val_f1"), r"early stopping monitors 'val_f1', which epoch 1 does not measure"),
    (lambda: EarlyStopping(patience=0), r"patience must be >= 1; got patience=0"),
    (lambda: ModelCheckpoint("x.npz", mode="up"), r"mode must be one of \"auto\", \"min\", \"max\""),
    (lambda: ReduceLROnPlateau(factor=1.5), r"factor must be in \(0.0, 1.0\); got factor=1.5"),
    (lambda: LearningRateScheduler(0.1), r"LearningRateScheduler needs a function schedule\(epoch, lr\)"),
])
def test_bad_callback_settings_are_one_clear_error(net, digits, registries, make, message):
    with pytest.raises(CnnrunError, match=message):
        fit(net, digits, registries, epochs=1, callbacks=[make()])


def test_cnnrun_trains_with_the_same_callbacks(registries, tmp_path):
    """train() (cnnrun train) runs the given callbacks before it writes the run folder."""
    from cnnrun.engine.train import train

    recorder, log = Recorder(), tmp_path / "log.csv"
    config = {**LINEAR, "train": {"optimizer": {"type": "sgd", "lr": 0.1}, "epochs": 2, "batch_size": 500}}
    result = train(config, out=tmp_path / "run", registries=registries, callbacks=[recorder, CSVLogger(log)])
    assert [e[1] for e in recorder.events if e[0] == "epoch_end"] == [1, 2]
    assert log.read_text() == (result.run_dir / "metrics.csv").read_text()
