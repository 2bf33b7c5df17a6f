"""Checkpoints record which plugin (and version) provided each layer type; a network whose plugin is
gone says which plugin to install, for eval, predict and train --resume."""

import json
import re

import numpy as np
import pytest
from click.testing import CliRunner

import cnnrun
from cnnrun.engine import ConfigError, Layer, hookimpl
from cnnrun.engine.checkpoint import load_checkpoint
from cnnrun.engine.inference import evaluate_checkpoint, predict_file
from cnnrun.engine.plugins import Registries, make_plugin_manager
from cnnrun.engine.train import train


class SlopeReLU(Layer):
    """y = max(x, 0) + a * min(x, 0) with one trained slope a (a throwaway plugin layer)."""

    type_name = "slope_relu"

    def parameter_shapes(self, input_shape):
        return {"slope": (1,)}

    def initialize(self, params, buffers, rng):
        params["slope"][...] = 0.25

    def forward(self, ctx, x):
        ctx.saved.x = x
        return np.maximum(x, 0) + ctx.params["slope"][0] * np.minimum(x, 0)

    def backward(self, ctx, grad):
        x = ctx.saved.x
        ctx.grads["slope"][...] = np.sum(grad * np.minimum(x, 0))
        return grad * np.where(x > 0, x.dtype.type(1), ctx.params["slope"][0])


class SlopeReLUPlugin:
    @hookimpl
    def cnnrun_register_layers(self, register):
        register(SlopeReLU)


NET = {"name": "tiny", "input": {"shape": [1, 8, 8]}, "layers": [
    {"type": "flatten"}, {"name": "conv3", "type": "slope_relu"}, {"name": "fc", "type": "linear", "out_features": 10}],
    "train": {"data": {"type": "digits"}, "epochs": 1, "batch_size": 256, "validation_split": 0.5}}
MISSING = ("layer type 'slope_relu' of conv3 came from plugin 'cnnrun-slope-relu' 0.2, which is not installed "
           "(the checkpoint {path} needs it")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A one-epoch run of NET with the plugin installed as 'cnnrun-slope-relu' 0.2, and the network file."""
    folder = tmp_path_factory.mktemp("provenance")
    pm = make_plugin_manager(load_entrypoints=False)
    pm.register(SlopeReLUPlugin(), name="cnnrun-slope-relu")
    pm.versions["cnnrun-slope-relu"] = "0.2"  # as an installed distribution's version
    net_file = folder / "net.json"
    net_file.write_text(json.dumps(NET))
    train(net_file, out=folder / "run", registries=Registries.from_plugin_manager(pm))
    return folder / "run", net_file


@pytest.fixture
def without_plugin():
    return Registries.from_plugin_manager(make_plugin_manager(load_entrypoints=False))


def test_the_checkpoint_records_the_plugin_of_each_layer_type(trained):
    run, _ = trained
    for name in ("latest.npz", "best.npz"):
        assert load_checkpoint(run / name).meta["plugins"] == {
            "flatten": {"plugin": "cnnrun.plugins.reshape", "version": cnnrun.__version__},
            "linear": {"plugin": "cnnrun.plugins.dense", "version": cnnrun.__version__},
            "slope_relu": {"plugin": "cnnrun-slope-relu", "version": "0.2"}}


def test_eval_names_the_missing_plugin(trained, without_plugin):
    run, net_file = trained
    message = f"{net_file}: " + MISSING.format(path=run / "latest.npz")
    with pytest.raises(ConfigError, match=re.escape(message)):
        evaluate_checkpoint(net_file, run, registries=without_plugin)


def test_predict_names_the_missing_plugin(trained, without_plugin, tmp_path):
    run, net_file = trained
    np.savez(tmp_path / "x.npz", x=np.zeros((2, 1, 8, 8), np.float32))
    with pytest.raises(ConfigError, match=re.escape(MISSING.format(path=run / "best.npz"))):
        predict_file(net_file, run / "best.npz", tmp_path / "x.npz", tmp_path / "out.npz", registries=without_plugin)


def test_resume_names_the_missing_plugin(trained, without_plugin, tmp_path):
    run, net_file = trained
    with pytest.raises(ConfigError, match=re.escape(MISSING.format(path=run / "latest.npz"))):
        train(net_file, resume=run, out=tmp_path / "again", overrides={"epochs": 2}, registries=without_plugin)


UNKNOWN = r"layer 'conv3': unknown layer type 'slope_relu' \(did you mean 'leaky_relu'\?\)$"


def test_without_a_record_the_unknown_type_error_stands(trained, without_plugin, tmp_path):
    run, net_file = trained
    with pytest.raises(ConfigError, match=UNKNOWN):
        train(net_file, out=tmp_path / "fresh", registries=without_plugin)  # no checkpoint to ask
    with pytest.raises(ConfigError, match=UNKNOWN):
        evaluate_checkpoint(net_file, tmp_path / "no-such-run", registries=without_plugin)


def test_the_cli_prints_one_line(trained):
    from cnnrun.cli.main import cli

    run, net_file = trained
    result = CliRunner().invoke(cli, ["eval", str(net_file), "--checkpoint", str(run)])
    assert result.exit_code == 1
    assert result.stderr.strip() == "Error: " + f"{net_file}: " + MISSING.format(path=run / "latest.npz") + \
        "; `cnnrun plugins` lists what is)"


def test_a_fused_checkpoint_keeps_the_record(trained):
    from cnnrun.engine.fuse import fuse_network

    run, net_file = trained
    pm = make_plugin_manager(load_entrypoints=False)
    pm.register(SlopeReLUPlugin(), name="cnnrun-slope-relu")
    checkpoint = load_checkpoint(run / "latest.npz")
    _, fused, _ = fuse_network(NET, checkpoint, registry=Registries.from_plugin_manager(pm).layers)
    assert fused.meta["plugins"] == checkpoint.meta["plugins"]
