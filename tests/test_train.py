"""Training from Python: the train section, the loop, metrics, resume, divergence, learning a kernel."""

import copy
import json

import numpy as np
import pytest

from cnnrun.engine import ConfigError, Network
from cnnrun.engine.checkpoint import load_checkpoint
from cnnrun.engine.losses import mse
from cnnrun.engine.optim import make_optimizer
from cnnrun.engine.run_folder import read_metrics
from cnnrun.engine.train import TrainingStopped, train
from cnnrun.engine.train_config import TRAIN_DEFAULTS, resolve_train_config
from helpers import without_timing

TINY = {
    "name": "tiny",
    "input": {"shape": [1, 8, 8]},
    "layers": [
        {"name": "conv", "type": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1},
        {"name": "bn", "type": "batchnorm"},
        {"type": "relu"},
        {"type": "maxpool2d", "kernel_size": 2},
        {"type": "flatten"},
        {"type": "dropout", "p": 0.2},
        {"name": "fc", "type": "linear", "out_features": 10},
    ],
    "train": {"data": {"type": "digits"}, "optimizer": {"type": "sgd", "lr": 0.05, "momentum": 0.9},
              "schedule": {"type": "step", "step_size": 1, "gamma": 0.7}, "epochs": 2, "batch_size": 128},
}


# -- the train section --------------------------------------------------------------------------------

def test_defaults_and_overrides():
    config = resolve_train_config({"epochs": 3}, {"optimizer.lr": 0.5, "batch_size": 16, "data.resize": [9, 9]})
    assert config["epochs"] == 3 and config["batch_size"] == 16
    assert config["optimizer"] == {"type": "sgd", "lr": 0.5}
    assert config["data"] == {"type": "digits", "resize": [9, 9]}
    assert resolve_train_config(None) == TRAIN_DEFAULTS


def test_loss_options_can_be_overridden():
    assert resolve_train_config({"loss": "cross_entropy"}, {"loss.label_smoothing": 0.1})["loss"] == {
        "type": "cross_entropy", "label_smoothing": 0.1}
    assert resolve_train_config({"loss": {"type": "smooth_l1", "beta": 2}}, {"loss.beta": 0.5})["loss"] == {
        "type": "smooth_l1", "beta": 0.5}


@pytest.mark.parametrize("section, overrides, message", [
    ({"epoch": 3}, None, r"train: unknown key 'epoch' \(did you mean 'epochs'\?\)"),
    ({"epochs": 0}, None, r"train: epochs must be >= 1; got epochs=0"),
    ({"batch_size": "64"}, None, r"train: batch_size must be an integer; got batch_size=\"64\""),
    ({"validation_split": 1.0}, None, r"validation_split must be in \[0.0, 1.0\); got validation_split=1.0"),
    ({"loss": 3}, None, r"train: loss must be a loss name or \{\"type\": NAME, options...\}; got loss=3"),
    ({"optimizer": "sgd"}, None, r"optimizer must be a JSON object"),
    (None, {"optimiser.lr": 1}, r"cannot override 'optimiser.lr'"),
])
def test_train_section_errors(section, overrides, message):
    with pytest.raises(ConfigError, match=message):
        resolve_train_config(section, overrides)


def test_errors_in_a_file_name_the_file(tmp_path, registries):
    path = tmp_path / "net.json"
    path.write_text(json.dumps({**TINY, "train": {"optimizer": {"type": "sgd", "lr": 0.1, "momentun": 0.9}}}))
    with pytest.raises(ConfigError, match=r"net\.json: train\.optimizer \(sgd\): unknown key 'momentun' \(did you mean 'momentum'\?\)"):
        train(path, out=tmp_path / "run", registries=registries)


# -- the loop ------------------------------------------------------------------------------------------

def test_run_folder_and_metrics(tmp_path, registries):
    result = train(copy.deepcopy(TINY), out=tmp_path / "run", registries=registries)
    files = {p.name for p in result.run_dir.iterdir()}
    assert {"config.json", "metrics.jsonl", "latest.npz", "best.npz", "curves.png"} <= files
    lines = (result.run_dir / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["epoch"] for r in records] == [1, 2]
    assert set(records[0]) == {"epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr",
                               "seconds", "samples_per_second"}
    assert records[0]["lr"] == 0.05 and records[1]["lr"] == pytest.approx(0.035)
    assert records[1]["val_accuracy"] > 0.5  # two epochs on digits already learn something
    config = json.loads((result.run_dir / "config.json").read_text())
    assert config["train"]["validation_split"] == 0.2 and config["layers"] == TINY["layers"]
    assert load_checkpoint(result.run_dir / "latest.npz").meta["epoch"] == 2


def test_same_seed_same_metrics(tmp_path, registries):
    a = train(copy.deepcopy(TINY), out=tmp_path / "a", registries=registries)
    b = train(copy.deepcopy(TINY), out=tmp_path / "b", registries=registries)
    assert without_timing(a.metrics) == without_timing(b.metrics)
    c = train(copy.deepcopy(TINY), out=tmp_path / "c", overrides={"seed": 1}, registries=registries)
    assert without_timing(a.metrics) != without_timing(c.metrics)


