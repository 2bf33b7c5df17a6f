"""Blocks in network files: expansion, naming, equivalence with the flat form, errors, comments, describe."""

import copy
import json
import re

import numpy as np
import pytest
from click.testing import CliRunner

from cnnrun.cli.main import cli
from cnnrun.engine.blocks import expand_blocks, strip_comments
from cnnrun.engine.checkpoint import Checkpoint
from cnnrun.engine.errors import ConfigError
from cnnrun.engine.fuse import fuse_network
from cnnrun.engine.network import Network, read_network_file

CONV = {"type": "conv2d", "kernel_size": 3, "padding": 1, "bias": False}

RESNET_BLOCK_FLAT = [  # examples/resnet_block.json as it was written before blocks
    {"name": "stem", "type": "conv2d", "out_channels": 8, "kernel_size": 3, "padding": "same"},
    {"name": "stem_bn", "type": "batchnorm"},
    {"name": "stem_relu", "type": "relu"},
    {"name": "a1", **CONV, "out_channels": 8},
    {"name": "a1_bn", "type": "batchnorm"},
    {"name": "a1_relu", "type": "relu"},
    {"name": "a2", **CONV, "out_channels": 8},
    {"name": "a2_bn", "type": "batchnorm"},
    {"name": "residual", "type": "add", "inputs": ["a2_bn", "stem_relu"]},
    {"name": "res_relu", "type": "relu"},
    {"name": "wide", "type": "conv2d", "out_channels": 8, "kernel_size": 1, "inputs": ["stem_relu"]},
    {"name": "merged", "type": "concat", "inputs": ["res_relu", "wide"]},
    {"name": "down", "type": "conv2d", "out_channels": 16, "kernel_size": 3, "stride": 2, "padding": "same",
     "groups": 4},
    {"type": "relu"}, {"type": "global_avgpool"}, {"type": "flatten"}, {"type": "dropout", "p": 0.2},
    {"name": "head", "type": "linear", "out_features": 10}, {"type": "softmax"},
]
RESNET_BLOCK_NAMES = {"a1": "res.1.conv1", "a1_bn": "res.1.bn1", "a1_relu": "res.1.relu1", "a2": "res.1.conv2",
                      "a2_bn": "res.1.bn2", "residual": "res.1.add", "res_relu": "res.1.relu2"}


def resnet20_flat() -> list:
    """examples/resnet20_cifar10.json's layers as they were written before blocks (s1b1_conv1, ...)."""
    layers = [{"name": "conv1", **CONV, "out_channels": 16}, {"name": "bn1", "type": "batchnorm"},
              {"name": "relu1", "type": "relu"}]
    previous = "relu1"
    for stage, channels in enumerate((16, 32, 64), 1):
        for block in (1, 2, 3):
            p = f"s{stage}b{block}_"
            down = stage > 1 and block == 1
            layers += [{"name": p + "conv1", **CONV, "out_channels": channels, **({"stride": 2} if down else {})},
                       {"name": p + "bn1", "type": "batchnorm"}, {"name": p + "relu1", "type": "relu"},
                       {"name": p + "conv2", **CONV, "out_channels": channels},
                       {"name": p + "bn2", "type": "batchnorm"}]
            if down:
                layers += [{"name": p + "shortcut", "type": "conv2d", "out_channels": channels, "kernel_size": 1,
                            "stride": 2, "padding": 0, "bias": False, "inputs": [previous]},
                           {"name": p + "shortcut_bn", "type": "batchnorm"}]
            skip = p + "shortcut_bn" if down else previous
            layers += [{"name": p + "add", "type": "add", "inputs": [p + "bn2", skip]},
                       {"name": p + "relu2", "type": "relu"}]
            previous = p + "relu2"
    return layers + [{"name": "pool", "type": "global_avgpool"}, {"type": "flatten"},
                     {"name": "fc", "type": "linear", "out_features": 10}]


def resnet20_names(name: str) -> str:
    match = re.fullmatch(r"s(\d)b(\d)_(.+)", name)
    return f"stage{match[1]}.{match[2]}.{match[3]}" if match else name


