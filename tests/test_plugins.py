"""The plugin system: the hook, the registry, broken plugins, and the example plugin package.

The example package (examples/plugins/cnnrun-swish) is never pip-installed here: tests import it from
its source tree and register it in a fresh plugin manager, so no other test can see it.
"""

import importlib
import importlib.metadata
import inspect
import json
import re
import sys
from pathlib import Path

import numpy as np
import pluggy
import pytest

import cnnrun
from cnnrun.engine import CnnrunError, ConfigError, Layer, LayerRegistry, Network, PluginError, hookimpl, hookspecs
from cnnrun.engine import make_plugin_manager
from cnnrun.engine.gradcheck import check_layer_gradients, check_network_gradients
from cnnrun.engine.plugins import DEFAULT_PLUGINS, PluginFailure, PluginInfo, Registries, plugin_infos

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "plugins" / "cnnrun-swish"
GUIDE = ROOT / "docs" / "plugins.md"
ACTIVATIONS = ("relu", "leaky_relu", "sigmoid", "tanh", "softmax")


# -- throwaway plugins -------------------------------------------------------------------------
class Scale(Layer):
    """y = factor * x (a throwaway layer type)."""

    type_name = "test_scale"

    def __init__(self, name, factor=2.0):
        super().__init__(name)
        self.factor = factor

    def forward(self, ctx, x):
        return x * self.factor

    def backward(self, ctx, grad):
        return grad * self.factor


class Product(Layer):
    """y = a * b, a two-input throwaway layer type."""

    type_name = "test_product"
    min_inputs = max_inputs = 2

    def output_shape(self, a, b):
        if a != b:
            raise self.error(f"inputs must have the same shape; got {a} and {b}", key="inputs")
        return a

    def forward(self, ctx, a, b):
        ctx.saved.a, ctx.saved.b = a, b
        return a * b

    def backward(self, ctx, grad):
        return grad * ctx.saved.b, grad * ctx.saved.a


class ThrowawayPlugin:
    @hookimpl
    def cnnrun_register_layers(self, register):
        register(Scale)
        register(Product)


def registers(*objects):
    """A plugin whose hook registers ``objects``."""

    class Plugin:
        @hookimpl
        def cnnrun_register_layers(self, register):
            for obj in objects:
                register(obj)

    return Plugin()


# -- built-in plugins --------------------------------------------------------------------------
def test_activation_layers_are_registered_by_their_module(registry):
    for type_name in ACTIVATIONS:
        assert registry.providers[type_name] == "cnnrun.plugins.activations"
        assert registry.get(type_name).__module__.startswith("cnnrun.plugins.activations.")


def test_every_builtin_layer_type_comes_from_a_default_plugin(registry):
    assert registry.classes
    for type_name, provider in registry.providers.items():
        assert provider in DEFAULT_PLUGINS
        assert registry.classes[type_name].__module__.startswith(provider)


def test_builtins_go_through_the_hook_like_any_plugin(plugin_manager):
    plugin_manager.unregister(name="cnnrun.plugins.activations")
    registry = LayerRegistry.from_plugin_manager(plugin_manager)
    assert not any(t in registry for t in ACTIVATIONS)
    with pytest.raises(ConfigError, match="unknown layer type 'relu'"):
        registry.get("relu")


# -- registering layer types -------------------------------------------------------------------
def test_a_plugin_class_provides_layers_usable_from_json(plugin_manager, tmp_path):
    plugin_manager.register(ThrowawayPlugin(), name="throwaway")
    registry = LayerRegistry.from_plugin_manager(plugin_manager)
    assert registry.providers["test_scale"] == registry.providers["test_product"] == "throwaway"
    path = tmp_path / "net.json"
    path.write_text(json.dumps({"input": {"shape": [3]}, "layers": [
        {"name": "double", "type": "test_scale"},
        {"name": "triple", "type": "test_scale", "factor": 3.0, "inputs": ["input"]},
        {"type": "test_product", "inputs": ["double", "triple"]},
        {"type": "relu"},
    ]}))
    net = Network.from_json(path, registry=registry, dtype="float64")
    x = np.array([[1.0, -2.0, 0.5]])
    np.testing.assert_array_equal(net.forward(x), np.maximum(6 * x * x, 0))
    np.testing.assert_array_equal(net.backward(np.ones((1, 3))), 12 * x)
    check_network_gradients(net)


