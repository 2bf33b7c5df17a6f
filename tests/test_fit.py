"""net.fit, net.evaluate and net.predict: the same loop as cnnrun train (same metrics, same weights),
arrays or a data source, the network file's train section by default, and clear errors."""

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import cnnrun.plugins
from cnnrun.cli.main import cli
from cnnrun.engine import CnnrunError, ConfigError, Network
from cnnrun.engine.checkpoint import load_checkpoint
from cnnrun.engine.data import Examples, stratified_split
from cnnrun.engine.run_folder import read_metrics
from helpers import without_timing

OPTIMIZER = {"type": "sgd", "lr": 0.2, "momentum": 0.9}
LINEAR = {
    "name": "linear",
    "input": {"shape": [1, 8, 8]},
    "layers": [{"type": "flatten"}, {"name": "fc", "type": "linear", "out_features": 10}],
}


@pytest.fixture(scope="module")
def digits():
    with np.load(Path(cnnrun.plugins.__file__).parent / "data" / "digits.npz") as data:
        return data["x"][:600, None].astype(np.float32) / 16, data["y"][:600].astype(np.int64)


@pytest.fixture(scope="module")
def net_file(tmp_path_factory, digits):
    """LINEAR with a train section on digits written to an .npz file beside the network file."""
    folder = tmp_path_factory.mktemp("fit")
    np.savez(folder / "digits.npz", x=digits[0], y=digits[1])
    train = {"data": {"type": "npz", "path": "digits.npz"}, "optimizer": OPTIMIZER, "epochs": 3,
             "batch_size": 50, "seed": 3, "validation_split": 0.25, "metrics": ["f1", "top_k_accuracy"]}
    path = folder / "linear.json"
    path.write_text(json.dumps({**LINEAR, "train": train}))
    return path