@pytest.mark.parametrize("path, flat_layers, rename", [
    ("examples/resnet_block.json", RESNET_BLOCK_FLAT, lambda n: RESNET_BLOCK_NAMES.get(n, n)),
    ("examples/resnet20_cifar10.json", resnet20_flat(), resnet20_names),
])
def test_block_examples_equal_their_flat_form(registry, path, flat_layers, rename):
    config = read_network_file(path)
    flat_config = {"name": config["name"], "input": config["input"], "layers": flat_layers}
    blocks, flat = (Network.from_config(c, registry=registry, seed=3) for c in (config, flat_config))
    assert len(blocks.nodes) == len(flat.nodes)
    for mine, theirs in zip(blocks.nodes, flat.nodes):
        assert mine.name == rename(theirs.name)
        assert mine.inputs == tuple(rename(i) for i in theirs.inputs)
        assert mine.layer.type_name == theirs.layer.type_name
        assert {**mine.layer.get_config(), "name": None} == {**theirs.layer.get_config(), "name": None}
        assert mine.output_shape == theirs.output_shape
    for tree in ("params", "buffers"):
        mine, theirs = getattr(blocks, tree), getattr(flat, tree)
        assert set(mine) == {rename(n) for n in theirs}
        for name, arrays in theirs.items():
            assert set(mine[rename(name)]) == set(arrays)
            for key, array in arrays.items():
                assert mine[rename(name)][key].shape == array.shape
                np.testing.assert_array_equal(mine[rename(name)][key], array)
    assert blocks.parameter_count() == flat.parameter_count()


def network(layers, blocks=None, shape=(2, 6, 6)):
    config = {"name": "n", "input": {"shape": list(shape)}, "layers": layers}
    if blocks is not None:
        config["blocks"] = blocks
    return config


BASIC = {"params": {"channels": None, "stride": 1}, "layers": [
    {"name": "conv1", "type": "conv2d", "out_channels": "$channels", "kernel_size": 3, "padding": 1,
     "stride": "$stride"},
    {"name": "relu", "type": "relu"},
]}


def test_repeat_names_instances_and_chains_them():
    flat = expand_blocks(network([{"block": "basic", "name": "s", "channels": 4, "repeat": 3}], {"basic": BASIC}))
    assert "blocks" not in flat
    assert [e["name"] for e in flat["layers"]] == ["s.1.conv1", "s.1.relu", "s.2.conv1", "s.2.relu",
                                                   "s.3.conv1", "s.3.relu"]
    assert [e.get("inputs") for e in flat["layers"]] == [["input"], None, ["s.1.relu"], None, ["s.2.relu"], None]
    assert flat["layers"][2] == {"name": "s.2.conv1", "type": "conv2d", "out_channels": 4, "kernel_size": 3,
                                 "padding": 1, "stride": 1, "inputs": ["s.1.relu"],
                                 "part_of": {"block": "basic", "instance": "s.2"}}


def test_start_numbers_instances_and_inputs_give_the_block_input(registry):
    layers = [{"name": "a", "type": "relu"}, {"name": "b", "type": "relu"},
              {"block": "basic", "name": "s", "channels": 2, "start": 4, "repeat": 2, "inputs": "a"}]
    net = Network.from_config(network(layers, {"basic": BASIC}), registry=registry)
    assert [(n.name, n.inputs) for n in net.nodes[2:]] == [
        ("s.4.conv1", ("a",)), ("s.4.relu", ("s.4.conv1",)), ("s.5.conv1", ("s.4.relu",)), ("s.5.relu", ("s.5.conv1",))]
    assert net.config["layers"][2]["part_of"] == {"block": "basic", "instance": "s.4"}
    rebuilt = Network.from_config(net.config, registry=registry)  # the expanded config builds the same network
    assert [(n.name, n.inputs, n.part_of) for n in rebuilt.nodes] == [(n.name, n.inputs, n.part_of) for n in net.nodes]


def test_nested_blocks_and_substitution_inside_lists(registry):
    blocks = {"pair": {"params": {"c": None, "k": 3}, "layers": [
        {"block": "one", "name": "x", "c": "$c", "k": "$k"},
        {"block": "one", "name": "y", "c": "$c", "k": "$k"},
        {"name": "sum", "type": "add", "inputs": ["x", "$in"]}]},
        "one": {"params": {"c": None, "k": None}, "layers": [
            {"name": "conv", "type": "conv2d", "out_channels": "$c", "kernel_size": ["$k", "$k"], "padding": "same"}]}}
    net = Network.from_config(network([{"block": "pair", "name": "p", "c": 2, "k": 1}], blocks), registry=registry)
    assert [(n.name, n.inputs) for n in net.nodes] == [
        ("p.1.x.1.conv", ("input",)), ("p.1.y.1.conv", ("p.1.x.1.conv",)), ("p.1.sum", ("p.1.x.1.conv", "input"))]
    assert net.params["p.1.x.1.conv"]["weight"].shape == (2, 2, 1, 1)
    assert net.nodes[0].part_of == {"block": "one", "instance": "p.1.x.1"}