def test_plugin_layer_errors_name_the_layer(plugin_manager):
    plugin_manager.register(ThrowawayPlugin(), name="throwaway")
    registry = LayerRegistry.from_plugin_manager(plugin_manager)
    layers = [{"name": "a", "type": "test_scale"}, {"name": "b", "type": "relu", "inputs": ["input"]},
              {"name": "p", "type": "test_product", "inputs": ["a"]}]
    config = {"input": {"shape": [3]}, "layers": layers}
    with pytest.raises(ConfigError, match=r"layer 'p' \(test_product\): takes 2 input\(s\); got inputs=\[\"a\"\]"):
        Network.from_config(config, registry=registry)
    layers[1]["type"] = "test_scal"
    with pytest.raises(ConfigError, match="unknown layer type 'test_scal' \\(did you mean 'test_scale'\\?\\)"):
        Network.from_config(config, registry=registry)


def skipped_with_warning(pm, match, build=LayerRegistry.from_plugin_manager):
    """``build(pm)`` after checking that it warns once, matching ``match`` (a regular expression)."""
    with pytest.warns(UserWarning, match=match) as caught:
        built = build(pm)
    assert len(caught) == 1, [str(w.message) for w in caught]
    return built


def test_two_plugins_registering_one_type_name_keep_the_first_and_warn_naming_both(plugin_manager):
    class OtherScale(Scale):
        pass

    plugin_manager.register(registers(Scale), name="first-plugin")
    plugin_manager.register(registers(OtherScale, Product), name="second-plugin")
    registry = skipped_with_warning(plugin_manager, re.escape(
        "layer type 'test_scale' is registered by two plugins: 'first-plugin' and 'second-plugin'; "
        "plugin 'second-plugin' skipped"))
    assert registry.get("test_scale") is Scale and registry.providers["test_scale"] == "first-plugin"
    assert "test_product" not in registry  # the second plugin is skipped whole
    assert [f.name for f in registry.failures] == ["second-plugin"]
    assert "'first-plugin' and 'second-plugin'" in registry.failures[0].error
    with pytest.raises(PluginError, match="'first-plugin' and 'second-plugin'"):
        LayerRegistry.from_plugin_manager(plugin_manager, strict=True)


def test_a_plugin_taking_a_builtin_type_name_is_skipped_and_the_builtin_kept(plugin_manager):
    class MyReLU(Scale):
        type_name = "relu"

    plugin_manager.register(registers(MyReLU), name="my-relu")
    registry = skipped_with_warning(plugin_manager, re.escape(
        "layer type 'relu' is registered by two plugins: 'cnnrun.plugins.activations' and 'my-relu'"))
    assert registry.providers["relu"] == "cnnrun.plugins.activations" and registry.get("relu") is not MyReLU
    net = Network.from_config({"input": {"shape": [2]}, "layers": [{"type": "relu"}]}, registry=registry)
    np.testing.assert_array_equal(net.forward(np.array([[-1.0, 2.0]])), [[0.0, 2.0]])


def test_a_plugin_registering_one_type_twice_is_skipped(plugin_manager):
    plugin_manager.register(registers(Scale, Scale), name="twice")
    registry = skipped_with_warning(plugin_manager, "plugin 'twice' registered layer type 'test_scale' twice")
    assert "test_scale" not in registry


class NoTypeName(Layer):
    pass


BAD_REGISTRATIONS = [
    (dict, "registered <class 'dict'>, which is not a Layer subclass"),
    (Scale("an_instance"), "registered Scale\\('an_instance'\\), which is not a Layer subclass"),
    ("relu", "registered 'relu', which is not a Layer subclass"),
    (NoTypeName, "registered NoTypeName without a type_name"),
]


