"""train.early_stopping (where a run stops, best.npz, exact resume across the stopping point) and
metrics.csv beside metrics.jsonl."""

import copy
import csv
import json

import numpy as np
import pytest

from cnnrun.engine import ConfigError
from cnnrun.engine.checkpoint import load_checkpoint
from cnnrun.engine.early_stopping import EarlyStopping, check_early_stopping
from cnnrun.engine.plugins import Registries, make_plugin_manager
from cnnrun.engine.run_folder import read_metrics, write_metrics
from cnnrun.engine.train import resolve_train_config, train

LINEAR = {
    "name": "linear",
    "input": {"shape": [1, 8, 8]},
    "layers": [{"type": "flatten"}, {"name": "fc", "type": "linear", "out_features": 10}],
    "train": {"data": {"type": "digits"}, "optimizer": {"type": "sgd", "lr": 1.0, "momentum": 0.9},
              "epochs": 10, "batch_size": 128},
}
STOP = {"monitor": "val_accuracy", "patience": 2, "min_delta": 0.0}
TIMING = ("seconds", "samples_per_second")


@pytest.fixture(scope="module")
def registries():
    return Registries.from_plugin_manager(make_plugin_manager(load_entrypoints=False))


def with_stopping(stopping=STOP, **train_keys):
    config = copy.deepcopy(LINEAR)
    config["train"].update(early_stopping=stopping, **train_keys)
    return config


def without_timing(metrics):
    return [{k: v for k, v in m.items() if k not in TIMING} for m in metrics]


def reference_stop(values, patience, min_delta, lower_is_better):
    """The epoch (from 1) after which training stops, by the rule written out step by step."""
    best, waited = None, 0
    for epoch, value in enumerate(values, start=1):
        better = best is None or (value < best - min_delta if lower_is_better else value > best + min_delta)
        if better:
            best, waited = value, 0
        else:
            waited += 1
        if waited == patience:
            return epoch
    return None


@pytest.fixture(scope="module")
def plain(registries, tmp_path_factory):
    """The same network trained 10 epochs without early stopping."""
    return train(copy.deepcopy(LINEAR), out=tmp_path_factory.mktemp("plain") / "run", registries=registries)


def test_best_npz_follows_a_monitored_val_loss(tmp_path, registries, plain):
    values = [m["val_loss"] for m in plain.metrics]
    stopping = {"monitor": "val_loss", "patience": 3, "min_delta": 0.01}
    expected = reference_stop(values, 3, 0.01, True) or 10
    result = train(with_stopping(stopping), out=tmp_path / "run", registries=registries)
    assert len(result.metrics) == expected
    best_epoch = int(np.argmin(values[:expected])) + 1
    assert load_checkpoint(tmp_path / "run" / "best.npz").meta["epoch"] == best_epoch


def test_the_stopping_rule_on_a_written_out_series():
    series = [1.0, 0.9, 0.95, 0.89, 0.91, 0.92]
    for min_delta, stops_after in ((0.0, 6), (0.02, 4)):
        stopper = EarlyStopping(monitor="val_loss", patience=2, min_delta=min_delta)
        for epoch, value in enumerate(series, start=1):
            stopper.state = stopper.after({"epoch": epoch, "val_loss": value})
            if stopper.should_stop:
                break
        assert epoch == stops_after == reference_stop(series, 2, min_delta, True)
    accuracy = EarlyStopping(monitor="val_accuracy", patience=1, min_delta=0.0)
    accuracy.state = accuracy.after({"epoch": 1, "val_accuracy": 0.5})
    accuracy.state = accuracy.after({"epoch": 2, "val_accuracy": 0.5})  # equal is no improvement
    assert accuracy.should_stop and accuracy.state["best_epoch"] == 1


def test_early_stopping_stops_at_the_right_epoch_and_keeps_best(tmp_path, registries, plain):
    values = [m["val_accuracy"] for m in plain.metrics]
    expected = reference_stop(values, STOP["patience"], STOP["min_delta"], False)
    assert expected is not None and expected < 10  # the test needs a run that really stops early
    notes = []

    class Notes:
        def __getattr__(self, name):
            return notes.append if name == "note" else lambda *a, **k: None

    result = train(with_stopping(), out=tmp_path / "run", registries=registries, reporter=Notes())
    assert len(result.metrics) == expected
    assert without_timing(result.metrics) == without_timing(plain.metrics[:expected])
    assert [m["epoch"] for m in read_metrics(tmp_path / "run" / "metrics.jsonl")] == list(range(1, expected + 1))
    best_epoch = int(np.argmax(values[:expected])) + 1  # the first of the highest val_accuracy
    assert best_epoch < expected  # best.npz is not latest.npz
    assert load_checkpoint(tmp_path / "run" / "best.npz").meta["epoch"] == best_epoch
    latest = load_checkpoint(tmp_path / "run" / "latest.npz").meta
    assert latest["epoch"] == expected and latest["early_stopping"]["wait"] == STOP["patience"]
    assert any(n.startswith("early stopping: val_accuracy did not improve for 2 epoch(s)")
               and n.endswith(f"stopped after epoch {expected}") for n in notes), notes


