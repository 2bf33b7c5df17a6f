"""train.augment in training: applied to training batches only, seeded by the run, resume-exact."""

import copy
import json

import numpy as np
import pytest

from cnnrun.engine import ConfigError
from cnnrun.engine.augment import Augmenter
from cnnrun.engine.checkpoint import load_checkpoint
from cnnrun.engine.train import resolve_train_config, train
from helpers import without_timing

AUGMENT = [{"type": "random_crop", "padding": 1, "padding_mode": "reflect"}, {"type": "horizontal_flip"},
           {"type": "random_erasing", "p": 0.5}]
NET = {
    "name": "tiny",
    "input": {"shape": [1, 8, 8]},
    "layers": [
        {"name": "conv", "type": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1},
        {"type": "relu"},
        {"type": "maxpool2d", "kernel_size": 2},
        {"type": "flatten"},
        {"name": "fc", "type": "linear", "out_features": 10},
    ],
    "train": {"data": {"type": "digits"}, "optimizer": {"type": "sgd", "lr": 0.05, "momentum": 0.9},
              "epochs": 2, "batch_size": 128, "augment": AUGMENT},
}


def test_augment_defaults_to_none_and_is_checked_with_the_train_section():
    assert resolve_train_config(None)["augment"] == []
    with pytest.raises(ConfigError, match=r"^train.augment\[1\] \(horizontal_flip\): unknown key 'prob'"):
        resolve_train_config({"augment": [{"type": "vertical_flip"}, {"type": "horizontal_flip", "prob": 1}]})


def test_augmentation_applies_to_training_batches_only_and_changes_training(tmp_path, registries, monkeypatch):
    seen = []
    original = Augmenter.__call__

    def recording(self, x, rng):
        seen.append(len(x))
        return original(self, x, rng)

    monkeypatch.setattr(Augmenter, "__call__", recording)
    augmented = train(copy.deepcopy(NET), overrides={"epochs": 1}, out=tmp_path / "a", registries=registries)
    assert sum(seen) == round(1797 * 0.8)  # the training split once; validation not augmented
    plain = train({**copy.deepcopy(NET), "train": {**NET["train"], "augment": []}}, overrides={"epochs": 1},
                  out=tmp_path / "b", registries=registries)
    assert augmented.metrics[0]["train_loss"] != plain.metrics[0]["train_loss"]
    again = train(copy.deepcopy(NET), overrides={"epochs": 1}, out=tmp_path / "c", registries=registries)
    assert without_timing(again.metrics) == without_timing(augmented.metrics)


def test_resume_with_augmentation_is_exact(tmp_path, registries):
    straight = train(copy.deepcopy(NET), overrides={"epochs": 4}, out=tmp_path / "straight", registries=registries)
    train(copy.deepcopy(NET), overrides={"epochs": 2}, out=tmp_path / "split", registries=registries)
    meta = load_checkpoint(tmp_path / "split" / "latest.npz").meta
    assert meta["rng"]["augment"] != meta["rng"]["shuffle"]
    resumed = train(copy.deepcopy(NET), overrides={"epochs": 4}, resume=tmp_path / "split", registries=registries)
    assert without_timing(resumed.metrics) == without_timing(straight.metrics)
    for layer, params in straight.network.params.items():
        for name, value in params.items():
            np.testing.assert_array_equal(resumed.network.params[layer][name], value, err_msg=f"{layer}.{name}")


def test_augmentations_that_change_the_shape_are_refused_before_training(tmp_path, registries):
    path = tmp_path / "net.json"
    path.write_text(json.dumps({**NET, "train": {**NET["train"], "augment": [
        {"type": "random_resized_crop", "size": [6, 6]}]}}))
    with pytest.raises(ConfigError, match=r"net\.json: train.augment: the augmentations turn examples of shape "
                                          r"\[1, 8, 8\] into \[1, 6, 6\], but the network input shape is \[1, 8, 8\]"):
        train(path, out=tmp_path / "run", registries=registries)


def test_a_final_normalize_applies_to_validation_and_is_saved_for_eval(tmp_path, registries):
    from cnnrun.engine.inference import evaluate_checkpoint

    net = {**copy.deepcopy(NET), "train": {**NET["train"], "augment": [
        {"type": "horizontal_flip"}, {"type": "normalize", "mean": 0.3, "std": 0.4}]}}
    result = train(copy.deepcopy(net), overrides={"epochs": 1}, out=tmp_path / "run", registries=registries)
    meta = load_checkpoint(tmp_path / "run" / "latest.npz").meta
    assert meta["normalization"] == {"mean": [0.3], "std": [0.4]}
    report = evaluate_checkpoint(copy.deepcopy(net), tmp_path / "run", registries=registries)
    assert report["loss"] == pytest.approx(result.metrics[0]["val_loss"], rel=1e-6)
    net["train"]["data"]["normalize"] = True
    with pytest.raises(ConfigError, match=r"train.augment\[1\] \(normalize\): the data is normalized already"):
        train(net, out=tmp_path / "other", registries=registries)