def test_unnamed_layers_in_a_block_are_numbered_per_instance():
    blocks = {"b": {"params": {"act": "relu"}, "layers": [{"type": "$act"}, {"type": "relu"}]}}
    flat = expand_blocks(network([{"block": "b", "name": "u", "repeat": 2, "act": "sigmoid"}], blocks))
    assert [e["name"] for e in flat["layers"]] == ["u.1.sigmoid_1", "u.1.relu_1", "u.2.sigmoid_1", "u.2.relu_1"]
    assert [e["type"] for e in flat["layers"]] == ["sigmoid", "relu", "sigmoid", "relu"]


ERRORS = [
    ({"basic": {**BASIC, "layers": [{**BASIC["layers"][0], "out_channels": "$chanels"}]}},
     [{"block": "basic", "name": "s", "channels": 2}],
     r"net\.json: block 'basic' \(instance 's\.1'\), layer 'conv1' \(conv2d\): out_channels=\"\$chanels\" refers "
     r"to no parameter \(did you mean 'channels'\?\); block 'basic' takes: channels, stride$"),
    ({"basic": {**BASIC, "layers": [{**BASIC["layers"][0], "out_channels": "$in"}]}},
     [{"block": "basic", "name": "s", "channels": 2}], r"\('\$in' is for inputs only\)"),
    ({"basic": BASIC}, [{"block": "basic", "name": "s"}],
     r"net\.json: block 'basic' \(use 's'\): missing required parameter 'channels' of block 'basic'$"),
    ({"basic": BASIC}, [{"block": "basic", "name": "s", "channels": 2, "chanels": 3}],
     r"net\.json: block 'basic' \(use 's'\): unknown parameter 'chanels' \(did you mean 'channels'\?\); "
     r"block 'basic' takes: channels, stride$"),
    ({"basic": BASIC}, [{"block": "basic", "name": "s", "channels": 2, "repeat": 0}],
     r"net\.json: block 'basic' \(use 's'\): repeat must be an integer >= 1; got repeat=0$"),
    ({"basic": BASIC}, [{"block": "basic", "name": "s", "channels": 2, "start": -1}],
     r"net\.json: block 'basic' \(use 's'\): start must be an integer >= 0; got start=-1$"),
    ({"basic": BASIC}, [{"block": "basic", "name": "s", "channels": 2, "repeat": True}], r"got repeat=true$"),
    ({"basic": BASIC}, [{"block": "basic", "channels": 2}], r"block 'basic' \(use 'layers\[0\]'\): a block use "
                                                             r"needs a name"),
    ({"basic": BASIC}, [{"block": "basix", "name": "s"}],
     r"block 'basix' \(use 's'\): block \"basix\" is not defined \(did you mean 'basic'\?\); defined blocks: basic$"),
    ({"a": {"layers": [{"block": "b", "name": "x"}]}, "b": {"layers": [{"block": "a", "name": "y"}]}},
     [{"block": "a", "name": "s"}], r"block 'a' uses itself \(a -> b -> a\)$"),
    ({"basic": {**BASIC, "layers": [{**BASIC["layers"][0], "inputs": ["stem"]}]}},
     [{"name": "stem", "type": "relu"}, {"block": "basic", "name": "s", "channels": 2}],
     r"block 'basic' \(instance 's\.1'\), layer 'conv1' \(conv2d\): inputs names 'stem', which is no earlier "
     r"layer of block 'basic' \(the block's input is \"\$in\"\)$"),
    ({"basic": {**BASIC, "layers": [{**BASIC["layers"][0], "inputs": ["$in"]}]}},
     [{"type": "relu"}, {"block": "basic", "name": "s", "channels": 2}],
     r"layer 'conv1' \(conv2d\): '\$in' is the layer before the block use, which has no name"),
    ({"basic": {**BASIC, "layers": [{**BASIC["layers"][0], "kernal_size": 3}]}},  # found when the layer is built
     [{"block": "basic", "name": "s", "channels": 2}],
     r"net\.json: block 'basic' \(instance 's\.1'\), layer 'conv1' \(conv2d\): unknown key 'kernal_size'"),
    ({"shrink": {"layers": [{"name": "conv", "type": "conv2d", "out_channels": 2, "kernel_size": 3, "stride": 2}]}},
     [{"block": "shrink", "name": "s", "repeat": 3}],  # 6x6 -> 2x2 -> empty: the second instance
     r"net\.json: block 'shrink' \(instance 's\.2'\), layer 'conv' \(conv2d\): kernel_size=.* does not fit"),
    ({"basic": {"params": {"name": 1}, "layers": [{"type": "relu"}]}}, [{"type": "relu"}],
     r"net\.json: blocks\.basic: 'name' cannot be a parameter name"),
    ({"basic": {"layers": []}}, [{"type": "relu"}], r"blocks\.basic: 'layers' must be a non-empty list"),
    ({"basic": {"layer": []}}, [{"type": "relu"}], r"blocks\.basic: unknown key 'layer' \(did you mean 'layers'\?\)"),
    ({"b": {"layers": [{"name": "x", "type": "relu"}, {"name": "x", "type": "relu"}]}}, [{"block": "b", "name": "s"}],
     r"block 'b' \(instance 's\.1'\), layer 'x' \(relu\): name 'x' is used by an earlier layer of the block$"),
    ([], [{"type": "relu"}], r"net\.json: 'blocks' must be an object"),
    ({"b": {"layers": [{"type": "relu"}]}}, [{"block": "b", "name": "s", "inputs": ["a", "b"]}],
     r"block 'b' \(use 's'\): a block reads one input"),
]


