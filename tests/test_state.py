"""A network as a library object: saved whole and loaded back, PyTorch state dicts, intermediate
outputs (a feature extractor), frozen layers (issue 15)."""

import contextlib
import copy
import json
from pathlib import Path

import numpy as np
import pytest

from cnnrun.engine import CnnrunError, ConfigError, Network
from cnnrun.engine.blocks import strip_comments
from cnnrun.engine.checkpoint import Checkpoint, CheckpointError, save_checkpoint
from cnnrun.engine.optim import make_optimizer
from cnnrun.engine.state import StateDictError
from cnnrun.engine.train import train

from helpers import narrowed

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.json")) + sorted((ROOT / "examples" / "zoo").glob("*.json"))
SMALL_IMAGE = [3, 64, 64]  # the zoo at 64x64: the same parameters, a cheaper forward


def read_config(path: Path) -> dict:
    config = json.loads(strip_comments(path.read_text()))
    if path.parent.name == "zoo":
        config["input"]["shape"] = SMALL_IMAGE
        narrowed(config)
    return config


def with_random_buffers(net: Network, rng) -> Network:
    """Running statistics other than their initial values, so that a load must restore them."""
    for arrays in net.buffers.values():
        for name, array in arrays.items():
            array[...] = rng.uniform(0.5, 2.0, array.shape) if name == "running_var" else rng.normal(size=array.shape)
    return net


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_save_and_load_every_example_network(tmp_path, path):
    net = with_random_buffers(Network.from_config(read_config(path), seed=7), np.random.default_rng(0))
    net.freeze(net.nodes[0].name)
    net.save(tmp_path / "net.npz")
    loaded = Network.load(tmp_path / "net.npz")
    assert loaded.config == {**net.config, "layers": [
        {**net.config["layers"][0], "trainable": False}, *net.config["layers"][1:]]}
    assert [n.trainable for n in loaded.nodes] == [False] + [True] * (len(net.nodes) - 1)
    mine, theirs = net.state_dict(), loaded.state_dict()
    assert list(mine) == list(theirs) and all(np.array_equal(mine[k], theirs[k]) for k in mine)
    x = np.random.default_rng(1).standard_normal((2, *net.input_shape)).astype(np.float32)
    np.testing.assert_array_equal(loaded.forward(x), net.forward(x))


def test_a_float64_network_loads_as_float64(tmp_path):
    net = Network.from_config(read_config(ROOT / "examples" / "lenet5.json"), dtype="float64", seed=3)
    net.save(tmp_path / "net.npz")
    loaded = Network.load(tmp_path / "net.npz")
    assert loaded.dtype == np.float64
    x = np.random.default_rng(0).standard_normal((1, 1, 28, 28))
    np.testing.assert_array_equal(loaded.forward(x), net.forward(x))


def test_load_of_a_weights_only_checkpoint_says_what_to_do(tmp_path):
    net = Network.from_json(ROOT / "examples" / "lenet5.json")
    save_checkpoint(tmp_path / "weights.npz", Checkpoint(net.params, net.buffers))
    with pytest.raises(CheckpointError, match=r"holds weights, not a whole network .*load_weights"):
        Network.load(tmp_path / "weights.npz")
    other = Network.from_json(ROOT / "examples" / "lenet5.json", seed=5)
    assert other.load_weights(tmp_path / "weights.npz") is other
    assert np.array_equal(other.params["fc3"]["weight"], net.params["fc3"]["weight"])


def test_load_weights_takes_a_run_folder(tmp_path, registries):
    config = {**read_config(ROOT / "examples" / "small_digits.json"),
              "train": {"epochs": 1, "batch_size": 256, "data": {"type": "digits"}}}
    result = train(config, out=tmp_path / "run", registries=registries)
    net = Network.from_config(config, seed=9).load_weights(tmp_path / "run")
    for key, array in result.network.state_dict().items():
        np.testing.assert_array_equal(net.state_dict()[key], array)


# -- PyTorch state dicts -------------------------------------------------------------------------------------------

LENET5_TORCH = {  # torch: LeNet-5 as nn.Module with conv1, conv2, fc1, fc2, fc3; model.state_dict() shapes
    "conv1.weight": (6, 1, 5, 5), "conv1.bias": (6,), "conv2.weight": (16, 6, 5, 5), "conv2.bias": (16,),
    "fc1.weight": (120, 400), "fc1.bias": (120,), "fc2.weight": (84, 120), "fc2.bias": (84,),
    "fc3.weight": (10, 84), "fc3.bias": (10,),
}


