"""The network: JSON validation, DAG wiring, the Python API, forward/backward bookkeeping."""

import json
from contextlib import contextmanager

import numpy as np
import pytest

from cnnrun.engine import CnnrunError, ConfigError, Layer, LayerRegistry, Network, ShapeError
from cnnrun.engine.gradcheck import check_network_gradients
from cnnrun.engine.options import float_option

LENET = "examples/lenet5.json"


class Scale(Layer):
    """y = x * w (one trained scalar per feature); a throwaway layer for engine tests."""

    type_name = "test_scale"

    def __init__(self, name, init=1.0):
        super().__init__(name)
        self.init = float_option(init, "init")

    def parameter_shapes(self, shape):
        return {"weight": shape}

    def initialize(self, params, buffers, rng):
        params["weight"][...] = self.init + rng.uniform(-0.1, 0.1, params["weight"].shape)

    def forward(self, ctx, x):
        ctx.saved.x = x
        return x * ctx.params["weight"]

    def backward(self, ctx, grad):
        ctx.grads["weight"][...] = (grad * ctx.saved.x).sum(axis=0)
        return grad * ctx.params["weight"]


@pytest.fixture
def reg(registry):
    registry.register(Scale, "tests")
    return registry


def build(layers, shape=(3, 4), reg=None, **kw):
    return Network.from_config({"input": {"shape": list(shape)}, "layers": layers}, registry=reg, **kw)


# -- validation: every error names the layer, the key and the value -------------------------------------

@pytest.mark.parametrize("layers, message", [
    ([{"type": "rleu"}], r"layer 'layers\[0\]': unknown layer type 'rleu' \(did you mean 'relu'\?\)"),
    ([{"name": "a"}], r"layer 'a': missing required key 'type'"),
    ([{"type": "test_scale", "iint": 2.0}], r"layer 'test_scale_1' \(test_scale\): unknown key 'iint' \(did you mean 'init'\?\)"),
    ([{"type": "test_scale", "init": "big"}], r"layer 'test_scale_1' \(test_scale\): init must be a finite number; got init=\"big\""),
    ([{"type": "relu", "name": "a"}, {"type": "relu", "name": "a"}], r"layer 'a' \(relu\): name 'a' is used by an earlier layer"),
    ([{"type": "relu", "name": "input"}], r"the name 'input' is reserved"),
    ([{"type": "relu", "name": ""}], r"name must be a non-empty string"),
    ([{"type": "relu", "inputs": ["b"]}, {"type": "relu", "name": "b"}], r"layer 'relu_1' \(relu\): inputs names 'b', which is not an earlier layer"),
    ([{"type": "relu", "name": "first"}, {"type": "relu", "inputs": ["frist"]}], r"inputs names 'frist', which is no layer \(did you mean 'first'\?\)"),
    ([{"type": "relu", "inputs": 3}], r"inputs must be a list of earlier layer names"),
    ([{"type": "relu", "inputs": ["input", "input"]}], r"layer 'relu_1' \(relu\): takes 1 input\(s\); got inputs=\[\"input\", \"input\"\]"),
    (["relu"], r"layers\[0\] must be a JSON object"),
])
def test_layer_errors_name_layer_key_and_value(reg, layers, message):
    with pytest.raises(ConfigError, match=message):
        build(layers, reg=reg)


@pytest.mark.parametrize("config, message", [
    ({"layers": [{"type": "relu"}]}, r'missing "input"'),
    ({"input": {"shape": [0, 4]}, "layers": [{"type": "relu"}]}, r"input.shape must be a list of 1 to 3 positive integers.*got input.shape=\[0, 4\]"),
    ({"input": {"shape": [1, 2, 3, 4]}, "layers": [{"type": "relu"}]}, r"got input.shape=\[1, 2, 3, 4\]"),
    ({"input": {"shape": [3], "dtype": "x"}, "layers": [{"type": "relu"}]}, r"unknown key 'input.dtype'"),
    ({"input": {"shape": [3]}, "layers": []}, r"'layers' must be a non-empty list"),
    ({"input": {"shape": [3]}, "layer": []}, r"unknown top-level key 'layer' \(did you mean 'layers'\?\)"),
    ([1, 2], r"the network must be a JSON object"),
])
def test_top_level_errors(reg, config, message):
    with pytest.raises(ConfigError, match=message):
        Network.from_config(config, registry=reg)


def test_train_section_is_accepted_and_ignored(reg):
    net = Network.from_config({"input": {"shape": [3]}, "layers": [{"type": "relu"}],
                               "train": {"epochs": 3}}, registry=reg)
    assert net.output_shape == (3,)


