"""Training, evaluation and prediction on the (simulated) GPU: the same numbers as on the CPU,
checkpoints that move between devices, the CLI's --device, and the one-line error without a GPU.

The network has no dropout: the GPU draws its masks with its own generator, so dropout runs
reproducibly on each device but not identically on both (tests/test_cuda_layers.py checks it).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cnnrun.cli.main import cli
from cnnrun.engine.checkpoint import load_checkpoint
from cnnrun.engine.inference import evaluate_checkpoint, predict_file
from cnnrun.engine.train import train

pytestmark = pytest.mark.cuda

NET = {
    "name": "mlp",
    "input": {"shape": [1, 2, 4]},
    "layers": [
        {"type": "flatten"},
        {"name": "fc1", "type": "linear", "out_features": 4},
        {"name": "bn", "type": "batchnorm"},
        {"type": "relu"},
        {"name": "fc2", "type": "linear", "out_features": 3},
        {"type": "softmax"},
    ],
    # 16 examples: 12 to train on in batches of 8 and 4, and 4 to validate
    "train": {"data": {"type": "npz", "path": "data.npz"}, "validation_split": 0.25, "batch_size": 8,
              "optimizer": {"type": "sgd", "lr": 0.2, "momentum": 0.9}, "epochs": 2},
}
METRICS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr")
# float32 through a few SGD steps: the devices round differently (e.g. fused multiply-adds)
TOL = dict(rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def net_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cuda_training")
    rng = np.random.default_rng(0)
    y = np.arange(16) % 3
    x = rng.standard_normal((16, 2, 4)) + 2 * y[:, None, None]  # learnable: the class shifts the mean
    np.savez(folder / "data.npz", x=x.astype(np.float32), y=y)
    (folder / "net.json").write_text(json.dumps(NET))
    return folder / "net.json"


@pytest.fixture(scope="module")
def runs(net_file, registries, tmp_path_factory):
    """CPU runs of 1 and 2 epochs, and a GPU run of 1 epoch (launched small, as in every CUDA test)."""
    folder = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CNNRUN_CUDA_BLOCK_SIZE", "32")
        patch.setenv("CNNRUN_CUDA_MAX_BLOCKS", "2")
        return {"cpu1": train(net_file, overrides={"epochs": 1}, out=folder / "cpu1", registries=registries),
                "cpu2": train(net_file, out=folder / "cpu2", registries=registries),
                "cuda1": train(net_file, overrides={"epochs": 1}, out=folder / "cuda1", registries=registries,
                               device="cuda")}


def assert_same_records(actual, expected):
    assert [r["epoch"] for r in actual] == [r["epoch"] for r in expected]
    for got, want in zip(actual, expected):
        for key in METRICS:
            np.testing.assert_allclose(got[key], want[key], **TOL, err_msg=key)


def assert_same_checkpoints(actual: Path, expected: Path):
    a, b = load_checkpoint(actual), load_checkpoint(expected)
    assert a.meta["epoch"] == b.meta["epoch"] and a.meta["optimizer"] == b.meta["optimizer"]
    for tree in ("params", "buffers"):
        for layer, arrays in getattr(b, tree).items():
            for name, value in arrays.items():
                got = getattr(a, tree)[layer][name]
                assert got.dtype == value.dtype
                np.testing.assert_allclose(got, value, **TOL, err_msg=f"{tree} {layer}.{name}")
    assert sorted(a.optimizer) == sorted(b.optimizer)
    for key, value in b.optimizer.items():
        np.testing.assert_allclose(a.optimizer[key], value, **TOL, err_msg=key)


def test_training_on_the_gpu_matches_the_cpu(runs):
    gpu, cpu = runs["cuda1"], runs["cpu1"]
    assert gpu.network.device == "cuda"
    assert all(not isinstance(a, np.ndarray) for p in gpu.network.params.values() for a in p.values())
    assert_same_records(gpu.metrics, cpu.metrics)
    assert_same_checkpoints(gpu.run_dir / "latest.npz", cpu.run_dir / "latest.npz")


@pytest.mark.parametrize("first, then", [("cuda1", "cpu"), ("cpu1", "cuda")])
def test_resume_on_the_other_device(runs, net_file, registries, tmp_path, monkeypatch, cuda_backend, first, then):
    """Checkpoints are device-independent: a run continues on the other device as if it had not moved."""
    resumed = train(net_file, resume=runs[first].run_dir / "latest.npz", out=tmp_path / "resumed",
                    registries=registries, device=then)
    assert resumed.network.device == then
    assert_same_records(resumed.metrics, runs["cpu2"].metrics)  # the new folder gets the run's epoch 1 too
    assert_same_checkpoints(tmp_path / "resumed" / "latest.npz", runs["cpu2"].run_dir / "latest.npz")


def test_eval_and_predict_on_the_gpu(runs, net_file, registries, tmp_path, cuda_backend):
    checkpoint = runs["cpu2"].run_dir / "latest.npz"
    reports = {device: evaluate_checkpoint(net_file, checkpoint, registries=registries, device=device)
               for device in ("cpu", "cuda")}
    assert reports["cuda"]["confusion_matrix"] == reports["cpu"]["confusion_matrix"]
    assert reports["cuda"]["examples"] == 4 and reports["cuda"]["accuracy"] == reports["cpu"]["accuracy"]
    np.testing.assert_allclose(reports["cuda"]["loss"], reports["cpu"]["loss"], **TOL)
    inputs = tmp_path / "inputs.npz"
    np.savez(inputs, x=np.random.default_rng(1).standard_normal((5, 2, 4)).astype(np.float32) + 1)
    for device in ("cpu", "cuda"):
        assert predict_file(net_file, checkpoint, inputs, tmp_path / f"{device}.npz", batch_size=3,
                            registries=registries, device=device) == 5
    cpu, gpu = (np.load(tmp_path / f"{device}.npz") for device in ("cpu", "cuda"))
    np.testing.assert_allclose(gpu["probabilities"], cpu["probabilities"], **TOL)
    np.testing.assert_array_equal(gpu["labels"], cpu["labels"])


def test_cli_eval_on_the_gpu(runs, net_file, cuda_backend):
    args = ["eval", str(net_file), "--checkpoint", str(runs["cpu2"].run_dir), "--format", "json"]
    on_cpu, on_gpu = (CliRunner().invoke(cli, [*args, "--device", device]) for device in ("cpu", "cuda"))
    assert on_gpu.exit_code == 0, on_gpu.output
    assert json.loads(on_gpu.output)["confusion_matrix"] == json.loads(on_cpu.output)["confusion_matrix"]
    described = CliRunner().invoke(cli, ["describe", str(net_file), "--device", "cuda"])
    assert described.exit_code == 0 and "fc2" in described.output


def test_no_gpu_is_one_line(net_file, tmp_path):
    """With the simulator off and no GPU visible, --device cuda is one line naming what is missing."""
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "0", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run([sys.executable, "-m", "cnnrun.cli", "train", str(net_file), "--device", "cuda",
                             "--out", str(tmp_path / "run")], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: no CUDA GPU or driver found ("), result.stderr
    assert lines[0].endswith("install an NVIDIA driver and `pip install 'cnnrun[cuda]'`, or use --device cpu")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", [["describe"], ["eval", "--checkpoint", "."],
                                     ["predict", "x.npz", "--checkpoint", ".", "--out", "y.npz"]])
def test_every_command_checks_the_device_first(net_file, tmp_path, monkeypatch, command):
    """describe, eval and predict stop at the same line before reading anything else (here numba-cuda
    is told that CUDA is unavailable; the subprocess above has it truly so)."""
    from cnnrun.engine import cuda as engine_cuda

    monkeypatch.setattr(engine_cuda, "_CHECKED", False)
    monkeypatch.setattr(engine_cuda.cuda, "is_available", lambda: False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.npz").write_bytes(b"")  # predict checks that INPUT exists before anything else
    result = CliRunner().invoke(cli, [command[0], str(net_file), *command[1:], "--device", "cuda"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: no CUDA GPU or driver found (") and result.output.count("\n") == 1