def test_resume_is_exact(tmp_path, registries):
    straight = train(copy.deepcopy(TINY), overrides={"epochs": 4}, out=tmp_path / "straight", registries=registries)
    first = train(copy.deepcopy(TINY), overrides={"epochs": 2}, out=tmp_path / "split", registries=registries)
    assert len(first.metrics) == 2
    # from a checkpoint file into another folder: it gets the run's history too
    other = train(copy.deepcopy(TINY), overrides={"epochs": 3}, resume=tmp_path / "split" / "latest.npz",
                  out=tmp_path / "other", registries=registries)
    assert without_timing(other.metrics) == without_timing(straight.metrics[:3])
    assert [m["epoch"] for m in read_metrics(tmp_path / "other" / "metrics.jsonl")] == [1, 2, 3]
    # from the run folder, in place
    resumed = train(copy.deepcopy(TINY), overrides={"epochs": 4}, resume=tmp_path / "split", registries=registries)
    assert resumed.run_dir == tmp_path / "split"
    assert without_timing(resumed.metrics) == without_timing(straight.metrics)
    for layer, params in straight.network.params.items():
        for name, value in params.items():
            np.testing.assert_array_equal(resumed.network.params[layer][name], value, err_msg=f"{layer}.{name}")
    np.testing.assert_array_equal(resumed.network.buffers["bn"]["running_var"],
                                  straight.network.buffers["bn"]["running_var"])


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, registries):
    """Least squares with a far too large step grows the error geometrically until float32 overflows."""
    config = {"name": "linear", "input": {"shape": [1, 8, 8]},
              "layers": [{"type": "flatten"}, {"name": "fc", "type": "linear", "out_features": 10}],
              "train": {"loss": "mse", "optimizer": {"type": "sgd", "lr": 1000}, "epochs": 3, "batch_size": 128}}
    with pytest.raises(TrainingStopped, match=r"the loss became (nan|inf) at epoch 1, batch \d+ \(lr 1000\); "
                                              r"training stopped\. The last good checkpoint is .*latest\.npz "
                                              r"\(epoch 0\); try a lower learning rate"):
        train(config, out=tmp_path / "run", registries=registries)
    kept = load_checkpoint(tmp_path / "run" / "latest.npz")
    assert kept.meta["epoch"] == 0 and np.isfinite(kept.params["fc"]["weight"]).all()


def test_missing_matplotlib_prints_how_to_get_the_plot(tmp_path, registries, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    notes = []

    class Notes:
        def epoch_start(self, *a): pass
        def batch_end(self, *a): pass
        def epoch_end(self, *a): pass
        def note(self, text): notes.append(text)

    result = train(copy.deepcopy(TINY), overrides={"epochs": 1}, out=tmp_path / "run", reporter=Notes(),
                   registries=registries)
    assert not (result.run_dir / "curves.png").exists()
    assert any("pip install 'cnnrun[plot]'" in n for n in notes)


# -- learning a kernel ---------------------------------------------------------------------------------

def test_learning_the_edge_kernel(registries):
    """A single 1x2 conv trained with mse toward the [1, -1] edge map recovers the kernel [1, -1]."""
    image = np.zeros((1, 1, 6, 8), np.float32)
    image[..., 2:6] = 1.0  # two vertical edges: 0 -> 1 between columns 1|2 and 1 -> 0 between 5|6
    target = image[..., :-1] - image[..., 1:]  # the edge map of the kernel [1, -1]
    net = Network.from_config({"input": {"shape": [1, 6, 8]}, "layers": [
        {"name": "edge", "type": "conv2d", "out_channels": 1, "kernel_size": [1, 2], "bias": False}]},
        registry=registries.layers)
    net.initialize(seed=0)
    optimizer = make_optimizer({"type": "sgd", "lr": 0.1, "momentum": 0.9}, registries.optimizers)
    for _ in range(200):
        loss, grad = mse(net.forward(image, training=True), target)
        net.backward(grad)
        optimizer.apply(net.params, net.grads, 0.1)
    np.testing.assert_allclose(net.params["edge"]["weight"].reshape(2), [1.0, -1.0], atol=0.05)
    assert loss < 1e-3


def test_resuming_from_an_inference_checkpoint_is_a_clear_error(tmp_path, registries):
    from cnnrun.engine.checkpoint import CheckpointError, save_checkpoint

    first = train(copy.deepcopy(TINY), overrides={"epochs": 1}, out=tmp_path / "run", registries=registries)
    loaded = load_checkpoint(first.run_dir / "latest.npz")
    loaded.meta = {"normalization": None}  # what cnnrun fuse writes: weights only
    save_checkpoint(tmp_path / "weights.npz", loaded)
    with pytest.raises(CheckpointError, match=r"weights\.npz is not a training checkpoint .* not resumed"):
        train(copy.deepcopy(TINY), overrides={"epochs": 2}, resume=tmp_path / "weights.npz",
              out=tmp_path / "again", registries=registries)