@pytest.fixture
def lenet5():
    return Network.from_json(ROOT / "examples" / "lenet5.json")


def torch_state(rng, shapes=LENET5_TORCH) -> dict:
    return {key: rng.standard_normal(shape).astype(np.float32) for key, shape in shapes.items()}


def test_load_state_dict_with_torchs_names(lenet5, rng):
    state = torch_state(rng)
    assert lenet5.load_state_dict(state) == ([], [])
    assert list(lenet5.state_dict()) == list(LENET5_TORCH)
    for key, array in state.items():
        layer, name = key.split(".")
        np.testing.assert_array_equal(lenet5.params[layer][name], array)
    x = rng.standard_normal((1, 1, 28, 28)).astype(np.float32)
    flat = np.maximum(lenet5.forward(x, outputs=["flatten_1"])["flatten_1"], 0)
    hidden = np.maximum(flat @ state["fc1.weight"].T + state["fc1.bias"], 0)
    hidden = np.maximum(hidden @ state["fc2.weight"].T + state["fc2.bias"], 0)
    np.testing.assert_allclose(lenet5.forward(x), hidden @ state["fc3.weight"].T + state["fc3.bias"], rtol=1e-5,
                               atol=1e-5)


def test_load_state_dict_lists_every_mismatch_and_copies_nothing(lenet5, rng):
    state = torch_state(rng)
    state["conv1.weight"] = np.zeros((6, 3, 5, 5), np.float32)  # an RGB LeNet
    del state["fc3.weight"]
    state["fc4.weight"] = np.zeros((10, 84), np.float32)
    before = lenet5.state_dict()
    with pytest.raises(StateDictError) as info:
        lenet5.load_state_dict(state)
    assert str(info.value) == (
        "the state dict does not fit network 'lenet5': mis-shaped: conv1.weight (6, 3, 5, 5) in the mapping, "
        "(6, 1, 5, 5) in the network; missing: fc3.weight; unexpected: fc4.weight (did you mean 'fc3.weight'?)")
    assert all(np.array_equal(lenet5.state_dict()[k], v) for k, v in before.items())
    with pytest.raises(StateDictError, match="mis-shaped: conv1.weight"):  # as torch: a shape is never skipped
        lenet5.load_state_dict(state, strict=False)


def test_load_state_dict_not_strict_loads_what_fits(lenet5, rng):
    state = torch_state(rng)
    del state["fc3.bias"]
    state["classifier.weight"] = np.zeros(3)
    before = lenet5.params["fc3"]["bias"].copy()
    result = lenet5.load_state_dict(state, strict=False)
    assert result.missing_keys == ["fc3.bias"] and result.unexpected_keys == ["classifier.weight"]
    np.testing.assert_array_equal(lenet5.params["fc3"]["bias"], before)
    np.testing.assert_array_equal(lenet5.params["fc1"]["weight"], state["fc1.weight"])
    with pytest.raises(StateDictError, match=r"missing: fc3.bias; unexpected: classifier.weight "
                                             r"\(strict=False loads the keys that fit\)$"):
        lenet5.load_state_dict(state)


def test_load_state_dict_refuses_values_that_are_not_finite_numbers(lenet5, rng):
    state = torch_state(rng)
    state["fc1.bias"] = np.full(120, np.nan, np.float32)
    with pytest.raises(CheckpointError, match="state dict 'fc1.bias' has 120 NaN/Inf values"):
        lenet5.load_state_dict(state)
    state["fc1.bias"] = np.array(["x"] * 120)
    with pytest.raises(CheckpointError, match="state dict 'fc1.bias' must hold real numbers"):
        lenet5.load_state_dict(state)
    with pytest.raises(StateDictError, match="takes a mapping"):
        lenet5.load_state_dict([1, 2])


def test_batchnorm_buffers_load_and_num_batches_tracked_is_ignored():
    net = Network.from_config({"input": {"shape": [2, 4, 4]}, "layers": [
        {"name": "conv1", "type": "conv2d", "out_channels": 3, "kernel_size": 3, "bias": False},
        {"name": "bn1", "type": "batchnorm"}]})
    state = {"conv1.weight": np.ones((3, 2, 3, 3)), "bn1.weight": np.ones(3), "bn1.bias": np.zeros(3),
             "bn1.running_mean": np.arange(3.0), "bn1.running_var": np.full(3, 2.0),
             "bn1.num_batches_tracked": np.array(7)}
    assert net.load_state_dict(state) == ([], [])
    np.testing.assert_array_equal(net.buffers["bn1"]["running_mean"], [0, 1, 2])
    state["bn1.running_var"] = np.array([1.0, -1.0, 1.0])
    with pytest.raises(CnnrunError, match="running_var holds a negative variance"):
        net.load_state_dict(state)