@pytest.mark.parametrize("obj, message", BAD_REGISTRATIONS)
def test_registering_something_else_than_a_layer_class_skips_the_plugin(plugin_manager, obj, message):
    plugin_manager.register(registers(Product, obj), name="odd-plugin")
    registry = skipped_with_warning(plugin_manager, "plugin 'odd-plugin' " + message + "; plugin 'odd-plugin' skipped")
    assert "test_product" not in registry and "relu" in registry
    assert registry.failures[0].name == "odd-plugin"
    with pytest.raises(PluginError, match="plugin 'odd-plugin' " + message):
        LayerRegistry.from_plugin_manager(plugin_manager, strict=True)


def test_a_hook_that_raises_skips_the_plugin_naming_it(plugin_manager):
    class Raising:
        @hookimpl
        def cnnrun_register_layers(self, register):
            register(Scale)
            raise RuntimeError("boom")

    plugin_manager.register(Raising(), name="raising")
    message = "plugin 'raising' failed in cnnrun_register_layers: RuntimeError: boom"
    registry = skipped_with_warning(plugin_manager, re.escape(message + "; plugin 'raising' skipped"))
    assert "test_scale" not in registry and "conv2d" in registry
    with pytest.raises(PluginError, match=re.escape(message)):
        LayerRegistry.from_plugin_manager(plugin_manager, strict=True)


def test_strict_mode_of_the_plugin_manager_is_the_default_of_its_registries():
    pm = make_plugin_manager(load_entrypoints=False, strict=True)
    pm.register(registers(dict), name="odd-plugin")
    with pytest.raises(PluginError, match="plugin 'odd-plugin' registered <class 'dict'>"):
        Registries.from_plugin_manager(pm)
    with pytest.warns(UserWarning, match="odd-plugin"):
        assert Registries.from_plugin_manager(pm, strict=False).failures[0].name == "odd-plugin"


def test_a_plugin_failing_in_one_hook_is_left_out_of_every_registry(plugin_manager):
    class HalfBroken:
        @hookimpl
        def cnnrun_register_layers(self, register):
            register(Scale)

        @hookimpl
        def cnnrun_register_optimizers(self, register):
            register(Scale)  # not an Optimizer

    plugin_manager.register(HalfBroken(), name="half-broken")
    registries = skipped_with_warning(plugin_manager, "plugin 'half-broken' registered <class '.*Scale'>, "
                                      "which is not a Optimizer subclass", build=Registries.from_plugin_manager)
    assert "test_scale" not in registries.layers and "sgd" in registries.optimizers
    assert [f.name for f in registries.failures] == ["half-broken"]
    infos = plugin_infos(plugin_manager, registries)
    assert "half-broken" not in [i.name for i in infos] and infos[0].name == DEFAULT_PLUGINS[0]


def test_check_pending_catches_a_misspelled_hookimpl_and_suggests_the_hook(plugin_manager):
    class Misspelled:
        @hookimpl
        def cnnrun_register_layer(self, register):  # the hook is cnnrun_register_layers
            register(Scale)

    plugin_manager.register(Misspelled(), name="misspelled")
    with pytest.raises(pluggy.PluginValidationError, match=r"unknown hook 'cnnrun_register_layer' .*"
                                                           r"\(did you mean 'cnnrun_register_layers'\?\)"):
        plugin_manager.check_pending()


# -- installed (entry-point) plugins ---------------------------------------------------------------
def install(monkeypatch, *entry_points):
    """Make ``importlib.metadata.entry_points``, which make_plugin_manager reads, return these."""
    installed = importlib.metadata.EntryPoints(entry_points)
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda **params: installed.select(**params))


