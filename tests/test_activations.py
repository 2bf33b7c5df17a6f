"""relu, leaky_relu, sigmoid, tanh, softmax: naive references, finite differences, extreme inputs."""

import re
import warnings

import numpy as np
import pytest

import reference_layers as ref
from cnnrun.engine import ConfigError, Network
from cnnrun.engine.gradcheck import check_layer_gradients

DTYPES = ("float32", "float64")
TOL = {"float32": dict(rtol=1e-6, atol=1e-7), "float64": dict(rtol=1e-14, atol=1e-15)}
SHAPES = [(5,), (3, 4), (2, 3, 3)]
ACTIVATIONS = {  # JSON layer -> reference
    "relu": ({"type": "relu"}, ref.relu),
    "leaky_relu": ({"type": "leaky_relu"}, ref.leaky_relu),
    "leaky_relu_0.2": ({"type": "leaky_relu", "negative_slope": 0.2}, lambda x: ref.leaky_relu(x, 0.2)),
    "sigmoid": ({"type": "sigmoid"}, ref.sigmoid),
    "tanh": ({"type": "tanh"}, ref.tanh),
    "softmax": ({"type": "softmax"}, ref.softmax),
}


def network(registry, layer, input_shape, dtype="float64"):
    return Network.from_config({"input": {"shape": list(input_shape)}, "layers": [layer]},
                               registry=registry, dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ACTIVATIONS)
def test_matches_reference(registry, dtype, name):
    layer, reference = ACTIVATIONS[name]
    rng = np.random.default_rng(8)
    for shape in SHAPES:
        for batch in (1, 3):
            net = network(registry, layer, shape, dtype)
            x = (rng.standard_normal((batch, *shape)) * 3).astype(dtype)
            y = net.forward(x, training=True)
            assert y.dtype == dtype and y.shape == x.shape
            np.testing.assert_allclose(y, reference(x), **TOL[dtype])
            assert net.backward(np.ones_like(y)).dtype == dtype


@pytest.mark.parametrize("name", ACTIVATIONS)
@pytest.mark.parametrize("shape", SHAPES)
def test_gradients(registry, name, shape):
    check_layer_gradients(ACTIVATIONS[name][0], shape, batch=3, registry=registry)


def test_softmax_sums_to_one_over_channels(registry, rng):
    net = network(registry, {"type": "softmax"}, (4, 2, 3))
    y = net.forward(rng.standard_normal((2, 4, 2, 3)))
    np.testing.assert_allclose(y.sum(axis=1), np.ones((2, 2, 3)), rtol=1e-15)


def test_derivative_at_zero_follows_pytorch(registry):
    # PyTorch: relu'(0) = 0 (threshold_backward), leaky_relu'(0) = negative_slope
    x = np.array([[0.0, -1.0, 2.0]])
    for layer, expected in [({"type": "relu"}, [0, 0, 1]),
                            ({"type": "leaky_relu", "negative_slope": 0.1}, [0.1, 0.1, 1])]:
        net = network(registry, layer, (3,))
        net.forward(x)
        np.testing.assert_allclose(net.backward(np.ones((1, 3))), [expected], rtol=1e-15)


@pytest.mark.parametrize("dtype", DTYPES)
def test_extreme_inputs_neither_overflow_nor_nan(registry, dtype):
    x = np.array([[-1000.0, -100.0, 0.0, 100.0, 1000.0]], dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an overflow in exp would warn
        sigmoid = network(registry, {"type": "sigmoid"}, (5,), dtype).forward(x)
        tanh = network(registry, {"type": "tanh"}, (5,), dtype).forward(x)
        softmax = network(registry, {"type": "softmax"}, (5,), dtype).forward(x)
    np.testing.assert_allclose(sigmoid, ref.sigmoid(x).astype(dtype), rtol=1e-6, atol=0)  # 3.7e-44 rounded
    assert sigmoid[0, 0] == 0 and sigmoid[0, 4] == 1
    np.testing.assert_array_equal(tanh, [[-1, -1, 0, 1, 1]])
    np.testing.assert_array_equal(softmax, [[0, 0, 0, 0, 1]])


def test_relu_keeps_nan(registry):
    """NaN and Inf pass through relu (a diverging run is not hidden), forward and backward."""
    net = network(registry, {"type": "relu"}, (4,), "float32")
    y = net.forward(np.array([[np.nan, -np.inf, np.inf, -1.0]], np.float32))
    np.testing.assert_array_equal(y, [[np.nan, 0, np.inf, 0]])
    dx = net.backward(np.array([[1.0, np.nan, np.nan, np.inf]], np.float32))
    np.testing.assert_array_equal(dx, [[0, np.nan, np.nan, np.nan]])


def test_bad_negative_slope(registry):
    message = "layer 'lr' (leaky_relu): negative_slope must be a finite number; got negative_slope=\"steep\""
    with pytest.raises(ConfigError, match=re.escape(message)):
        network(registry, {"type": "leaky_relu", "name": "lr", "negative_slope": "steep"}, (3,))
