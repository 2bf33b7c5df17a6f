"""``cnnrun fuse`` and :mod:`cnnrun.engine.fuse`: folding batchnorm into conv/linear keeps eval outputs."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from cnnrun.cli.main import cli
from cnnrun.engine import Network
from cnnrun.engine.checkpoint import Checkpoint, load_checkpoint, network_state, restore_network
from cnnrun.engine.fuse import foldable_pairs, fuse_network
from cnnrun.engine.train import train

from helpers import with_statistics


def conv(name, **options):
    return {"name": name, "type": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1, **options}


CASES = {
    "conv2d with bias": ([1, 5, 5], [conv("c"), {"name": "b", "type": "batchnorm"}, {"type": "relu"}]),
    "conv2d without bias": ([2, 5, 5], [conv("c", bias=False, stride=2), {"name": "b", "type": "batchnorm"}]),
    "conv1d": ([3, 9], [{"name": "c", "type": "conv1d", "out_channels": 5, "kernel_size": 3, "dilation": 2},
                        {"name": "b", "type": "batchnorm"}, {"type": "tanh"}]),
    "linear": ([7], [{"name": "c", "type": "linear", "out_features": 6}, {"name": "b", "type": "batchnorm"},
                     {"type": "relu"}, {"name": "out", "type": "linear", "out_features": 3}]),
    "grouped conv": ([4, 6, 6], [conv("c", groups=2, bias=False), {"name": "b", "type": "batchnorm"}]),
    "add in a DAG": ([2, 5, 5], [conv("c1"), {**conv("side"), "inputs": "input"},
                                 {"name": "b1", "type": "batchnorm", "inputs": "c1"},
                                 {**conv("c2"), "inputs": "input"}, {"name": "b2", "type": "batchnorm"},
                                 {"type": "add", "inputs": ["b1", "b2", "side"]}, {"type": "relu"}]),
    "auto-generated names": ([2, 5, 5], [{"type": "conv2d", "out_channels": 3, "kernel_size": 3},
                                         {"type": "batchnorm"}, {"type": "relu"}, {"type": "batchnorm"},
                                         {"type": "conv2d", "out_channels": 3, "kernel_size": 1, "bias": False},
                                         {"type": "batchnorm"}]),
}


def config_of(shape, layers, name="net"):
    return {"name": name, "input": {"shape": shape}, "layers": layers}


def trained_looking(config, seed=0):
    """A network whose batchnorms have non-trivial gamma, beta and running statistics."""
    net = Network.from_config(config)
    net.initialize(seed)
    return with_statistics(net, seed)


def checkpoint_of(net, normalization=None):
    params, buffers = network_state(net)
    return Checkpoint(params, buffers, {}, {"normalization": normalization})


def fused_network(new_config, fused):
    net = Network.from_config(new_config)
    restore_network(net, fused)
    return net


def assert_same_outputs(net, fused_net, seed=0):
    x = np.random.default_rng(seed).standard_normal((6, *net.input_shape)).astype(np.float32)
    expected, actual = net.forward(x), fused_net.forward(x)
    assert np.max(np.abs(actual - expected)) <= 1e-5 * np.max(np.abs(expected))


@pytest.mark.parametrize("case", CASES)
def test_fused_network_computes_the_same_in_eval_mode(case):
    config = config_of(*CASES[case])
    net = trained_looking(config)
    new_config, fused, pairs = fuse_network(config, checkpoint_of(net))
    types = {node.name: node.layer.type_name for node in net.nodes}
    assert pairs and all(types[layer] in ("conv2d", "conv1d", "linear") and types[bn] == "batchnorm"
                         for layer, bn in pairs)
    assert len(new_config["layers"]) == len(config["layers"]) - len(pairs)
    fused_net = fused_network(new_config, fused)
    assert {node.name for node in fused_net.nodes} == set(types) - {bn for _, bn in pairs}
    assert fused_net.parameter_count() < net.parameter_count()
    assert_same_outputs(net, fused_net)


def test_what_is_folded_and_how_the_json_is_rewired():
    config = config_of(*CASES["add in a DAG"])
    new_config, fused, pairs = fuse_network(config, checkpoint_of(trained_looking(config)))
    assert pairs == [("c1", "b1"), ("c2", "b2")]
    names = [layer["name"] for layer in new_config["layers"][:3]]
    assert names == ["side", "c1", "c2"]  # c1 takes b1's place in the list
    assert new_config["layers"][1]["inputs"] == ["input"] and new_config["layers"][2]["inputs"] == "input"
    assert new_config["layers"][3]["inputs"] == ["c1", "c2", "side"]
    assert all(layer.get("bias", True) is True for layer in new_config["layers"][1:3])
    assert set(fused.params) == {"side", "c1", "c2"} and fused.buffers == {}
    assert fused.meta["fused"] == [["c1", "b1"], ["c2", "b2"]]


def test_auto_generated_names_are_kept():
    config = config_of(*CASES["auto-generated names"])
    new_config, fused, pairs = fuse_network(config, checkpoint_of(trained_looking(config)))
    assert pairs == [("conv2d_1", "batchnorm_1"), ("conv2d_2", "batchnorm_3")]
    assert [layer.get("name") for layer in new_config["layers"]] == ["conv2d_1", None, "batchnorm_2", "conv2d_2"]
    assert new_config["layers"][3]["bias"] is True and "bias" not in new_config["layers"][0]
    assert set(fused.buffers) == {"batchnorm_2"}


@pytest.mark.parametrize("shape, layers", [
    ([1, 5, 5], [{"type": "batchnorm"}, conv("c")]),                                       # first layer
    ([1, 5, 5], [conv("c"), {"type": "relu"}, {"type": "batchnorm"}]),                     # after relu
    ([1, 5, 5], [conv("c"), {"type": "batchnorm"}, {"type": "add", "inputs": ["c", "batchnorm_1"]}]),  # conv read twice
    ([2, 5, 5], [{"name": "t", "type": "conv_transpose2d", "out_channels": 3, "kernel_size": 2},
                 {"type": "batchnorm"}]),                                                  # not folded
])
def test_batchnorm_that_does_not_follow_a_foldable_layer_is_left_alone(shape, layers):
    config = config_of(shape, layers)
    net = trained_looking(config)
    assert foldable_pairs(net) == []
    new_config, fused, pairs = fuse_network(config, checkpoint_of(net, {"mean": [0.5], "std": [2.0]}))
    assert pairs == [] and new_config["layers"] == layers
    assert_same_outputs(net, fused_network(new_config, fused))


TRAINED = {
    "name": "digits_bn",
    "input": {"shape": [1, 8, 8]},
    "layers": [
        {"name": "conv", "type": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1, "bias": False},
        {"name": "bn", "type": "batchnorm"},
        {"type": "relu"},
        {"type": "maxpool2d", "kernel_size": 2},
        {"type": "flatten"},
        {"name": "fc", "type": "linear", "out_features": 10},
        {"type": "softmax"},
    ],
    "train": {"data": {"type": "digits", "normalize": True}, "optimizer": {"type": "adam", "lr": 0.01},
              "epochs": 1, "batch_size": 64},
}


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuse")
    net_file = folder / "digits_bn.json"
    net_file.write_text(json.dumps(TRAINED))
    train(str(net_file), out=folder / "run")
    return net_file, folder / "run"


def cnnrun(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_cli_writes_a_network_that_eval_and_describe_accept(trained_run, tmp_path):
    net_file, run_dir = trained_run
    result = cnnrun("fuse", net_file, "--checkpoint", run_dir, "--out", tmp_path / "fused")
    assert result.exit_code == 0, result.output
    fused_json, fused_npz = tmp_path / "fused" / "digits_bn.json", tmp_path / "fused" / "digits_bn.npz"
    assert result.output.splitlines() == ["folded bn into conv", "parameters: 694 -> 690",
                                          f"wrote {fused_json} and {fused_npz}"]
    config = json.loads(fused_json.read_text())
    assert [layer.get("name") for layer in config["layers"]][:2] == ["conv", None]
    assert config["layers"][0]["bias"] is True and config["train"] == TRAINED["train"]
    source = load_checkpoint(run_dir / "latest.npz")
    assert load_checkpoint(fused_npz).meta["normalization"] == source.meta["normalization"] is not None

    before = json.loads(cnnrun("eval", net_file, "--checkpoint", run_dir, "--format", "json").output)
    after = json.loads(cnnrun("eval", fused_json, "--checkpoint", fused_npz, "--format", "json").output)
    assert after["loss"] == pytest.approx(before["loss"], rel=1e-5)
    assert after["confusion_matrix"] == before["confusion_matrix"]
    described = [json.loads(cnnrun("describe", path, "--format", "json").output) for path in (net_file, fused_json)]
    assert described[1]["total_params"] == described[0]["total_params"] - 4
    assert len(described[1]["layers"]) == len(described[0]["layers"]) - 1


def test_cli_errors_are_one_line(trained_run, tmp_path):
    net_file, run_dir = trained_run
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**TRAINED, "layers": [{"type": "flatten"},
                                                       {"name": "fc", "type": "linear", "out_features": 10}]}))
    cases = [(other, run_dir, tmp_path, "latest.npz does not fit network"),
             (net_file, tmp_path / "missing", tmp_path, "does not exist"),
             (net_file, run_dir, net_file.parent, "would overwrite the file it is made from")]
    for net, checkpoint, out, message in cases:
        result = CliRunner().invoke(cli, ["fuse", str(net), "--checkpoint", str(checkpoint), "--out", str(out)])
        lines = result.output.strip().splitlines()
        assert result.exit_code != 0 and message in lines[-1] and "Traceback" not in result.output, result.output