def test_resume_across_the_stopping_point_agrees_with_a_straight_run(tmp_path, registries, plain):
    expected = reference_stop([m["val_accuracy"] for m in plain.metrics], STOP["patience"], STOP["min_delta"], False)
    straight = train(with_stopping(), out=tmp_path / "straight", registries=registries)
    first = train(with_stopping(), overrides={"epochs": expected - 1}, out=tmp_path / "split", registries=registries)
    assert len(first.metrics) == expected - 1
    resumed = train(with_stopping(), resume=tmp_path / "split", registries=registries)
    assert without_timing(resumed.metrics) == without_timing(straight.metrics)
    for name in ("latest.npz", "best.npz"):
        a, b = load_checkpoint(tmp_path / "straight" / name), load_checkpoint(tmp_path / "split" / name)
        assert a.meta["epoch"] == b.meta["epoch"] and a.meta["early_stopping"] == b.meta["early_stopping"]
        np.testing.assert_array_equal(a.params["fc"]["weight"], b.params["fc"]["weight"])
    # resuming the stopped run trains nothing more
    again = train(with_stopping(), resume=tmp_path / "straight", registries=registries)
    assert len(again.metrics) == expected


@pytest.mark.parametrize("stopping, message", [
    ("yes", r"train.early_stopping: must be null or an object"),
    ({"monitor": "val_loss"}, r"train.early_stopping: missing required key 'patience'"),
    ({"patience": 0}, r"train.early_stopping: patience must be >= 1; got patience=0"),
    ({"patience": 2, "monitor": "loss"}, r"monitor must be one of val_loss, val_accuracy; got monitor=\"loss\""),
    ({"patience": 2, "min_delta": -0.1}, r"early_stopping: min_delta must be in \[0.0, inf\); got min_delta=-0.1"),
    ({"patience": 2, "mode": "min"}, r"unknown key 'mode'; early_stopping accepts: monitor, patience, min_delta"),
])
def test_bad_early_stopping_is_one_clear_error(stopping, message):
    with pytest.raises(ConfigError, match=message):
        resolve_train_config({"early_stopping": stopping})


def test_defaults_and_no_validation_set(tmp_path, registries):
    assert check_early_stopping({"patience": 3}) == {"monitor": "val_loss", "patience": 3, "min_delta": 0.0}
    assert resolve_train_config(None)["early_stopping"] is None
    with pytest.raises(ConfigError, match=r"early_stopping monitors val_loss, but there is no validation set"):
        train(with_stopping({"patience": 2}, validation_split=0.0), out=tmp_path / "r", registries=registries)


# -- metrics.csv ---------------------------------------------------------------------------------

def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def assert_csv_matches_jsonl(folder):
    records = read_metrics(folder / "metrics.jsonl")
    header, *rows = read_csv(folder / "metrics.csv")
    assert header == list(records[0])
    assert len(rows) == len(records)
    for row, record in zip(rows, records):
        assert [None if cell == "" else json.loads(cell) for cell in row] == [record[k] for k in header]
    return header, rows


def test_metrics_csv_beside_metrics_jsonl_under_resume(tmp_path, registries):
    folder = tmp_path / "run"
    train(copy.deepcopy(LINEAR), overrides={"epochs": 2}, out=folder, registries=registries)
    header, rows = assert_csv_matches_jsonl(folder)
    assert header == ["epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds",
                      "samples_per_second"]
    assert [r[0] for r in rows] == ["1", "2"]
    # a kill after metrics of an epoch whose checkpoint never landed: resuming rewrites both files
    records = read_metrics(folder / "metrics.jsonl")
    write_metrics(folder / "metrics.jsonl", records + [{**records[-1], "epoch": 3, "train_loss": 9.0}])
    train(copy.deepcopy(LINEAR), overrides={"epochs": 3}, resume=folder, registries=registries)
    _, rows = assert_csv_matches_jsonl(folder)
    assert [r[0] for r in rows] == ["1", "2", "3"] and rows[2][1] != "9.0"


def test_metrics_csv_writes_null_as_an_empty_cell(tmp_path):
    write_metrics(tmp_path / "metrics.jsonl", [{"epoch": 1, "val_loss": None, "lr": float("nan"), "x": 0.5}])
    assert read_csv(tmp_path / "metrics.csv") == [["epoch", "val_loss", "lr", "x"], ["1", "", "", "0.5"]]


def test_early_stopping_added_on_resume_tracks_best_by_its_monitor(tmp_path, registries, plain):
    """best.npz of a run trained by val_accuracy, resumed with a val_loss monitor: scored by val_loss from then on."""
    folder = tmp_path / "run"
    train(copy.deepcopy(LINEAR), overrides={"epochs": 3}, out=folder, registries=registries)
    stopping = {"monitor": "val_loss", "patience": 5}
    train(with_stopping(stopping), overrides={"epochs": 5}, resume=folder, registries=registries)
    values = [m["val_loss"] for m in plain.metrics]
    best_epoch = 3 + int(np.argmin(values[3:5])) + 1 if min(values[3:5]) < values[2] else None
    assert best_epoch is not None  # the series improves after epoch 3, so best.npz must move
    best = load_checkpoint(folder / "best.npz").meta
    assert best["epoch"] == best_epoch and best["best"] == pytest.approx(-values[best_epoch - 1])
