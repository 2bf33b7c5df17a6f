"""Run folders: safe names, exclusive creation, --force, the lock, metrics in step with checkpoints,
the NaN rule, drop_last, resuming a finished run or one past its epochs."""

import copy
import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cnnrun.cli.main import cli
from cnnrun.engine import ConfigError
from cnnrun.engine.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from cnnrun.engine.errors import CnnrunError
from cnnrun.engine.run_folder import (RunFolderError, create_new_folder, folder_name, metrics_line,
                                      metrics_up_to, read_metrics)
from cnnrun.engine.train import TrainingStopped, train
from helpers import without_timing

NET = {
    "name": "tiny",
    "input": {"shape": [1, 8, 8]},
    "layers": [{"type": "flatten"}, {"name": "fc1", "type": "linear", "out_features": 12},
               {"name": "bn", "type": "batchnorm"}, {"type": "relu"}, {"name": "fc2", "type": "linear", "out_features": 10}],
    "train": {"optimizer": {"type": "sgd", "lr": 0.1}, "epochs": 2, "batch_size": 256},
}
PLAIN = {**NET, "layers": NET["layers"][:2] + NET["layers"][3:]}  # without the batchnorm, which tames a huge lr


def run(registries, **kwargs):
    return train(copy.deepcopy(kwargs.pop("net", NET)), registries=registries, **kwargs)


def strict_json(line):
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")
    return json.loads(line, parse_constant=refuse)


# -- names and folders ------------------------------------------------------------------------------

@pytest.mark.parametrize("name, folder", [("lenet5", "lenet5"), ("../../x", "x"), ("/srv/x", "srv_x"),
                                          ("a b/c", "a_b_c"), ("..", "network"), ("", "network"),
                                          ("é" * 3, "network"), ("x" * 100, "x" * 64)])
def test_folder_name_is_safe(name, folder):
    assert folder_name(name) == folder


@pytest.mark.parametrize("name", ["../../escape", "/tmp/cnnrun-absolute-escape"])
def test_the_network_name_stays_inside_runs(tmp_path, monkeypatch, registries, name):
    monkeypatch.chdir(tmp_path)
    result = run(registries, net={**NET, "name": name}, overrides={"epochs": 1})
    assert result.run_dir.parent == Path("runs")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]
    assert not os.path.exists("/tmp/cnnrun-absolute-escape")
    assert json.loads((result.run_dir / "config.json").read_text())["name"] == name  # the real name is kept


def test_default_folders_started_in_the_same_second_differ(tmp_path, monkeypatch, registries):
    import cnnrun.engine.train as train_module

    class Frozen:
        @staticmethod
        def now():
            from datetime import datetime
            return datetime(2026, 12, 1, 12, 0, 0)

    monkeypatch.setattr(train_module, "datetime", Frozen)
    monkeypatch.chdir(tmp_path)
    first = run(registries, overrides={"epochs": 1})
    second = run(registries, overrides={"epochs": 1})
    assert str(first.run_dir) == os.path.join("runs", "tiny-20261201-120000")
    assert str(second.run_dir) == os.path.join("runs", "tiny-20261201-120000-2")
    for result in (first, second):
        assert [r["epoch"] for r in read_metrics(result.run_dir / "metrics.jsonl")] == [1]
    assert create_new_folder(tmp_path / "runs", "tiny-20261201-120000").name == "tiny-20261201-120000-3"


def test_an_existing_run_is_not_overwritten(tmp_path, registries):
    folder = tmp_path / "run"
    run(registries, out=folder, overrides={"epochs": 3})
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with pytest.raises(RunFolderError, match=rf"^{re.escape(str(folder))} already holds a run \(latest\.npz, best\.npz, "
                                             rf"metrics\.jsonl, config\.json\); resume it with --resume .*, choose "
                                             rf"another --out, or pass --force to replace it$"):
        run(registries, out=folder, overrides={"epochs": 1})
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    (folder / "notes.txt").write_text("mine")
    result = run(registries, out=folder, overrides={"epochs": 1}, force=True)
    assert [r["epoch"] for r in read_metrics(folder / "metrics.jsonl")] == [1] == [m["epoch"] for m in result.metrics]
    assert load_checkpoint(folder / "best.npz").meta["epoch"] == 1  # not the old run's best
    assert (folder / "notes.txt").read_text() == "mine"


def test_cli_force(tmp_path):
    net = tmp_path / "net.json"
    net.write_text(json.dumps(NET))
    out = tmp_path / "run"
    runner = CliRunner()
    assert runner.invoke(cli, ["train", str(net), "--out", str(out), "--epochs", "1", "-q"]).exit_code == 0
    refused = runner.invoke(cli, ["train", str(net), "--out", str(out), "--epochs", "1", "-q"])
    assert refused.exit_code == 1 and "already holds a run" in refused.output and "Traceback" not in refused.output
    assert runner.invoke(cli, ["train", str(net), "--out", str(out), "--epochs", "1", "-q", "--force"]).exit_code == 0


