"""Devices and kernels: a layer written once runs on any registered device through its kernels.

A third device ("cpu_checked", tests/checked_device.py) is registered through the hook and runs
LeNet-5 without any layer knowing of it; kernels registered per device and operation by plugins;
the errors for a missing kernel, an unknown device and a duplicate kernel; the CLI's --device
choices come from the registry; no class defines a device-named method.
"""

import ast
import importlib.metadata
import re
from pathlib import Path

import numpy as np
import pytest

import checked_device
from cnnrun.cli.main import cli
from cnnrun.engine import CnnrunError, Layer, Network, PluginError, hookimpl, make_plugin_manager
from cnnrun.engine.batch_loss import BatchLoss
from cnnrun.engine.optim import make_optimizer
from cnnrun.engine.plugins import Registries

ROOT = Path(__file__).resolve().parent.parent
LENET = ROOT / "examples" / "lenet5.json"


@pytest.fixture
def registries():
    """The built-in plugins and the cpu_checked device."""
    pm = make_plugin_manager(load_entrypoints=False)
    pm.register(checked_device, name="checked-device")
    return Registries.from_plugin_manager(pm)


def train_step(net, optimizer, x, labels):
    """One SGD step: ``(loss, output, input gradient, parameters and gradients as host copies)``."""
    output = net.forward(x, training=True)
    loss, _, grad, _ = BatchLoss(net, "cross_entropy")(output, labels)
    dx = BatchLoss(net, "cross_entropy").backward(net, grad)
    grads = {f"{k}.{n}": net.backend.to_host(a) for k, arrays in net.grads.items() for n, a in arrays.items()}
    optimizer.apply(net.params, net.grads, 0.05)
    params = {f"{k}.{n}": net.backend.to_host(a) for k, arrays in net.params.items() for n, a in arrays.items()}
    return loss, net.backend.to_host(output), net.backend.to_host(dx), grads, params