# -- intermediate outputs ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path, layer", [("lenet5.json", "conv2"), ("lenet5.json", "fc3"),
                                         ("resnet_block.json", "res.1.add"), ("resnet_block.json", "merged")])
def test_intermediate_outputs_equal_the_truncated_network(path, layer):
    net = Network.from_json(ROOT / "examples" / path, seed=2)
    x = np.random.default_rng(0).standard_normal((2, *net.input_shape)).astype(np.float32)
    names = [n.name for n in net.nodes]
    truncated = Network.from_config({**net.config, "layers": net.config["layers"][:names.index(layer) + 1]})
    truncated.load_state_dict(net.state_dict(), strict=False)
    first = names[1]
    outputs = net.forward(x, outputs=[layer, first])
    assert list(outputs) == [layer, first]
    np.testing.assert_array_equal(outputs[layer], truncated.forward(x))
    np.testing.assert_array_equal(outputs[first], net.forward(x, outputs=first)[first])


def test_unknown_output_names_are_an_error_and_backward_needs_a_full_forward(lenet5):
    x = np.zeros((1, 1, 28, 28), np.float32)
    with pytest.raises(CnnrunError, match=r"lenet5: forward\(outputs=...\) names 'fc4', which is no layer "
                                          r"\(did you mean 'fc3'\?\)"):
        lenet5.forward(x, outputs=["conv1", "fc4"])
    lenet5.forward(x, outputs=["conv1"], training=True)
    with pytest.raises(CnnrunError, match="backward\\(\\) needs a forward\\(\\) first"):
        lenet5.backward(np.zeros((1, 10), np.float32))


# -- frozen layers ---------------------------------------------------------------------------------------------------

FROZEN = {
    "name": "frozen",
    "input": {"shape": [1, 8, 8]},
    "layers": [
        {"name": "conv", "type": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1, "trainable": False},
        {"name": "bn", "type": "batchnorm", "trainable": False},
        {"type": "relu"},
        {"name": "conv2", "type": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1},
        {"name": "bn2", "type": "batchnorm"},
        {"type": "flatten"},
        {"name": "fc", "type": "linear", "out_features": 10},
    ],
    "train": {"data": {"type": "digits"}, "optimizer": {"type": "adam", "lr": 0.01, "weight_decay": 0.1},
              "epochs": 1, "batch_size": 256, "validation_split": 0},
}