def test_a_stale_lock_is_taken_over(tmp_path, registries):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / ".lock").write_text("4194999\n")  # a killed run's lock file: nobody holds its flock
    notes = []

    class Notes:
        def epoch_start(self, *a): pass
        def batch_end(self, *a): pass
        def epoch_end(self, *a): pass
        def note(self, text): notes.append(text)
        def warning(self, text): notes.append(text)

    run(registries, out=folder, overrides={"epochs": 1}, reporter=Notes())
    assert any(re.search(r"took over .*\.lock from pid 4194999, which is no longer running", n) for n in notes)
    assert not (folder / ".lock").exists()  # released at the end


# -- metrics.jsonl and checkpoints agree ------------------------------------------------------------

def test_metrics_lost_by_a_kill_are_rebuilt_from_the_checkpoint(tmp_path, registries):
    """kill -9 after latest.npz of epoch 2 but before its metrics line, and a temporary file left."""
    straight = run(registries, out=tmp_path / "straight", overrides={"epochs": 3})
    folder = tmp_path / "run"
    run(registries, out=folder)
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    (folder / "metrics.jsonl").write_text(lines[0] + "\n" + lines[0] + "\n")  # epoch 2 lost, epoch 1 twice
    (folder / ".latest.npz.12345.tmp").write_bytes(b"\0" * 1000)
    (folder / ".best.npz.x8y_k2.tmp").write_bytes(b"\0" * 1000)
    (folder / "mine.tmp").write_text("not cnnrun's")
    result = run(registries, resume=folder, overrides={"epochs": 3})
    assert without_timing(read_metrics(folder / "metrics.jsonl")) == without_timing(straight.metrics)
    assert without_timing(result.metrics) == without_timing(straight.metrics)
    assert sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp")) == ["mine.tmp"]


def test_metrics_up_to():
    records = [{"epoch": 1, "a": 1}, {"epoch": 1, "a": 2}, {"epoch": 3}, {"epoch": 2}]
    assert metrics_up_to(records, 2, {"epoch": 2, "a": 9}) == [{"epoch": 1, "a": 1}, {"epoch": 2}]
    assert metrics_up_to(records[:2], 2, {"epoch": 2, "a": 9}) == [{"epoch": 1, "a": 1}, {"epoch": 2, "a": 9}]


def test_metrics_are_json_nan_is_null():
    line = metrics_line({"epoch": 1, "val_loss": float("nan"), "train_loss": float("inf"), "lr": 0.1})
    assert strict_json(line) == {"epoch": 1, "val_loss": None, "train_loss": None, "lr": 0.1}


def test_a_damaged_metrics_file_is_one_line(tmp_path, registries):
    folder = tmp_path / "run"
    run(registries, out=folder, overrides={"epochs": 1})
    (folder / "metrics.jsonl").write_text('{"epoch": 1}\n{"epo')
    with pytest.raises(RunFolderError, match=r"metrics\.jsonl line 2 is not a metrics record: '\{\"epo'"):
        run(registries, resume=folder)


# -- the NaN rule ---------------------------------------------------------------------------------

def test_parameters_that_blow_up_are_never_saved(tmp_path, registries):
    """One batch per epoch: the loss (computed before the update) is finite, the updated weights are
    not. latest.npz keeps epoch 0, bit for bit; no best.npz is written; metrics.jsonl stays JSON."""
    folder = tmp_path / "run"
    with pytest.raises(TrainingStopped, match=r"^epoch 1 left non-finite values in parameter fc1\.weight, .*"
                                              r"\(lr 1e\+39\); training stopped\. The last good checkpoint is "
                                              r".*latest\.npz \(epoch 0\); try a lower learning rate$"):
        run(registries, net=PLAIN, out=folder, overrides={"optimizer.lr": 1e39, "batch_size": 2000,
                                                           "validation_split": 0.0})
    kept = load_checkpoint(folder / "latest.npz")
    assert kept.meta["epoch"] == 0
    assert all(np.isfinite(a).all() for arrays in kept.params.values() for a in arrays.values())
    assert not (folder / "best.npz").exists()
    assert (folder / "metrics.jsonl").read_text() == ""


def test_a_non_finite_validation_loss_stops_before_the_checkpoint(tmp_path, registries):
    folder = tmp_path / "run"
    with pytest.raises(TrainingStopped, match=r"the validation loss became (nan|inf) after epoch 1 .*"
                                              r"latest\.npz \(epoch 0\)"):
        run(registries, net=PLAIN, out=folder, overrides={"optimizer.lr": 1e25, "batch_size": 2000})
    assert load_checkpoint(folder / "latest.npz").meta["epoch"] == 0
    for line in (folder / "metrics.jsonl").read_text().splitlines():
        strict_json(line)