def test_a_third_device_runs_lenet5_like_the_cpu(registries):
    """LeNet-5 forward, backward and an SGD step on "cpu_checked" equal the CPU's, bit for bit, and
    every kernel call went through the device's argument checks."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 1, 28, 28)).astype(np.float32)
    labels = rng.integers(0, 10, 4)
    checked_device.CheckedCpu.calls.clear()
    results = []
    for device in ("cpu", "cpu_checked"):
        net = Network.from_json(LENET, registry=registries.layers).to(device)
        optimizer = make_optimizer({"type": "sgd", "lr": 0.05, "momentum": 0.9}, registries.optimizers)
        optimizer.to(net.backend)
        assert net.device == device and optimizer.device.name == device
        results.append([train_step(net, optimizer, x, labels) for _ in range(2)])
    for (cpu_loss, *cpu_arrays), (loss, *arrays) in zip(*results):
        assert loss == cpu_loss
        for expected, got in zip(cpu_arrays, arrays):
            if isinstance(expected, dict):
                assert expected.keys() == got.keys()
                for key in expected:
                    np.testing.assert_array_equal(got[key], expected[key], err_msg=key)
            else:
                np.testing.assert_array_equal(got, expected)
    calls = checked_device.CheckedCpu.calls
    assert {"conv2d_forward", "conv2d_backward", "max_pool_forward", "max_pool_backward", "relu_forward",
            "relu_backward", "linear_forward", "linear_backward", "cross_entropy", "sgd_update"} <= set(calls)
    assert calls["conv2d_forward"] == 2 * 2 and calls["sgd_update"] == 2 * 10  # 2 steps; 10 parameters


def test_the_checks_of_the_third_device_catch_bad_arguments(registries):
    device = registries.devices.open("cpu_checked")
    with pytest.raises(checked_device.KernelArgumentError, match="relu_forward: an argument of shape .* not C-contiguous"):
        device.kernels.relu_forward(np.ones((4, 4), np.float32)[:, ::2])
    with pytest.raises(checked_device.KernelArgumentError, match=r"relu_backward: mixed dtypes"):
        device.kernels.relu_backward(np.ones(3, np.float32), np.ones(3, np.float64))


# -- kernels from plugins --------------------------------------------------------------------------
class Double(Layer):
    """y = 2 x through its own kernel "double_forward" (and "double_backward")."""

    type_name = "double"
    kernels = ("double_forward", "double_backward")

    def forward(self, ctx, x):
        return ctx.kernels.double_forward(x)

    def backward(self, ctx, grad):
        return ctx.kernels.double_backward(grad)


class DoublePlugin:
    """A plugin with a layer and its CPU kernels (the module ``double_kernels`` below)."""

    @hookimpl
    def cnnrun_register_layers(self, register):
        register(Double)

    @hookimpl
    def cnnrun_register_kernels(self, register):
        register("cpu", "double_kernels")


@pytest.fixture
def double_registries(tmp_path, monkeypatch):
    (tmp_path / "double_kernels.py").write_text(
        "KERNELS = {'double_forward': lambda x: 2 * x, 'double_backward': lambda g: 2 * g}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    pm = make_plugin_manager(load_entrypoints=False)
    pm.register(DoublePlugin(), name="double")
    pm.register(checked_device, name="checked-device")
    return Registries.from_plugin_manager(pm)


def test_a_plugin_brings_kernels_for_its_own_layer(double_registries):
    config = {"name": "net", "input": {"shape": [3]}, "layers": [{"type": "double"}, {"type": "relu"}]}
    for device in ("cpu", "cpu_checked"):  # cpu_checked takes the CPU's kernels, the plugin's too
        net = Network.from_config(config, registry=double_registries.layers).to(device)
        np.testing.assert_array_equal(net.forward(np.array([[1.0, -2.0, 3.0]])), [[2, 0, 6]])
        np.testing.assert_array_equal(net.backward(np.ones((1, 3))), [[2, 0, 2]])


@pytest.mark.cuda
def test_a_missing_kernel_is_named_at_to_before_anything_moves(double_registries, cuda_backend):
    config = {"name": "net", "input": {"shape": [3]},
              "layers": [{"type": "relu"}, {"type": "double", "name": "twice"}]}
    net = Network.from_config(config, registry=double_registries.layers)
    weights_before = dict(net.params)
    with pytest.raises(CnnrunError, match=r"^net: no cuda implementation for layer\(s\) 'twice' \(double\); "
                                          r"'twice' needs double_forward, double_backward; run them on another "
                                          r"device or register cuda kernels for them \(cnnrun_register_kernels\)$"):
        net.to("cuda")
    assert net.device == "cpu" and net.params == weights_before


def test_unknown_device_names_the_registered_ones(double_registries):
    net = Network.from_config({"input": {"shape": [3]}, "layers": [{"type": "relu"}]},
                              registry=double_registries.layers)
    with pytest.raises(CnnrunError, match=r"^unknown device 'tpu'; expected one of: cpu, cuda, cpu_checked$"):
        net.to("tpu")


def test_an_operation_registered_twice_for_a_device_names_both_plugins(tmp_path, monkeypatch):
    (tmp_path / "relu_again.py").write_text("KERNELS = {'relu_forward': abs}\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    class Again:
        @hookimpl
        def cnnrun_register_kernels(self, register):
            register("cpu", "relu_again")

    pm = make_plugin_manager(load_entrypoints=False)
    pm.register(Again(), name="again")
    devices = Registries.from_plugin_manager(pm).devices
    with pytest.raises(PluginError, match=r"kernel 'relu_forward' for device 'cpu' is registered by two plugins: "
                                          r"'cnnrun.plugins.activations' and 'again'"):
        devices.open("cpu")


def test_a_kernel_module_that_cannot_be_imported_names_the_plugin():
    class Missing:
        @hookimpl
        def cnnrun_register_kernels(self, register):
            register("cpu", "no_such_kernel_module")

    pm = make_plugin_manager(load_entrypoints=False)
    pm.register(Missing(), name="missing")
    with pytest.raises(PluginError, match=r"plugin 'missing' registered kernels for device 'cpu' in "
                                          r"'no_such_kernel_module', which cannot be imported"):
        Registries.from_plugin_manager(pm).devices.open("cpu")


# -- the command line --------------------------------------------------------------------------------
def test_device_choices_come_from_the_registry(tmp_path, monkeypatch):
    """An installed plugin's device is a --device choice of every command that has the option."""
    from click.testing import CliRunner

    installed = importlib.metadata.EntryPoints([importlib.metadata.EntryPoint(
        name="checked-device", value="checked_device", group="cnnrun")])
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda **params: installed.select(**params))
    runner = CliRunner()
    result = runner.invoke(cli, ["describe", str(LENET), "--device", "cpu_checked"])
    assert result.exit_code == 0, result.output
    for command in ("describe", "train", "eval", "predict", "profile"):
        help_text = runner.invoke(cli, [command, "--help"]).output
        assert "[cpu|cuda|cpu_checked]" in help_text, command
    result = runner.invoke(cli, ["profile", str(LENET), "--device", "tpu"])
    assert result.exit_code == 2
    assert "'tpu' is not one of 'cpu', 'cuda', 'cpu_checked'" in result.output