def test_from_json_errors_name_the_file(tmp_path, reg):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"input": {"shape": [3]}, "layers": [{"type": "relu", "slope": 1}]}))
    with pytest.raises(ConfigError, match=r"^.*bad\.json: layer 'relu_1' \(relu\): unknown key 'slope'"):
        Network.from_json(bad, registry=reg)
    broken = tmp_path / "broken.json"
    broken.write_text('{"input": {"shape": [3]},\n "layers": [}')
    with pytest.raises(ConfigError, match=r"broken\.json: invalid JSON at line 2 column"):
        Network.from_json(broken, registry=reg)
    with pytest.raises(ConfigError, match=r"missing\.json: file not found"):
        Network.from_json(tmp_path / "missing.json", registry=reg)


# -- names and wiring ---------------------------------------------------------------------------------

def test_default_names_skip_explicit_ones(reg):
    net = build([{"type": "relu", "name": "relu_1"}, {"type": "relu"}, {"type": "tanh"}], reg=reg)
    assert [n.name for n in net.nodes] == ["relu_1", "relu_2", "tanh_1"]


def test_dag_inputs_and_gradient_accumulation(reg):
    """x feeds two branches that are multiplied back together: y = (x*a) * ... checked by gradcheck."""
    layers = [{"type": "test_scale", "name": "a"},
              {"type": "tanh", "name": "t", "inputs": ["input"]},
              {"type": "test_scale", "name": "b", "inputs": ["t"]},
              {"type": "sigmoid", "name": "s", "inputs": ["a"]},
              {"type": "test_scale", "name": "c", "inputs": ["s"]}]
    net = build(layers, shape=(5,), reg=reg, dtype="float64")
    assert [n.inputs for n in net.nodes] == [("input",), ("input",), ("t",), ("a",), ("s",)]
    check_network_gradients(net, batch=3)
    # b does not reach the output (c is last): its gradient is zero, not stale
    assert not net.grads["b"]["weight"].any()


def test_input_used_twice_sums_gradients(reg):
    net = build([{"type": "test_scale", "name": "a"}, {"type": "test_scale", "name": "b", "inputs": ["input"]}],
                shape=(2,), reg=reg, dtype="float64")
    x = np.ones((1, 2))
    net.forward(x)
    dx = net.backward(np.ones((1, 2)))
    # only b reaches the output; the input gradient is b's weight
    np.testing.assert_allclose(dx[0], net.params["b"]["weight"])


def test_backward_without_input_gradient(registry):
    """input_gradient=False: the conv fed by the input is told so and returns None for it, the conv
    after it is not; the parameter gradients are the same as with the input gradient."""
    layers = [{"name": "c1", "type": "conv2d", "out_channels": 4, "kernel_size": 3},
              {"name": "c2", "type": "conv2d", "out_channels": 2, "kernel_size": 3}]
    net = build(layers, shape=(3, 8, 8), reg=registry, dtype="float64")
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8))
    grad = np.random.default_rng(1).standard_normal((2, 2, 4, 4))
    net.forward(x, training=True)
    assert net.backward(grad).shape == x.shape
    expected = {name: {k: v.copy() for k, v in grads.items()} for name, grads in net.grads.items()}
    net.forward(x, training=True)
    assert net.backward(grad, input_gradient=False) is None
    assert not net.contexts["c1"].needs_input_grad and net.contexts["c2"].needs_input_grad
    for name, grads in expected.items():
        for key, value in grads.items():
            np.testing.assert_array_equal(net.grads[name][key], value)
    assert net.nodes[0].layer.backward(net.contexts["c1"], np.ones((2, 4, 6, 6))) is None


# -- the Python API -----------------------------------------------------------------------------------

def test_params_are_float32_writable_in_place(reg):
    net = build([{"type": "test_scale", "name": "s"}], reg=reg)
    w = net.params["s"]["weight"]
    assert w.dtype == np.float32 and w.shape == (3, 4) and w.flags.c_contiguous
    w[...] = 2.0
    y = net.forward(np.ones((2, 3, 4)))
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, 2.0)


def test_initialize_is_seeded(reg):
    a = build([{"type": "test_scale", "name": "s"}], reg=reg)
    b = build([{"type": "test_scale", "name": "s"}], reg=reg)
    np.testing.assert_array_equal(a.params["s"]["weight"], b.params["s"]["weight"])
    b.initialize(seed=1)
    assert not np.array_equal(a.params["s"]["weight"], b.params["s"]["weight"])
    a.initialize(seed=1)
    np.testing.assert_array_equal(a.params["s"]["weight"], b.params["s"]["weight"])