@pytest.fixture
def broken_plugin(tmp_path, monkeypatch):
    """An installed plugin whose module fails to import (a dependency is missing)."""
    (tmp_path / "cnnrun_broken.py").write_text("import cnnrun_missing_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    install(monkeypatch, importlib.metadata.EntryPoint(name="cnnrun-broken", value="cnnrun_broken",
                                                       group="cnnrun"))
    return "ModuleNotFoundError: No module named 'cnnrun_missing_dependency'"


def test_a_plugin_that_fails_to_import_is_a_warning_and_skipped(broken_plugin):
    with pytest.warns(UserWarning) as caught:
        pm = make_plugin_manager()
    assert [str(w.message) for w in caught if "failed to load" in str(w.message)] == [
        f"plugin 'cnnrun-broken' (cnnrun_broken) failed to load: {broken_plugin}"]
    assert pm.failures == [PluginFailure("cnnrun-broken", broken_plugin)]
    registry = LayerRegistry.from_plugin_manager(pm)
    assert Network.from_config({"input": {"shape": [2]}, "layers": [{"type": "relu"}]}, registry=registry)
    assert "cnnrun-broken" not in [info.name for info in plugin_infos(pm, Registries.from_plugin_manager(pm))]


def test_strict_mode_makes_a_failed_import_an_error(broken_plugin):
    with pytest.raises(PluginError, match=re.escape(f"plugin 'cnnrun-broken' (cnnrun_broken) failed to load: "
                                                    f"{broken_plugin}")):
        make_plugin_manager(strict=True)


@pytest.mark.parametrize("source, error", [
    ("def cnnrun_register_layer(register):\n    pass\n",
     "unknown hook 'cnnrun_register_layer' in plugin <module 'cnnrun_badhook' from "),
    ("def cnnrun_register_layer(register):\n    pass\n", "(did you mean 'cnnrun_register_layers'?)"),
    ("def cnnrun_register_layers(add):\n    pass\n", "Argument(s) {'add'} are declared in the hookimpl but can not be found in the hookspec"),
])
def test_an_installed_plugin_with_a_bad_hook_is_a_warning_and_skipped(tmp_path, monkeypatch, source, error):
    (tmp_path / "cnnrun_badhook.py").write_text("from cnnrun.engine import hookimpl\n\n@hookimpl\n" + source)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "cnnrun_badhook", raising=False)  # each case imports its own file
    install(monkeypatch, importlib.metadata.EntryPoint(name="cnnrun-badhook", value="cnnrun_badhook",
                                                       group="cnnrun"))
    with pytest.warns(UserWarning, match=r"plugin 'cnnrun-badhook' \(cnnrun_badhook\) failed to load: "
                                          r"PluginValidationError: .*" + re.escape(error)):
        pm = make_plugin_manager()
    assert pm.get_plugin("cnnrun-badhook") is None and [f.name for f in pm.failures] == ["cnnrun-badhook"]
    pm.check_pending()  # the manager is left in a clean state
    with pytest.raises(PluginError, match="cnnrun-badhook"):
        make_plugin_manager(strict=True)
    sys.modules.pop("cnnrun_badhook", None)