def test_layers_frozen_in_json_stay_unchanged_in_training(tmp_path, registries):
    """Adam with weight decay moves every parameter it updates, whatever its gradient."""
    before = Network.from_config(FROZEN).state_dict()  # what train() starts from (the same seed)
    after = train(FROZEN, out=tmp_path / "run", registries=registries).network.state_dict()
    for key in ("conv.weight", "conv.bias", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"):
        np.testing.assert_array_equal(after[key], before[key])  # a frozen batchnorm keeps its statistics too
    for key in ("conv2.weight", "bn2.weight", "bn2.running_mean", "fc.weight"):
        assert not np.array_equal(after[key], before[key]), key


def test_freeze_and_unfreeze(rng, registries):
    net = Network.from_config({**FROZEN, "layers": [{k: v for k, v in layer.items() if k != "trainable"}
                                                     for layer in FROZEN["layers"]]})
    with_random_buffers(net, rng)
    assert net.freeze(["conv", "bn"]) is net
    assert list(net.trainable_params) == ["conv2", "bn2", "fc"]
    optimizer = make_optimizer({"type": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 0.1}, registries.optimizers)
    before = net.state_dict()
    x = rng.standard_normal((16, 1, 8, 8)).astype(np.float32)
    for _ in range(2):
        out = net.forward(x, training=True)
        net.backward(np.ones_like(out) / out.size)
        for layer in ("conv", "bn"):  # their weight gradients are not computed
            assert all(not g.any() for g in net.grads[layer].values()), layer
        optimizer.apply(net.trainable_params, net.grads, 0.1)
    after = net.state_dict()
    for key in ("conv.weight", "conv.bias", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"):
        np.testing.assert_array_equal(after[key], before[key])
    assert not np.array_equal(after["conv2.weight"], before["conv2.weight"])
    np.testing.assert_array_equal(net.forward(x, training=True, outputs="bn")["bn"],
                                  net.forward(x, outputs="bn")["bn"])  # frozen batchnorm: evaluation mode
    net.unfreeze("bn")
    assert list(net.trainable_params) == ["bn", "conv2", "bn2", "fc"]
    net.forward(x, training=True)
    assert not np.array_equal(net.buffers["bn"]["running_mean"], before["bn.running_mean"])
    net.unfreeze()
    assert list(net.trainable_params) == ["conv", "bn", "conv2", "bn2", "fc"]
    with pytest.raises(CnnrunError, match="frozen: freeze names 'bn3', which is no layer"):
        net.freeze(["bn3"])


def test_frozen_layers_still_pass_the_gradient_to_their_input(rng):
    """Freezing changes no input gradient of a layer without running statistics (conv, linear)."""
    config = {**FROZEN, "layers": [FROZEN["layers"][0], FROZEN["layers"][5], FROZEN["layers"][6]]}
    x = rng.standard_normal((3, 1, 8, 8)).astype(np.float32)
    grads = []
    for frozen in (True, False):
        net = Network.from_config(config).unfreeze()
        if frozen:
            net.freeze()
        out = net.forward(x, training=True)
        grads.append(net.backward(np.ones_like(out)))
    np.testing.assert_array_equal(*grads)


def test_training_backward_skips_a_frozen_backbone(rng):
    net = Network.from_config(FROZEN)  # conv and bn frozen; conv2 reads them through a relu
    x = rng.standard_normal((4, 1, 8, 8)).astype(np.float32)
    ran = []

    def timer(name, phase):
        ran.append(name)
        return contextlib.nullcontext()

    out = net.forward(x, training=True)
    net.backward(np.ones_like(out))
    full = {layer: {k: g.copy() for k, g in grads.items()} for layer, grads in net.grads.items()}
    assert net.backward(np.ones_like(out), timer, input_gradient=False) is None
    assert ran == ["fc", "flatten_1", "bn2", "conv2"]
    for layer, grads in full.items():
        for key, grad in grads.items():
            np.testing.assert_array_equal(net.grads[layer][key], grad)


def test_trainable_must_be_a_boolean():
    config = copy.deepcopy(FROZEN)
    config["layers"][0]["trainable"] = "no"
    with pytest.raises(ConfigError, match="conv.*trainable must be true or false; got trainable=\"no\""):
        Network.from_config(config)


def test_frozen_layers_on_cuda(cuda_backend, registries):
    """The CUDA kernels skip a frozen layer's weight gradients (conv, depthwise conv, batchnorm, linear)
    and give the CPU's input gradient."""
    config = {"input": {"shape": [2, 4, 4]}, "layers": [
        {"name": "conv", "type": "conv2d", "out_channels": 2, "kernel_size": 3},
        {"name": "depthwise", "type": "conv2d", "out_channels": 2, "kernel_size": 2, "groups": 2},
        {"name": "bn", "type": "batchnorm"}, {"type": "flatten"},
        {"name": "fc", "type": "linear", "out_features": 4}, {"name": "head", "type": "linear", "out_features": 2}]}
    x = np.random.default_rng(0).standard_normal((2, 2, 4, 4))
    nets = [with_random_buffers(Network.from_config(config, dtype="float64", registry=registries.layers),
                                np.random.default_rng(1)) for _ in range(2)]
    gpu = nets[1].to(cuda_backend)
    grads = []
    for net in nets:
        net.freeze(["conv", "depthwise", "bn", "fc"])
        out = net.forward(x, training=True)
        grads.append(net.backward(np.ones(out.shape)))
    if not isinstance(grads[1], np.ndarray):
        grads[1] = grads[1].copy_to_host()
    np.testing.assert_allclose(grads[1], grads[0], rtol=1e-10, atol=1e-12)
    for layer in ("conv", "depthwise", "bn", "fc"):
        assert all(not cuda_backend.to_host(g).any() for g in gpu.grads[layer].values()), layer
    np.testing.assert_allclose(cuda_backend.to_host(gpu.grads["head"]["weight"]), nets[0].grads["head"]["weight"],
                               rtol=1e-10)
