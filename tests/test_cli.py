"""The command line, through click's CliRunner: success paths and each class of bad input."""

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from cnnrun.cli.main import cli

LENET = "examples/lenet5.json"


def run(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def all_commands(group=cli, prefix=()):
    for name, command in group.commands.items():
        yield (*prefix, name), command
        if isinstance(command, click.Group):
            yield from all_commands(command, (*prefix, name))


@pytest.mark.parametrize("path", [p for p, _ in all_commands()], ids=" ".join)
def test_every_command_has_help(path):
    result = run(*path, "--help")
    assert result.exit_code == 0
    assert "Usage:" in result.output and len(result.output.splitlines()) > 3
    command = dict(all_commands())[path]
    assert command.help, f"{path} has no help text"
    assert all(p.help for p in command.params if isinstance(p, click.Option)), f"{path}: an option lacks help="


def test_short_help_and_version():
    assert run("-h").exit_code == 0
    result = run("--version")
    assert result.exit_code == 0 and "cnnrun, version" in result.output


def test_command_summaries_are_not_cut_off():
    listing = run("--help").output.split("Commands:")[1].strip().splitlines()
    assert len(listing) == len(cli.commands)
    for line in listing:
        assert not line.rstrip().endswith("..."), line


@pytest.mark.parametrize("path", [p for p, c in all_commands()
                                  if any("--batch-size" in o.opts for o in c.params if isinstance(o, click.Option))],
                         ids=" ".join)
def test_b_is_short_for_batch_size(path):
    option = next(o for o in dict(all_commands())[path].params if "--batch-size" in o.opts)
    assert "-b" in option.opts


def test_every_command_that_batches_takes_batch_size():
    takes = {p for p, c in all_commands() if any("--batch-size" in o.opts for o in c.params)}
    assert takes == {("describe",), ("eval",), ("predict",), ("profile",), ("train",)}


def test_help_does_not_import_numpy_or_numba():
    code = ("import sys; from cnnrun.cli.main import cli; "
            "print(any(m in sys.modules for m in ('numpy', 'numba')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_describe_lenet_table():
    result = run("describe", LENET, "--batch-size", "64")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "conv1" in out and "(6, 28, 28)" in out and "117,600" in out
    assert "total parameters: 61,706" in out
    assert "total MACs per sample: 416,520" in out
    assert "batch of 64" in out


def test_describe_lenet_json():
    result = run("describe", LENET, "--format", "json", "-b", "2")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["total_params"] == 61_706
    assert report["total_macs"] == 416_520
    assert report["layers"][0] == {"name": "conv1", "type": "conv2d", "inputs": ["input"], "output_shape": [6, 28, 28],
                                   "params": 156, "non_trainable_params": 0, "macs": 117_600,
                                   "block": None, "instance": None, "trainable": True}
    values = 28 * 28 + sum(math.prod(r["output_shape"]) for r in report["layers"])
    assert report["activation_bytes"] == values * 2 * 4
    assert report["batch_size"] == 2 and report["input_shape"] == [1, 28, 28]


def test_describe_inputs_and_trainable_counts():
    report = json.loads(run("describe", "examples/resnet_block.json", "--format", "json").output)
    rows = {r["name"]: r for r in report["layers"]}
    assert rows["stem"]["inputs"] == ["input"] and rows["res.1.conv1"]["inputs"] == ["stem_relu"]
    assert rows["res.1.add"]["inputs"] == ["res.1.bn2", "stem_relu"]
    # batchnorm: weight and bias are trained, running_mean and running_var are not
    assert (rows["stem_bn"]["params"], rows["stem_bn"]["non_trainable_params"]) == (16, 16)
    assert (rows["stem"]["params"], rows["stem"]["non_trainable_params"]) == (224, 0)
    assert report["total_params"] == report["trainable_params"] == 2_258  # trained values only, as before
    assert report["non_trainable_params"] == 48  # three batchnorms of 8 channels: running_mean, running_var
    table = run("describe", "examples/resnet_block.json").output
    assert re.search(r"^res\.1\.add +add +res\.1\.bn2, stem_relu +\(8, 16, 16\) +0 +0 +0$", table, re.M)
    assert re.search(r"^stem_bn +batchnorm +stem +\(8, 16, 16\) +16 +16 +0$", table, re.M)
    assert "total parameters: 2,258 trainable, 48 non-trainable" in table


def test_describe_counts_frozen_parameters_as_non_trainable(tmp_path):
    config = json.loads(Path(LENET).read_text())
    config["layers"][0]["trainable"] = False  # conv1: 156 parameters
    path = tmp_path / "frozen.json"
    path.write_text(json.dumps(config))
    report = json.loads(run("describe", str(path), "--format", "json").output)
    assert report["layers"][0]["trainable"] is False
    assert (report["total_params"], report["trainable_params"], report["non_trainable_params"]) == (61_706, 61_550, 156)
    assert ("total parameters: 61,550 trainable, 156 non-trainable (buffers such as batchnorm's running statistics, "
            "frozen layers' parameters)") in run("describe", str(path)).output


@pytest.mark.parametrize("layer, message", [
    ({"type": "conv2d", "out_channels": 4, "kernal_size": 3},
     r"layer 'conv2d_1' \(conv2d\): unknown key 'kernal_size' \(did you mean 'kernel_size'\?\)"),
    ({"type": "conv2d", "out_channels": 4, "kernel_size": [0, 3]}, r"kernel_size must be positive; got kernel_size=\[0, 3\]"),
    ({"type": "conv2d", "out_channels": 4, "kernel_size": 3, "groups": 2}, r"in_channels \(3\) must be divisible by groups \(2\)"),
    ({"type": "conv2d", "out_channels": 4, "kernel_size": 9}, r"layer 'conv2d_1' \(conv2d\): .*output"),
    ({"type": "linaer", "out_features": 3}, r"unknown layer type 'linaer' \(did you mean 'linear'\?\)"),
    ({"type": "conv2d", "kernel_size": 3}, r"missing required key 'out_channels'"),
])
def test_describe_bad_input_is_one_line(tmp_path, layer, message):
    path = tmp_path / "net.json"
    path.write_text(json.dumps({"input": {"shape": [3, 8, 8]}, "layers": [layer]}))
    result = run("describe", str(path))
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: {path}: "), result.output
    assert "Traceback" not in result.output
    assert re.search(message, lines[0]), lines[0]


def test_describe_invalid_json_and_missing_file(tmp_path):
    path = tmp_path / "net.json"
    path.write_text("{ nope")
    result = run("describe", str(path))
    assert result.exit_code == 1 and "invalid JSON at line 1" in result.output
    result = run("describe", str(tmp_path / "absent.json"))
    assert result.exit_code == 2 and "does not exist" in result.output


def test_plugins_lists_builtin_layer_types():
    result = run("plugins")
    assert result.exit_code == 0
    assert "cnnrun.plugins.conv" in result.output and "conv2d" in result.output
    report = json.loads(run("plugins", "--format", "json").output)
    types = {t for p in report["plugins"] for t in p["layer_types"]}
    assert {"conv2d", "conv1d", "conv_transpose2d", "maxpool2d", "avgpool2d", "maxpool1d", "avgpool1d",
            "global_avgpool", "flatten", "linear", "relu", "leaky_relu", "sigmoid", "tanh", "softmax",
            "dropout", "batchnorm", "add", "concat"} <= types
    assert "cnnrun.plugins.devices" in result.output and "devices: cpu, cuda" in result.output
    assert {d for p in report["plugins"] for d in p["devices"]} >= {"cpu", "cuda"}