@pytest.fixture(scope="module")
def cli_run(net_file):
    out = net_file.parent / "run"
    result = CliRunner().invoke(cli, ["train", str(net_file), "--out", str(out), "-q"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return read_metrics(out / "metrics.jsonl"), load_checkpoint(out / "latest.npz")


def assert_same_run(history, net, cli_run):
    records, checkpoint = cli_run
    assert without_timing(history.records) == without_timing(records)
    for layer, params in checkpoint.params.items():
        for name, value in params.items():
            np.testing.assert_array_equal(net.params[layer][name], value, err_msg=f"{layer}.{name}")


def test_fit_on_arrays_equals_cnnrun_train(digits, cli_run, registries):
    x, y = digits
    net = Network.from_config(LINEAR, registry=registries.layers, seed=3)  # train() initializes from its seed
    history = net.fit(x, y, epochs=3, batch_size=50, seed=3, validation_split=0.25, optimizer=OPTIMIZER,
                      metrics=["f1", "top_k_accuracy"], registries=registries)
    assert_same_run(history, net, cli_run)
    assert history.epoch == [1, 2, 3] and len(history.history["val_loss"]) == 3
    assert set(history.history) >= {"train_loss", "val_accuracy", "val_f1", "train_top_5_accuracy", "lr"}


def test_fit_without_arguments_uses_the_network_files_train_section(net_file, cli_run, registries):
    net = Network.from_json(net_file, registry=registries.layers, seed=3)
    assert_same_run(net.fit(registries=registries), net, cli_run)  # the data path is relative to the file


def test_evaluate_and_predict_agree_with_the_last_validation(digits, registries):
    x, y = digits
    net = Network.from_config(LINEAR, registry=registries.layers, seed=1)
    history = net.fit(x, y, epochs=2, batch_size=64, optimizer=OPTIMIZER, metrics=["precision"],
                      registries=registries)
    validation = stratified_split(Examples(x, y), 0.2, 0)[1]  # the default split, seed 0
    report = net.evaluate(validation.x, validation.y, metrics=["precision"], registries=registries)
    assert report == {"loss": history.records[-1]["val_loss"], "accuracy": history.records[-1]["val_accuracy"],
                      "precision": history.records[-1]["val_precision"]}
    logits = net.predict(validation.x, batch_size=7, probabilities=False)
    np.testing.assert_allclose(logits, net.forward(validation.x), rtol=1e-6)
    probabilities = net.predict(validation.x[:, 0])  # the channel axis of one channel may be left out
    shifted = logits - logits.max(axis=1, keepdims=True)
    reference = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(probabilities, reference, rtol=1e-6)
    loss = -np.mean(np.log(reference[np.arange(len(validation)), validation.y]))
    assert report["loss"] == pytest.approx(loss, rel=1e-5)
    assert report["accuracy"] == pytest.approx(np.mean(np.argmax(probabilities, axis=1) == validation.y))


def test_fit_with_validation_data_and_a_data_source(digits, registries):
    x, y = digits
    net = Network.from_config(LINEAR, registry=registries.layers)
    history = net.fit(x[:500], y[:500], validation_data=(x[500:], y[500:]), epochs=1, batch_size=100,
                      optimizer=OPTIMIZER, registries=registries)
    assert history.history["val_accuracy"][0] == net.evaluate(x[500:], y[500:], registries=registries)["accuracy"]
    history = net.fit(data={"type": "digits"}, epochs=1, batch_size=256, validation_split=0.0, registries=registries)
    assert history.history["val_loss"] == [None] and history.history["train_loss"][0] > 0


def test_predict_and_evaluate_run_on_the_networks_device(digits, registries, cuda_backend):
    x, y = digits
    net = Network.from_config(LINEAR, registry=registries.layers, seed=2)
    expected, report = net.predict(x[:6]), net.evaluate(x[:6], y[:6], metrics=["f1"], registries=registries)
    net.to(cuda_backend)
    np.testing.assert_allclose(net.predict(x[:6]), expected, rtol=1e-5)
    on_cuda = net.evaluate(x[:6], y[:6], metrics=["f1"], registries=registries)
    assert on_cuda == pytest.approx(report, rel=1e-5)


def test_a_regression_network_predicts_raw_outputs(registries, rng):
    config = copy.deepcopy(LINEAR)
    config["train"] = {"loss": "mse"}
    net = Network.from_config(config, registry=registries.layers)
    x = rng.random((3, 1, 8, 8), dtype=np.float32)
    np.testing.assert_array_equal(net.predict(x), net.forward(x).astype(np.float64))


@pytest.mark.parametrize("call, message", [
    (lambda net, x, y: net.fit(x), r"fit\(x, y\) needs both the inputs x and the labels y"),
    (lambda net, x, y: net.fit(x, y, epoch=2), r"fit\(\) got an unexpected argument 'epoch'"),
    (lambda net, x, y: net.fit(x, y, callbacks=[print]), r"callbacks\[0\] is <built-in function print>, not a "),
    (lambda net, x, y: net.fit(x, y, optimizer="adam"), r"optimizer must be a train.optimizer object"),
    (lambda net, x, y: net.fit(data={"type": "digits"}, validation_data=(x, y)), r"validation_data goes with arrays"),
    (lambda net, x, y: net.fit(x[:, :, :4], y), r"fit\(x, y\): the training inputs have shape \[1, 4, 8\]"),
    (lambda net, x, y: net.fit(x, y, validation_data=x), r"validation_data must be a pair \(x, y\)"),
    (lambda net, x, y: net.evaluate(x, y[:3]), r"evaluate: y must be 600 integer labels"),
    (lambda net, x, y: net.predict(np.full((2, 1, 8, 8), np.nan)), r"linear: the inputs hold NaN or Inf"),
])
def test_bad_arguments_are_one_clear_error(digits, registry, call, message):
    net = Network.from_config(LINEAR, registry=registry)
    with pytest.raises(CnnrunError, match=message):
        call(net, *digits)


def test_bad_train_settings_name_the_key(digits, registries):
    net = Network.from_config(LINEAR, registry=registries.layers)
    with pytest.raises(ConfigError, match=r"train: epochs must be >= 1; got epochs=0"):
        net.fit(*digits, epochs=0, registries=registries)