def test_float64_input_is_converted(reg):
    net = build([{"type": "relu"}], reg=reg)
    y = net.forward(np.full((2, 3, 4), -1.5, dtype=np.float64))
    assert y.dtype == np.float32 and y.shape == (2, 3, 4) and not y.any()


@pytest.mark.parametrize("shape", [(3, 4), (2, 4, 3), (2, 3, 4, 1), (0, 3, 4)])
def test_wrong_input_shape_names_expected_shape(reg, shape):
    net = build([{"type": "relu"}], reg=reg)
    with pytest.raises(ShapeError, match=r"expected input of shape \(N, 3, 4\); got "):
        net.forward(np.zeros(shape, np.float32))


def test_backward_needs_forward_and_right_shape(reg):
    net = build([{"type": "relu"}], reg=reg)
    with pytest.raises(CnnrunError, match=r"backward\(\) needs a forward\(\) first"):
        net.backward(np.zeros((2, 3, 4)))
    net.forward(np.zeros((2, 3, 4)))
    with pytest.raises(ShapeError, match=r"backward expected a gradient of shape \(2, 3, 4\); got \(1, 3, 4\)"):
        net.backward(np.zeros((1, 3, 4)))


def test_unknown_device_is_a_clear_error(reg):
    net = build([{"type": "relu"}], reg=reg)
    with pytest.raises(CnnrunError, match=r"unknown device 'tpu'; expected one of: cpu, cuda"):
        net.to("tpu")
    assert net.to("cpu") is net and net.device == "cpu"


def test_timer_wraps_every_layer(reg):
    net = build([{"type": "test_scale", "name": "s"}, {"type": "relu", "name": "r"}], reg=reg)
    seen = []

    @contextmanager
    def timer(name, phase):
        seen.append((name, phase))
        yield

    net.forward(np.ones((2, 3, 4)), training=True, timer=timer)
    net.backward(np.ones((2, 3, 4)), timer=timer)
    assert seen == [("s", "forward"), ("r", "forward"), ("r", "backward"), ("s", "backward")]


def test_layer_config_and_repr(reg):
    net = build([{"type": "leaky_relu", "name": "l", "negative_slope": 0.2}, {"type": "test_scale"}], reg=reg)
    assert net.nodes[0].layer.get_config() == {"type": "leaky_relu", "name": "l", "negative_slope": 0.2}
    assert net.nodes[1].layer.get_config() == {"type": "test_scale", "name": "test_scale_1", "init": 1.0}
    assert repr(net.nodes[0].layer) == "LeakyReLU('l', negative_slope=0.2)"
    assert repr(net.nodes[1].layer) == "Scale('test_scale_1')"


def test_direct_registration_rejects_duplicates():
    registry = LayerRegistry()
    registry.register(Scale, "one")
    with pytest.raises(CnnrunError, match="layer type 'test_scale' is registered by two plugins: 'one' and 'two'"):
        registry.register(Scale, "two")


# -- the whole LeNet-5 --------------------------------------------------------------------------------

def test_lenet5_shapes_params_and_macs(registry):
    net = Network.from_json(LENET, registry=registry)
    rows = {r["name"]: r for r in net.summary()}
    assert net.parameter_count() == 61_706
    assert sum(r["params"] for r in rows.values()) == 61_706
    assert rows["conv1"]["output_shape"] == [6, 28, 28] and rows["conv1"]["macs"] == 6 * 28 * 28 * 25
    assert rows["conv2"]["output_shape"] == [16, 10, 10] and rows["conv2"]["macs"] == 16 * 10 * 10 * 150
    assert rows["fc1"]["macs"] == 400 * 120
    assert net.output_shape == (10,)
    x = np.random.default_rng(0).standard_normal((3, 1, 28, 28)).astype(np.float32)
    y = net.forward(x, training=True)
    assert y.shape == (3, 10) and y.dtype == np.float32
    dx = net.backward(np.ones_like(y))
    assert dx.shape == x.shape
    assert set(net.grads) == {"conv1", "conv2", "fc1", "fc2", "fc3"}
    assert all(np.isfinite(g).all() and g.any() for p in net.grads.values() for g in p.values())


def test_dag_example_gradients(registry):
    net = Network.from_json("examples/resnet_block.json", registry=registry, dtype="float64")
    check_network_gradients(net, batch=2, max_checks=25)
