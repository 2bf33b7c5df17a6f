"""flatten and linear: against the naive references, finite differences, PyTorch's init and shapes."""

import re

import numpy as np
import pytest

import reference_layers as ref
from cnnrun.engine import ConfigError, Network
from cnnrun.engine.gradcheck import check_layer_gradients, check_network_gradients

DTYPES = ("float32", "float64")
TOL = {"float32": dict(rtol=1e-5, atol=1e-5), "float64": dict(rtol=1e-12, atol=1e-12)}


def network(registry, layers, input_shape, dtype="float64"):
    return Network.from_config({"input": {"shape": list(input_shape)}, "layers": layers},
                               registry=registry, dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(3, 4, 5), (2, 7), (6,)])
@pytest.mark.parametrize("batch", [1, 3])
def test_flatten_matches_reference(registry, rng, dtype, shape, batch):
    net = network(registry, [{"type": "flatten"}], shape, dtype)
    assert net.output_shape == (int(np.prod(shape)),)
    x = rng.standard_normal((batch, *shape)).astype(dtype)
    y = net.forward(x, training=True)
    assert y.dtype == dtype
    np.testing.assert_array_equal(y, ref.flatten(x))
    grad = rng.standard_normal(y.shape).astype(dtype)
    dx = net.backward(grad)
    assert dx.dtype == dtype and dx.shape == x.shape
    np.testing.assert_array_equal(ref.flatten(dx), grad)


def test_flatten_gradients(registry):
    check_layer_gradients({"type": "flatten"}, (2, 3, 4), registry=registry)


def test_linear_matches_reference(registry):
    rng = np.random.default_rng(7)
    for trial in range(16):
        in_features, out_features = int(rng.integers(1, 20)), int(rng.integers(1, 10))
        batch, bias = int(rng.integers(1, 5)), bool(trial % 3)
        dtype = DTYPES[trial % 2]
        net = network(registry, [{"type": "linear", "name": "fc", "out_features": out_features,
                                  "bias": bias}], (in_features,), dtype)
        params = net.params["fc"]
        assert params["weight"].shape == (out_features, in_features)
        assert ("bias" in params) == bias
        x = rng.standard_normal((batch, in_features)).astype(dtype)
        y = net.forward(x)
        assert y.dtype == dtype and y.shape == (batch, out_features)
        np.testing.assert_allclose(y, ref.linear(x, params["weight"], params.get("bias")), **TOL[dtype])

        grad = rng.standard_normal(y.shape).astype(dtype)
        dx = net.backward(grad)
        assert dx.dtype == dtype
        w, g, x64 = params["weight"].astype(np.float64), grad.astype(np.float64), x.astype(np.float64)
        # dx = dy W, dW = dy^T x, db = sum_n dy: each a sum of products, written out
        dx_ref = np.array([[sum(g[n, o] * w[o, i] for o in range(out_features)) for i in range(in_features)]
                           for n in range(batch)])
        dw_ref = np.array([[sum(g[n, o] * x64[n, i] for n in range(batch)) for i in range(in_features)]
                           for o in range(out_features)])
        np.testing.assert_allclose(dx, dx_ref, **TOL[dtype])
        np.testing.assert_allclose(net.grads["fc"]["weight"], dw_ref, **TOL[dtype])
        if bias:
            np.testing.assert_allclose(net.grads["fc"]["bias"], [sum(g[:, o]) for o in range(out_features)],
                                       **TOL[dtype])


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batch", [1, 3])
def test_linear_gradients(registry, bias, batch):
    check_layer_gradients({"type": "linear", "out_features": 4, "bias": bias}, (5,), batch=batch,
                          registry=registry)


def test_flatten_linear_gradients(registry):
    net = network(registry, [{"type": "flatten"}, {"type": "linear", "out_features": 3}], (2, 2, 3))
    check_network_gradients(net, batch=2)


def test_linear_init_is_pytorch_uniform_fan_in(registry):
    net = network(registry, [{"type": "linear", "name": "fc", "out_features": 30}], (50,))
    net.initialize(seed=3)
    draws = np.random.default_rng(3)  # weight first, then bias, both U(-1/sqrt(50), 1/sqrt(50))
    bound = 1 / np.sqrt(50)
    np.testing.assert_array_equal(net.params["fc"]["weight"], draws.uniform(-bound, bound, (30, 50)))
    np.testing.assert_array_equal(net.params["fc"]["bias"], draws.uniform(-bound, bound, (30,)))
    assert np.abs(net.params["fc"]["weight"]).max() <= bound


def test_lenet5_tail_parameters_and_macs(registry):
    layers = [{"type": "flatten"}, {"type": "linear", "out_features": 120}, {"type": "relu"},
              {"type": "linear", "out_features": 84}, {"type": "relu"}, {"type": "linear", "out_features": 10}]
    net = network(registry, layers, (16, 5, 5), "float32")
    assert net.parameter_count() == 400 * 120 + 120 + 120 * 84 + 84 + 84 * 10 + 10
    assert [row["macs"] for row in net.summary()] == [0, 400 * 120, 0, 120 * 84, 0, 84 * 10]
    assert net.forward(np.ones((2, 16, 5, 5), np.float32)).shape == (2, 10)


def test_linear_config(registry):
    net = network(registry, [{"type": "linear", "name": "fc", "out_features": 3, "bias": False}], (4,))
    layer = net.nodes[0].layer
    assert layer.get_config() == {"type": "linear", "name": "fc", "out_features": 3, "bias": False}
    assert repr(layer) == "Linear('fc', out_features=3, bias=false)"


def test_linear_on_3d_input_says_add_flatten(registry):
    message = ("layer 'fc' (linear): expects a 1-D input (in_features,); got input shape (16, 5, 5): "
               'add a "flatten" layer first')
    with pytest.raises(ConfigError, match=re.escape(message)):
        network(registry, [{"type": "linear", "name": "fc", "out_features": 10}], (16, 5, 5))


@pytest.mark.parametrize("options, message", [
    ({"out_features": 0}, "out_features must be >= 1; got out_features=0"),
    ({"out_features": 2.5}, "out_features must be an integer; got out_features=2.5"),
    ({"out_features": 3, "bias": "yes"}, 'bias must be true or false; got bias="yes"'),
])
def test_linear_bad_options(registry, options, message):
    with pytest.raises(ConfigError, match=re.escape(f"layer 'fc' (linear): {message}")):
        network(registry, [{"type": "linear", "name": "fc", **options}], (4,))
