"""``cnnrun train``, ``eval`` and ``predict`` on the command line, incl. Ctrl-C and resume."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import cnnrun.plugins
from cnnrun.cli.main import cli

TINY = {
    "name": "tiny",
    "input": {"shape": [1, 8, 8]},
    "layers": [
        {"name": "conv", "type": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1},
        {"type": "relu"},
        {"type": "maxpool2d", "kernel_size": 2},
        {"type": "flatten"},
        {"name": "fc", "type": "linear", "out_features": 10},
        {"type": "softmax"},
    ],
    "train": {"data": {"type": "digits", "normalize": True}, "optimizer": {"type": "adam", "lr": 0.01},
              "epochs": 2, "batch_size": 64},
}


@pytest.fixture
def net_file(tmp_path):
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(TINY))
    return path


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_train_with_overrides_writes_the_run_folder(tmp_path, net_file):
    out = tmp_path / "run"
    result = run("train", net_file, "--epochs", 3, "--batch-size", 32, "--lr", 0.005, "--seed", 2,
                 "--set", "optimizer.betas=[0.8, 0.99]", "--set", "validation_split=0.25", "--out", out)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    epoch_lines = [line for line in lines if line.startswith("epoch ")]
    assert len(epoch_lines) == 3 and "\r" not in result.output  # not a terminal: summary lines only
    assert epoch_lines[0].startswith("epoch 1/3  train loss ") and "val loss" in epoch_lines[0]
    assert lines[-1] == f"run folder: {out}" and lines[-2].startswith("best validation accuracy")
    config = json.loads((out / "config.json").read_text())["train"]
    assert config["epochs"] == 3 and config["batch_size"] == 32 and config["seed"] == 2
    assert config["optimizer"] == {"type": "adam", "lr": 0.005, "betas": [0.8, 0.99]}
    assert config["validation_split"] == 0.25
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert records[-1]["val_accuracy"] > 0.6


def test_eval_and_predict(tmp_path, net_file):
    out = tmp_path / "run"
    assert run("train", net_file, "--out", out, "-q").exit_code == 0
    result = run("eval", net_file, "--checkpoint", out)
    assert result.exit_code == 0, result.output
    used, head, *tables = result.output.splitlines()
    assert used == f"checkpoint {out / 'best.npz'} (epoch 2)"  # a run folder: its best.npz
    assert head.startswith("359 examples  loss ") and "top-5 accuracy" in head  # round(0.2 * 1,797), stratified
    per_class, matrix = tables[:11], tables[11:]
    assert per_class[0].split() == ["class", "examples", "accuracy"] and per_class[1].split()[0] == "0"
    assert matrix[0].split()[0] == "true\\pred" and len(matrix) == 11
    report = json.loads(run("eval", net_file, "--checkpoint", out / "best.npz", "--format", "json").output)
    confusion = np.array(report["confusion_matrix"])
    assert confusion.sum() == 359 and np.trace(confusion) / 359 == pytest.approx(report["accuracy"])

    data = np.load(Path(cnnrun.plugins.__file__).parent / "data" / "digits.npz")
    x, y = data["x"][:50].astype(np.float32) / 16, data["y"][:50]
    np.savez(tmp_path / "test.npz", x=x, y=y)
    report = json.loads(run("eval", net_file, "--checkpoint", out, "--data", tmp_path / "test.npz",
                            "--format", "json").output)
    assert report["examples"] == 50
    result = run("predict", net_file, tmp_path / "test.npz", "--checkpoint", out, "--out", tmp_path / "pred.npz")
    assert result.exit_code == 0 and "50 examples" in result.output
    pred = np.load(tmp_path / "pred.npz", allow_pickle=False)
    assert pred["probabilities"].shape == (50, 10) and pred["labels"].shape == (50,)
    np.testing.assert_allclose(pred["probabilities"].sum(axis=1), 1, rtol=1e-5)
    assert np.mean(pred["labels"] == y) == pytest.approx(report["accuracy"])


@pytest.mark.parametrize("args, message", [
    (["--set", "optimizer.momentun=0.9"], r"train.optimizer \(adam\): unknown key 'momentun'"),
    (["--set", "epochs"], r"expected KEY=VALUE"),
    (["--set", "data.type=mnist"], r"unknown data source 'mnist'"),
    (["--resume", "."], r"no latest.npz in that folder"),
])
def test_train_errors_are_one_line(tmp_path, net_file, args, message):
    result = CliRunner().invoke(cli, ["train", str(net_file), "--out", str(tmp_path / "r"), *args])
    assert result.exit_code in (1, 2), result.output
    assert "Traceback" not in result.output
    assert re.search(message, result.output), result.output


def test_eval_with_a_checkpoint_of_another_network(tmp_path, net_file):
    out = tmp_path / "run"
    assert run("train", net_file, "--out", out, "--epochs", 1, "-q").exit_code == 0
    other = dict(TINY, layers=[dict(TINY["layers"][0], out_channels=5), *TINY["layers"][1:]])
    other_file = tmp_path / "other.json"
    other_file.write_text(json.dumps(other))
    result = CliRunner().invoke(cli, ["eval", str(other_file), "--checkpoint", str(out)])
    assert result.exit_code == 1
    assert "does not fit network 'tiny': parameter conv.bias has shape (4,) in the checkpoint, (5,) in the network" \
        in result.output


def test_ctrl_c_saves_and_says_how_to_resume(tmp_path, net_file):
    """SIGINT during training exits cleanly (status 130) with a checkpoint and the resume command."""
    slow = dict(TINY, train=dict(TINY["train"], epochs=200, batch_size=8))
    net_file.write_text(json.dumps(slow))
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "cnnrun.cli", "train", str(net_file), "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    first = proc.stdout.readline()  # the first epoch's summary line: training is under way
    assert re.match(r"epoch +1/200  train loss", first), first + proc.stderr.read()
    assert time.monotonic() < deadline
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert re.search(r"interrupted during epoch \d+ \(SIGINT\); the checkpoint .*latest\.npz holds epoch \d+\.", stderr)
    assert f"Resume with: cnnrun train {net_file} --resume {out} --epochs 200\n" in stderr
    result = run("train", net_file, "--resume", out, "--epochs", 2, "-q")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]


def test_the_resume_command_repeats_every_setting():
    from types import SimpleNamespace

    from cnnrun.cli.train import resume_command

    stop = SimpleNamespace(run_dir=Path("runs/my run"), epochs=10)
    command = resume_command("net.json", stop, 32, 0.05, 3, ("optimizer.momentum=0.5", "data.resize=[16, 16]"), "cuda")
    assert command == ("cnnrun train net.json --resume 'runs/my run' --epochs 10 --batch-size 32 --lr 0.05 --seed 3 "
                       "--set optimizer.momentum=0.5 --set 'data.resize=[16, 16]' --device cuda")
    assert resume_command("n.json", stop, None, None, None, (), "cpu") == "cnnrun train n.json --resume 'runs/my run' --epochs 10"