@pytest.mark.parametrize("blocks, layers, message", ERRORS)
def test_block_errors_are_one_line_naming_block_instance_and_layer(tmp_path, blocks, layers, message):
    path = tmp_path / "net.json"
    path.write_text(json.dumps(network(layers, blocks)))
    with pytest.raises(ConfigError) as err:
        Network.from_json(path)
    text = str(err.value)
    assert "\n" not in text and re.search(message, text.replace(str(tmp_path) + "/", "")), text


def test_blocks_nested_too_deeply_are_one_error():
    blocks = {f"b{k}": {"layers": [{"block": f"b{k + 1}", "name": "x"}]} for k in range(3000)}
    blocks["b3000"] = {"layers": [{"type": "relu"}]}
    with pytest.raises(ConfigError, match=r"^blocks nested too deeply"):
        expand_blocks(network([{"block": "b0", "name": "s"}], blocks))


def test_comments_are_ignored_outside_strings_and_keep_line_numbers(tmp_path):
    text = ('// a network\n{"name": "a//b", // the name\n  "input": {"shape": [1, 4]},\n'
            '  "layers": [{"type": "relu"}]  // one layer\n}\n')
    path = tmp_path / "net.json"
    path.write_text(text)
    assert read_network_file(path) == {"name": "a//b", "input": {"shape": [1, 4]}, "layers": [{"type": "relu"}]}
    assert strip_comments('"say \\"//x\\"" // y\n1') == '"say \\"//x\\"" \n1'
    path.write_text('// one\n// two\n{"name": "x", // three\n  "input": {"shape": [1, 4]},,\n}\n')
    with pytest.raises(ConfigError, match=r"invalid JSON at line 4 column 30"):
        read_network_file(path)


def test_describe_groups_layers_by_block_instance():
    runner = CliRunner()
    report = json.loads(runner.invoke(cli, ["describe", "examples/resnet20_cifar10.json", "--format", "json"]).output)
    rows = {r["name"]: r for r in report["layers"]}
    assert (rows["stage2.1.shortcut"]["block"], rows["stage2.1.shortcut"]["instance"]) == ("down", "stage2.1")
    assert (rows["stage2.3.relu2"]["block"], rows["stage2.3.relu2"]["instance"]) == ("basic", "stage2.3")
    assert (rows["fc"]["block"], rows["fc"]["instance"]) == (None, None)
    assert all(not isinstance(v, (dict, list)) or k in ("inputs", "output_shape") for r in report["layers"]
               for k, v in r.items())
    table = runner.invoke(cli, ["describe", "examples/resnet20_cifar10.json"]).output.splitlines()
    headers = [line for line in table if line.startswith("[")]
    assert headers == [f"[stage{s}.{b}: block {'down' if s > 1 and b == 1 else 'basic'}]"
                       for s in (1, 2, 3) for b in (1, 2, 3)]
    first = table.index("[stage1.1: block basic]")
    assert table[first - 1].startswith("relu1 ") and table[first + 1].startswith("stage1.1.conv1 ")


def test_fuse_sees_the_expanded_layers(registry):
    config = read_network_file("examples/resnet_block.json")
    net = Network.from_config(config, registry=registry)
    checkpoint = Checkpoint(copy.deepcopy(net.params), copy.deepcopy(net.buffers), {}, {})
    new_config, _, pairs = fuse_network(config, checkpoint, registry=registry)
    assert ("res.1.conv1", "res.1.bn1") in pairs
    assert "blocks" not in new_config
    assert "res.1.bn1" not in [e.get("name") for e in new_config["layers"]]