# -- one implementation per layer --------------------------------------------------------------------
DEVICE_NAMED = re.compile(r"^(forward|backward|update)_\w+$|_(cpu|cuda)$")


def test_no_class_defines_a_device_named_method():
    """forward_cuda, backward_cuda, update_cuda and the like: a layer's or optimizer's math is written
    once; devices bring kernels."""
    offenders = []
    for folder in ("engine", "plugins", "examples"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ClassDef):
                    offenders += [f"{path.relative_to(ROOT)}: {node.name}.{item.name}" for item in node.body
                                  if isinstance(item, (ast.FunctionDef, ast.Assign)) and
                                  any(DEVICE_NAMED.search(name) for name in _names(item))]
    assert offenders == []


def _names(item):
    if isinstance(item, ast.FunctionDef):
        return [item.name]
    return [t.id for t in item.targets if isinstance(t, ast.Name)]


# -- capabilities a layer declares -------------------------------------------------------------------
def test_a_fused_loss_gradient_starts_back_propagation_below_the_last_layer(registries):
    """softmax declares that cross-entropy on its output gives its input's gradient: the network ending
    in softmax gets the same loss and parameter gradients as the one without, trained on logits."""
    fc = {"name": "fc", "type": "linear", "out_features": 4}
    nets = [Network.from_config({"input": {"shape": [5]}, "layers": layers}, registry=registries.layers,
                                dtype="float64") for layers in ([fc, {"type": "softmax"}], [fc])]
    x = np.random.default_rng(1).standard_normal((6, 5))
    labels = np.array([0, 1, 2, 3, 0, 1])
    results = []
    for net in nets:
        loss = BatchLoss(net, "cross_entropy")
        value, _, grad, _ = loss(net.forward(x, training=True), labels)
        dx = loss.backward(net, grad)
        results.append((value, dx, net.grads["fc"]["weight"].copy()))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-12)
    for with_softmax, without in zip(results[0][1:], results[1][1:]):
        np.testing.assert_allclose(with_softmax, without, rtol=1e-10, atol=1e-14)


class Shift(Layer):
    """y = x + shift[c]: a plugin layer that folds into an affine producer (``cnnrun fuse``)."""

    type_name = "shift"

    def parameter_shapes(self, shape):
        return {"shift": (shape[0],)}

    def initialize(self, params, buffers, rng):
        params["shift"][...] = rng.standard_normal(params["shift"].shape)

    def forward(self, ctx, x):
        return x + ctx.params["shift"]

    def backward(self, ctx, grad):
        ctx.grads["shift"][...] = grad.sum(axis=0)
        return grad

    def folds_into(self, producer):
        return producer.affine_output_channels

    def fold_parameters(self, producer_params, params, buffers):
        return {"bias": producer_params["bias"] + params["shift"]}


def test_a_plugin_layer_folds_into_the_layer_before_it_by_its_own_rule():
    from cnnrun.engine.checkpoint import Checkpoint, network_state, restore_network
    from cnnrun.engine.fuse import fuse_network
    from cnnrun.engine.plugins import LayerRegistry

    class ShiftPlugin:
        @hookimpl
        def cnnrun_register_layers(self, register):
            register(Shift)

    pm = make_plugin_manager(load_entrypoints=False)
    pm.register(ShiftPlugin(), name="shift")
    registry = LayerRegistry.from_plugin_manager(pm)
    config = {"input": {"shape": [3]}, "layers": [{"name": "fc", "type": "linear", "out_features": 2},
                                                  {"name": "s", "type": "shift"}, {"type": "relu"},
                                                  {"type": "shift"}]}  # after relu: not foldable
    net = Network.from_config(config, registry=registry)
    net.initialize(3)
    new_config, fused, pairs = fuse_network(config, Checkpoint(*network_state(net), {}, {}), registry)
    assert pairs == [("fc", "s")] and [entry["type"] for entry in new_config["layers"]] == ["linear", "relu", "shift"]
    folded = Network.from_config(new_config, registry=registry)
    restore_network(folded, fused, "the fused checkpoint")
    x = np.random.default_rng(4).standard_normal((5, 3)).astype(np.float32)
    np.testing.assert_allclose(folded.forward(x), net.forward(x), rtol=1e-6, atol=1e-6)