@pytest.fixture
def installed_relu_plugin(tmp_path, monkeypatch):
    """An installed plugin that registers a second ``relu`` (and a layer type of its own)."""
    (tmp_path / "cnnrun_relu2.py").write_text(
        "from cnnrun.engine import Layer, hookimpl\n\n"
        "class ReLU(Layer):\n    type_name = 'relu'\n\n"
        "class Mine(Layer):\n    type_name = 'mine'\n\n"
        "@hookimpl\ndef cnnrun_register_layers(register):\n    register(Mine)\n    register(ReLU)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    install(monkeypatch, importlib.metadata.EntryPoint(name="cnnrun-relu2", value="cnnrun_relu2", group="cnnrun"))
    yield "layer type 'relu' is registered by two plugins: 'cnnrun.plugins.activations' and 'cnnrun-relu2'"
    sys.modules.pop("cnnrun_relu2", None)


def test_the_cli_works_on_with_a_plugin_that_registers_a_builtin_type(installed_relu_plugin):
    from click.testing import CliRunner

    from cnnrun.cli.main import cli

    runner = CliRunner()
    listed = runner.invoke(cli, ["plugins"])
    assert listed.exit_code == 0, listed.output
    assert f"Warning: {installed_relu_plugin}; plugin 'cnnrun-relu2' skipped" in listed.stderr
    assert re.search(r"^cnnrun-relu2 +FAILED +" + re.escape(installed_relu_plugin), listed.stdout, re.M)
    assert "cnnrun.plugins.activations" in listed.stdout and "mine" not in listed.stdout
    report = json.loads(runner.invoke(cli, ["plugins", "--format", "json"]).stdout)
    assert report["failed"] == [{"name": "cnnrun-relu2", "error": installed_relu_plugin}]
    described = runner.invoke(cli, ["describe", str(ROOT / "examples" / "lenet5.json")])
    assert described.exit_code == 0 and "relu" in described.stdout, described.output
    strict = runner.invoke(cli, ["--strict-plugins", "describe", str(ROOT / "examples" / "lenet5.json")])
    assert strict.exit_code == 1 and strict.stderr.strip() == f"Error: {installed_relu_plugin}"


def test_load_entrypoints_false_ignores_installed_plugins(broken_plugin):
    pm = make_plugin_manager(load_entrypoints=False)
    assert pm.failures == [] and pm.get_plugin("cnnrun-broken") is None


# -- the example plugin package ----------------------------------------------------------------
@pytest.fixture
def swish_module(monkeypatch):
    """The example plugin's module, imported from its source tree."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    yield importlib.import_module("cnnrun_swish")
    for name in ("cnnrun_swish", "cnnrun_swish_cpu", "cnnrun_swish_cuda"):
        sys.modules.pop(name, None)


@pytest.fixture
def swish_registry(plugin_manager, swish_module):
    """The built-in layer types and the example plugin's."""
    plugin_manager.register(swish_module, name="cnnrun-swish")
    return LayerRegistry.from_plugin_manager(plugin_manager)


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def test_example_layers_run_forward_and_backward(swish_registry):
    assert swish_registry.providers["swish"] == swish_registry.providers["channel_scale"] == "cnnrun-swish"
    config = {"input": {"shape": [2, 3, 3]}, "layers": [
        {"type": "swish", "beta": 2.0},
        {"name": "scale", "type": "channel_scale", "init": [0.5, -3.0]},
    ]}
    net = Network.from_config(config, registry=swish_registry)
    np.testing.assert_array_equal(net.params["scale"]["weight"], [0.5, -3.0])
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 2, 3, 3))
    dy = rng.standard_normal((4, 2, 3, 3))
    w = np.array([0.5, -3.0]).reshape(2, 1, 1)
    s = sigmoid(2 * x)
    y = net.forward(x)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, x * s * w, rtol=1e-5, atol=1e-6)
    dx = net.backward(dy)
    assert dx.dtype == net.grads["scale"]["weight"].dtype == np.float32
    np.testing.assert_allclose(net.grads["scale"]["weight"], np.sum(dy * x * s, axis=(0, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(dx, dy * w * (s + 2 * x * s * (1 - s)), rtol=1e-5, atol=1e-6)


def test_example_swish_exports_to_onnx_and_channel_scale_is_refused(swish_registry, tmp_path):
    """docs/plugins.md, Exporting to ONNX: swish's to_onnx, and the error for a layer without one."""
    from onnx.reference import ReferenceEvaluator

    from cnnrun.engine.onnx import export_onnx

    config = {"name": "tiny", "input": {"shape": [2, 3, 3]}, "layers": [{"type": "swish", "beta": 2.0}]}
    net = Network.from_config(config, registry=swish_registry)
    export_onnx(net, tmp_path / "swish.onnx")
    x = np.random.default_rng(0).standard_normal((2, 2, 3, 3)).astype(np.float32)
    got = ReferenceEvaluator(str(tmp_path / "swish.onnx")).run(None, {"input": x})[0]
    np.testing.assert_allclose(got, x * sigmoid(2 * x), rtol=1e-5, atol=1e-6)
    config["layers"].append({"type": "channel_scale"})
    with pytest.raises(CnnrunError) as error:
        export_onnx(Network.from_config(config, registry=swish_registry), tmp_path / "scale.onnx")
    assert f"Error: {error.value}" in GUIDE.read_text(encoding="utf-8")


@pytest.mark.parametrize("layer, input_shape", [
    ({"type": "swish"}, (3, 5)),
    ({"type": "swish", "beta": 0.5}, (2, 3, 3)),
    ({"type": "channel_scale"}, (4,)),
    ({"type": "channel_scale", "init": [0.5, -1.0, 2.0]}, (3, 5)),
    ({"type": "channel_scale", "init": -0.25}, (2, 3, 3)),
])
def test_example_layer_gradients(swish_registry, layer, input_shape):
    check_layer_gradients(layer, input_shape, registry=swish_registry)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype, tol", [("float32", dict(rtol=2e-6, atol=1e-6)), ("float64", dict(rtol=1e-13, atol=1e-14))])
def test_example_swish_runs_on_cuda_through_its_kernels(swish_registry, cuda_backend, dtype, tol):
    """The plugin's CUDA kernels (Numba's simulator without a GPU; 32 threads x 2 blocks, so the
    grid-stride loop runs) give the CPU kernels' output and input gradient."""
    config = {"input": {"shape": [2, 3, 5]}, "layers": [{"type": "swish", "beta": 1.5}]}
    cpu = Network.from_config(config, registry=swish_registry, dtype=dtype)
    gpu = Network.from_config(config, registry=swish_registry, dtype=dtype).to("cuda")
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((3, 2, 3, 5)) * 4).astype(dtype)  # 90 values
    x[0, 0, 0, :3] = [0.0, 60.0, -60.0]
    y = gpu.forward(x, training=True)
    assert gpu.device == "cuda" and not isinstance(y, np.ndarray)
    np.testing.assert_allclose(gpu.backend.to_host(y), cpu.forward(x, training=True), **tol)
    grad = rng.standard_normal(x.shape).astype(dtype)
    np.testing.assert_allclose(gpu.backend.to_host(gpu.backward(grad)), cpu.backward(grad), **tol)


@pytest.mark.cuda
def test_example_numpy_layer_is_refused_on_cuda(swish_registry, cuda_backend):
    net = Network.from_config({"name": "tiny", "input": {"shape": [2, 3]},
                               "layers": [{"type": "swish"}, {"type": "channel_scale"}]}, registry=swish_registry)
    with pytest.raises(CnnrunError, match=r"^tiny: no cuda implementation for layer\(s\) 'channel_scale_1' "
                                          r"\(channel_scale\); 'channel_scale_1' needs NumPy arrays; "):
        net.to("cuda")
    assert net.device == "cpu"


@pytest.mark.parametrize("layer, message", [
    ({"type": "swish", "beta": 0}, "layer 'swish_1' (swish): beta must be in (0, "),
    ({"type": "swish", "alpha": 1}, "layer 'swish_1' (swish): unknown key 'alpha'; swish accepts: beta"),
    ({"type": "channel_scale", "init": "one"}, "(channel_scale): init must be a finite number; got init=\"one\""),
    ({"type": "channel_scale", "init": [1, 2]},
     "(channel_scale): init must be one number or a list of 3 (one per channel); "
     "got 2 values for input shape (3, 4)"),
])
def test_example_layer_options_are_checked(swish_registry, layer, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as info:
        Network.from_config({"input": {"shape": [3, 4]}, "layers": [layer]}, registry=swish_registry)
    assert info.value.key in layer


def test_example_layer_config_and_repr(swish_registry):
    net = Network.from_config({"input": {"shape": [3, 4]}, "layers": [
        {"type": "swish"}, {"type": "swish", "beta": 2}, {"type": "channel_scale"}]}, registry=swish_registry)
    first, second, scale = (node.layer for node in net.nodes)
    assert first.get_config() == {"type": "swish", "name": "swish_1", "beta": 1.0}
    assert (repr(first), repr(second)) == ("Swish('swish_1')", "Swish('swish_2', beta=2)")
    assert scale.get_config() == {"type": "channel_scale", "name": "channel_scale_1", "init": 1.0}
    assert net.summary()[2]["params"] == 3


def test_plugin_infos_lists_the_example_plugin(plugin_manager, swish_registry):
    infos = {info.name: info for info in plugin_infos(plugin_manager, Registries.from_plugin_manager(plugin_manager))}
    assert infos["cnnrun-swish"] == PluginInfo("cnnrun-swish", None, ["channel_scale", "swish"])
    activations = infos["cnnrun.plugins.activations"]
    assert activations.version == cnnrun.__version__
    assert set(ACTIVATIONS) <= set(activations.layer_types)
    assert list(infos)[:len(DEFAULT_PLUGINS)] == list(DEFAULT_PLUGINS)
    assert infos["cnnrun.plugins.data"].data_sources == ["digits", "idx", "npz"]
    assert infos["cnnrun.plugins.optimizers"].optimizers == ["adam", "adamw", "sgd"]


def read_pyproject():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    return tomllib.loads((EXAMPLE / "pyproject.toml").read_text(encoding="utf-8"))


def test_example_pyproject_declares_the_entry_point():
    project = read_pyproject()["project"]
    assert project["entry-points"] == {"cnnrun": {"cnnrun-swish": "cnnrun_swish"}}
    assert any(re.match(r"cnnrun\b", dep) for dep in project["dependencies"])


def test_the_installed_example_is_found_through_its_entry_point(tmp_path, monkeypatch, swish_module):
    """As ``pip install`` would leave it: a .dist-info with the pyproject's entry points."""
    project = read_pyproject()["project"]
    dist_info = tmp_path / f"cnnrun_swish-{project['version']}.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\n"
                                        f"Version: {project['version']}\n")
    (dist_info / "entry_points.txt").write_text(
        "[cnnrun]\n" + "".join(f"{k} = {v}\n" for k, v in project["entry-points"]["cnnrun"].items()))
    install(monkeypatch, *importlib.metadata.PathDistribution(dist_info).entry_points)
    pm = make_plugin_manager()
    assert pm.get_plugin("cnnrun-swish") is swish_module
    infos = plugin_infos(pm, Registries.from_plugin_manager(pm))
    assert infos[-1] == PluginInfo("cnnrun-swish", project["version"], ["channel_scale", "swish"])


# -- the guide ---------------------------------------------------------------------------------
def test_guide_excerpts_match_the_example_package():
    """Every code block of docs/plugins.md that starts with ``# <file>`` is a verbatim part of that file,
    after the imports it repeats from the top of the file (so that each snippet shows its imports)."""
    blocks = re.findall(r"```(?:python|toml)\n# ([\w.]+)\n(.*?)```", GUIDE.read_text(encoding="utf-8"), re.S)
    assert {file for file, _ in blocks} == {"cnnrun_swish.py", "cnnrun_swish_cpu.py", "pyproject.toml"}
    for file, excerpt in blocks:
        source = (EXAMPLE / file).read_text(encoding="utf-8")
        imports = re.match(r"(?:(?:import |from )[^\n]*\n|\n)*", excerpt).group(0) if file.endswith(".py") else ""
        for line in imports.splitlines():
            assert not line or re.search(rf"^{re.escape(line)}", source, re.M) or \
                line.startswith("from ") and line.split(" import ")[0] in source, f"{file} has no {line!r}"
        assert excerpt[len(imports):] in source, f"docs/plugins.md is out of date with {file}"


def test_guide_documents_every_hook():
    guide = GUIDE.read_text(encoding="utf-8")
    hooks = [name for name, f in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("cnnrun_")]
    assert hooks
    for hook in hooks:
        assert f"{hook}(" in guide