def test_save_checkpoint_refuses_nan(tmp_path):
    good = Checkpoint({"fc": {"weight": np.ones(3, np.float32)}}, {}, {}, {"epoch": 1})
    save_checkpoint(tmp_path / "c.npz", good)
    before = (tmp_path / "c.npz").read_bytes()
    for bad, message in [
        (Checkpoint({"fc": {"weight": np.array([1, np.nan], np.float32)}}, {}, {}, {}), r"parameter fc\.weight"),
        (Checkpoint({}, {"bn": {"running_var": np.array([np.inf])}}, {}, {}), r"buffer bn\.running_var"),
        (Checkpoint({}, {}, {"fc/weight/m": np.array([np.nan])}, {}), r"optimizer state fc\.weight\.m"),
        (Checkpoint({}, {}, {}, {"best": math.nan}), r"its meta holds a NaN or Inf"),
    ]:
        with pytest.raises(CheckpointError, match=rf"refusing to write .*c\.npz: {message}"):
            save_checkpoint(tmp_path / "c.npz", bad)
    assert (tmp_path / "c.npz").read_bytes() == before


def test_nan_in_the_first_epoch_after_resuming_elsewhere_names_a_real_file(tmp_path, registries):
    a, b = tmp_path / "a", tmp_path / "b"
    run(registries, net=PLAIN, out=a, overrides={"epochs": 1})
    with pytest.raises(TrainingStopped, match=rf"The last good checkpoint is {re.escape(str(b))}/latest\.npz "
                                              rf"\(epoch 1\)"):
        run(registries, net=PLAIN, resume=a, out=b, overrides={"optimizer.lr": 1e25, "batch_size": 2000})
    assert load_checkpoint(b / "latest.npz").meta["epoch"] == 1


# -- epochs, drop_last ----------------------------------------------------------------------------

def test_a_checkpoint_past_epochs_is_refused_and_a_finished_run_says_so(tmp_path, registries):
    folder = tmp_path / "run"
    run(registries, out=folder)
    checkpoint = load_checkpoint(folder / "latest.npz")
    checkpoint.meta["epoch"] = 99
    save_checkpoint(tmp_path / "e99.npz", checkpoint)
    with pytest.raises(CnnrunError, match=r"e99\.npz holds epoch 99, past epochs 2 \(the total, not the number to "
                                          r"add\): nothing to train; pass --epochs 100 or more to train on"):
        run(registries, resume=tmp_path / "e99.npz", out=tmp_path / "again")
    assert not (tmp_path / "again").exists()
    net = tmp_path / "net.json"
    net.write_text(json.dumps(NET))
    result = CliRunner().invoke(cli, ["train", str(net), "--resume", str(tmp_path / "e99.npz")])
    assert result.exit_code == 1 and "past epochs 2" in result.output
    before = load_checkpoint(folder / "latest.npz")
    result = CliRunner().invoke(cli, ["train", str(net), "--resume", str(folder)])
    assert result.exit_code == 0, result.output
    assert re.search(r"nothing to train: .*latest\.npz already holds all 2 epochs", result.output)
    assert load_checkpoint(folder / "latest.npz").meta == before.meta


def test_batchnorm_after_linear_with_a_last_batch_of_one(tmp_path, registries):
    """1,438 training examples (1,797 less 359 for validation) in batches of 479: the last holds one."""
    net = tmp_path / "net.json"
    net.write_text(json.dumps(NET))
    with pytest.raises(ConfigError, match=r"net\.json: train: layer 'bn' \(batchnorm\) needs more than one value "
                                          r"per channel in training, and it sees one value per example while the "
                                          r"last batch of every epoch holds 1 example \(1438 training examples, "
                                          r"batch_size 479\): set \"drop_last\": true \(--set drop_last=true\)"):
        train(net, overrides={"batch_size": 479}, out=tmp_path / "run", registries=registries)
    assert not (tmp_path / "run").exists()  # caught before anything is written
    with pytest.raises(ConfigError, match=r"every batch holds 1 example \(batch_size 1"):
        train(net, overrides={"batch_size": 1}, out=tmp_path / "run", registries=registries)
    result = train(net, overrides={"batch_size": 479, "drop_last": True, "epochs": 1}, out=tmp_path / "run",
                   registries=registries)
    assert result.metrics[0]["train_accuracy"] * 958 == pytest.approx(round(result.metrics[0]["train_accuracy"] * 958))
    with pytest.raises(ConfigError, match=r"drop_last leaves no batch: the training split has 1438 examples, fewer "
                                          r"than batch_size 2000"):
        train(net, overrides={"batch_size": 2000, "drop_last": True}, out=tmp_path / "r2", registries=registries)
    with pytest.raises(ConfigError, match=r"drop_last must be true or false"):
        train(net, overrides={"drop_last": 1}, out=tmp_path / "r2", registries=registries)


def test_drop_last_drops_the_smaller_batch(tmp_path, registries):
    batches = []

    class Count:
        def epoch_start(self, epoch, epochs, n): batches.append(n)
        def batch_end(self, batch, samples, loss): self.samples = samples
        def epoch_end(self, *a): batches.append(self.samples)
        def note(self, text): pass

    run(registries, net=PLAIN, out=tmp_path / "a", overrides={"epochs": 1, "batch_size": 500}, reporter=Count())
    run(registries, net=PLAIN, out=tmp_path / "b", overrides={"epochs": 1, "batch_size": 500, "drop_last": True},
        reporter=Count())
    assert batches == [3, 1438, 2, 1000]
