"""elu, selu, celu, gelu, silu, mish, hardswish, hardsigmoid, hardtanh, relu6, clip, softplus, softsign,
prelu, log_softmax and softmax over an axis: naive references (tests/reference_activations.py),
every option, finite differences, PyTorch's derivatives at the kinks, huge inputs, config errors."""

import re
import warnings

import numpy as np
import pytest

import reference_activations as ref
from cnnrun.engine import ConfigError, Network
from cnnrun.engine.batch_loss import ends_in_softmax
from cnnrun.engine.gradcheck import check_layer_gradients, check_network_gradients

DTYPES = ("float32", "float64")
TOL = {"float32": dict(rtol=1e-6, atol=1e-7), "float64": dict(rtol=1e-13, atol=1e-15)}
SHAPES = [(7,), (3, 5), (2, 3, 3)]  # odd sizes; 1-D, 2-D and 3-D samples
ELEMENTWISE = {  # id -> (JSON layer, reference)
    "elu": ({"type": "elu"}, ref.elu),
    "elu_alpha": ({"type": "elu", "alpha": 0.4}, lambda x: ref.elu(x, 0.4)),
    "selu": ({"type": "selu"}, ref.selu),
    "celu": ({"type": "celu"}, ref.celu),
    "celu_alpha": ({"type": "celu", "alpha": 2.5}, lambda x: ref.celu(x, 2.5)),
    "gelu": ({"type": "gelu"}, ref.gelu),
    "gelu_none": ({"type": "gelu", "approximate": "none"}, ref.gelu),
    "gelu_tanh": ({"type": "gelu", "approximate": "tanh"}, lambda x: ref.gelu(x, "tanh")),
    "silu": ({"type": "silu"}, ref.silu),
    "mish": ({"type": "mish"}, ref.mish),
    "hardswish": ({"type": "hardswish"}, ref.hardswish),
    "hardsigmoid": ({"type": "hardsigmoid"}, ref.hardsigmoid),
    "hardtanh": ({"type": "hardtanh"}, ref.hardtanh),
    "hardtanh_range": ({"type": "hardtanh", "min_val": -0.5, "max_val": 2}, lambda x: ref.hardtanh(x, -0.5, 2)),
    "relu6": ({"type": "relu6"}, ref.relu6),
    "clip": ({"type": "clip", "min": -0.5, "max": 0.8}, lambda x: ref.clip(x, -0.5, 0.8)),
    "clip_min": ({"type": "clip", "min": 0.1}, lambda x: ref.clip(x, 0.1)),
    "clip_max": ({"type": "clip", "max": -0.2}, lambda x: ref.clip(x, None, -0.2)),
    "clip_none": ({"type": "clip"}, ref.clip),
    "softplus": ({"type": "softplus"}, ref.softplus),
    "softplus_beta": ({"type": "softplus", "beta": 2.5, "threshold": 3}, lambda x: ref.softplus(x, 2.5, 3)),
    "softsign": ({"type": "softsign"}, ref.softsign),
}
OVER_AXIS = {  # id -> (JSON layer, input shape, reference)
    "softmax_default": ({"type": "softmax"}, (3, 4, 5), lambda x: ref.softmax(x, 1)),
    "softmax_last": ({"type": "softmax", "axis": -1}, (3, 4, 5), lambda x: ref.softmax(x, 3)),
    "softmax_2": ({"type": "softmax", "axis": 2}, (3, 4, 5), lambda x: ref.softmax(x, 2)),
    "softmax_-2_1d": ({"type": "softmax", "axis": -2}, (3, 5), lambda x: ref.softmax(x, 1)),
    "log_softmax_default": ({"type": "log_softmax"}, (7,), lambda x: ref.log_softmax(x, 1)),
    "log_softmax_default_3d": ({"type": "log_softmax"}, (3, 2, 3), lambda x: ref.log_softmax(x, 1)),
    "log_softmax_last": ({"type": "log_softmax", "axis": -1}, (3, 2, 3), lambda x: ref.log_softmax(x, 3)),
    "log_softmax_2": ({"type": "log_softmax", "axis": 2}, (3, 5), lambda x: ref.log_softmax(x, 2)),
}
PRELU = {  # id -> (JSON layer, input shape, weight (None: the init))
    "one": ({"type": "prelu"}, (3, 4, 5), None),
    "one_init": ({"type": "prelu", "init": -0.3}, (5,), None),
    "per_channel": ({"type": "prelu", "num_parameters": 3}, (3, 4, 5), [0.1, -0.7, 2.0]),
    "per_channel_1d": ({"type": "prelu", "num_parameters": 5}, (5,), [0.2, 0.0, 1.0, -1.5, 0.25]),
    "per_channel_2d": ({"type": "prelu", "num_parameters": 3}, (3, 7), [0.5, 1.5, -0.1]),
}


def network(registry, layer, input_shape, dtype="float64"):
    return Network.from_config({"input": {"shape": list(input_shape)}, "layers": [layer]},
                               registry=registry, dtype=dtype)


def inputs(shape, batch, dtype, seed=8):
    """Random values over many magnitudes (|x| from 1e-3 to 1e30), zeros and the kinks +-3, +-1, 0, 6."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, *shape)) * 10.0 ** rng.integers(-3, 3, (batch, *shape))
    flat = x.reshape(-1)
    specials = [0.0, 3.0, -3.0, 1.0, -1.0, 6.0, 1e30, -1e30, 80.0, -80.0, 1e-3]
    flat[:len(specials)] = specials[:flat.size]
    return x.astype(dtype)


def one_pass(net, x):
    """``net``'s output for ``x``, after checking that forward and backward warn of no overflow or
    invalid value, keep the dtype and shape, and give a finite input gradient."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = net.forward(x, training=True)
        dx = net.backward(np.ones_like(y))
    assert y.dtype == x.dtype == dx.dtype and y.shape == x.shape == dx.shape
    assert np.all(np.isfinite(dx)), f"non-finite gradient for inputs {x[~np.isfinite(dx)]}"
    return y


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ELEMENTWISE)
def test_elementwise_matches_reference(registry, dtype, name):
    layer, reference = ELEMENTWISE[name]
    for shape in SHAPES:
        for batch in (1, 2):
            x = inputs(shape, batch, dtype)
            np.testing.assert_allclose(one_pass(network(registry, layer, shape, dtype), x), reference(x), **TOL[dtype])


@pytest.mark.parametrize("name", ELEMENTWISE)
@pytest.mark.parametrize("shape", [(5,), (2, 3, 3)])
def test_elementwise_gradients(registry, name, shape):
    check_layer_gradients(ELEMENTWISE[name][0], shape, batch=2, registry=registry)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", OVER_AXIS)
def test_over_axis_matches_reference(registry, dtype, name):
    layer, shape, reference = OVER_AXIS[name]
    for batch in (1, 3):
        x = (np.random.default_rng(3).standard_normal((batch, *shape)) * 5).astype(dtype)
        x.reshape(-1)[:2] = [1000.0, -1000.0]  # no overflow
        y = one_pass(network(registry, layer, shape, dtype), x)
        np.testing.assert_allclose(y, reference(x), rtol=TOL[dtype]["rtol"], atol=1e-6 if dtype == "float32" else 1e-12)


@pytest.mark.parametrize("name", OVER_AXIS)
def test_over_axis_gradients(registry, name):
    layer, shape, _ = OVER_AXIS[name]
    check_layer_gradients(layer, shape, batch=2, registry=registry)


def test_log_softmax_is_the_log_of_softmax(registry, rng):
    x = rng.standard_normal((2, 3, 4))
    for axis in (1, 2, -1):
        p = network(registry, {"type": "softmax", "axis": axis}, (3, 4)).forward(x)
        log_p = network(registry, {"type": "log_softmax", "axis": axis}, (3, 4)).forward(x)
        np.testing.assert_allclose(log_p, np.log(p), rtol=1e-13)


def test_only_softmax_over_classes_fuses_cross_entropy(registry):
    assert ends_in_softmax(network(registry, {"type": "softmax"}, (5,)))
    assert ends_in_softmax(network(registry, {"type": "softmax", "axis": -1}, (5,)))
    assert not ends_in_softmax(network(registry, {"type": "softmax", "axis": -1}, (3, 5)))
    assert not ends_in_softmax(network(registry, {"type": "softmax", "axis": 1}, (3, 5)))
    assert not ends_in_softmax(network(registry, {"type": "log_softmax"}, (5,)))
    # the (3, 5) layers above dropped only their own fused loss, not the class's
    assert network(registry, {"type": "softmax"}, (5,)).nodes[-1].layer.fused_loss


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", PRELU)
def test_prelu_matches_reference(registry, dtype, name):
    layer, shape, weight = PRELU[name]
    for batch in (1, 2):
        net = network(registry, layer, shape, dtype)
        stored = net.params[net.nodes[-1].name]["weight"]
        assert stored.shape == (layer.get("num_parameters", 1),)
        np.testing.assert_array_equal(stored, np.asarray(layer.get("init", 0.25), dtype))  # PyTorch's init
        if weight is not None:
            stored[...] = weight
        x = inputs(shape, batch, dtype)
        np.testing.assert_allclose(one_pass(net, x), ref.prelu(x, stored), **TOL[dtype])


@pytest.mark.parametrize("name", PRELU)
def test_prelu_gradients(registry, name):
    layer, shape, weight = PRELU[name]
    config = {"input": {"shape": list(shape)}, "layers": [layer]}
    check_layer_gradients(layer, shape, batch=3, registry=registry)
    if weight is not None:  # and with slopes of both signs, the weight gradient included
        net = Network.from_config(config, registry=registry, dtype="float64")
        net.params[net.nodes[-1].name]["weight"][...] = weight
        check_network_gradients(net, batch=3)


DERIVATIVES_AT_KINKS = [  # PyTorch's backward formulas at the points where the derivative jumps
    ({"type": "elu", "alpha": 0.5}, [0.0], [0.5]),  # x <= 0 branch: alpha * exp(x)
    ({"type": "celu", "alpha": 2.0}, [0.0], [1.0]),
    ({"type": "hardswish"}, [-3.0, 3.0, -3.5, 3.5], [-0.5, 1.5, 0.0, 1.0]),  # x < -3: 0; x <= 3: x/3 + 1/2
    ({"type": "hardsigmoid"}, [-3.0, 3.0, 0.0], [0.0, 0.0, 1 / 6]),  # 1/6 strictly inside (-3, 3)
    ({"type": "hardtanh"}, [-1.0, 1.0, 0.5], [0.0, 0.0, 1.0]),  # 0 at min_val and max_val
    ({"type": "relu6"}, [0.0, 6.0, 3.0], [0.0, 0.0, 1.0]),
    ({"type": "clip", "min": -1, "max": 1}, [-1.0, 1.0, 1.5], [1.0, 1.0, 0.0]),  # clamp: 1 at the bounds
    ({"type": "softplus", "beta": 2, "threshold": 4}, [2.0, 2.5], [1 / (1 + np.exp(-4.0)), 1.0]),
    ({"type": "prelu"}, [0.0, -2.0], [0.25, 0.25]),
    ({"type": "gelu"}, [0.0], [0.5]),
    ({"type": "gelu", "approximate": "tanh"}, [0.0, 1e200, -1e200], [0.5, 1.0, 0.0]),  # no inf * 0
    ({"type": "softsign"}, [1e200], [0.0]),
    ({"type": "mish"}, [-1e300, 1e300], [0.0, 1.0]),
    ({"type": "silu"}, [-1e300, 1e300], [0.0, 1.0]),
]


@pytest.mark.parametrize("layer, x, expected", DERIVATIVES_AT_KINKS,
                         ids=lambda v: str(v) if isinstance(v, dict) else "")
def test_derivatives_follow_pytorch(registry, layer, x, expected):
    net = network(registry, layer, (len(x),))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        net.forward(np.array([x]))
        np.testing.assert_allclose(net.backward(np.ones((1, len(x)))), [expected], rtol=1e-15, atol=0)


@pytest.mark.parametrize("layer, shape, message", [
    ({"type": "hardtanh", "min_val": 2, "max_val": 1}, (3,),
     "layer 'a' (hardtanh): min_val must be less than max_val; got min_val=2, max_val=1"),
    ({"type": "hardtanh", "max_val": -1}, (3,),
     "layer 'a' (hardtanh): min_val must be less than max_val; got min_val=-1.0, max_val=-1"),
    ({"type": "softplus", "beta": 0}, (3,), "layer 'a' (softplus): beta must be in (0, inf); got beta=0"),
    ({"type": "softplus", "beta": -1.5}, (3,), "layer 'a' (softplus): beta must be in (0, inf); got beta=-1.5"),
    ({"type": "softplus", "threshold": "high"}, (3,),
     "layer 'a' (softplus): threshold must be a finite number; got threshold=\"high\""),
    ({"type": "prelu", "num_parameters": 3}, (4, 5, 5),
     "layer 'a' (prelu): num_parameters must be 1 or the channel count (4) of input shape (4, 5, 5); "
     "got num_parameters=3"),
    ({"type": "prelu", "num_parameters": 0}, (4,),
     "layer 'a' (prelu): num_parameters must be >= 1; got num_parameters=0"),
    ({"type": "clip", "min": 1, "max": 0}, (3,),
     "layer 'a' (clip): min must not be greater than max; got min=1, max=0"),
    ({"type": "celu", "alpha": 0}, (3,), "layer 'a' (celu): alpha must not be 0 (celu divides by it); got alpha=0"),
    ({"type": "elu", "alpha": None}, (3,), "layer 'a' (elu): alpha must be a finite number; got alpha=null"),
    ({"type": "gelu", "approximate": "fast"}, (3,),
     "layer 'a' (gelu): approximate must be one of \"none\", \"tanh\"; got approximate=\"fast\""),
    ({"type": "softmax", "axis": 0}, (3, 4),
     "layer 'a' (softmax): axis must be one of the input's axes, 1 to 2 or -2 to -1 (0 is the batch); "
     "got axis=0 for input shape (3, 4)"),
    ({"type": "log_softmax", "axis": -3}, (3, 4),
     "layer 'a' (log_softmax): axis must be one of the input's axes, 1 to 2 or -2 to -1 (0 is the batch); "
     "got axis=-3 for input shape (3, 4)"),
    ({"type": "softmax", "axis": 3}, (3, 4), "got axis=3 for input shape (3, 4)"),
    ({"type": "log_softmax", "axis": 1.0}, (3,), "layer 'a' (log_softmax): axis must be an integer; got axis=1.0"),
], ids=lambda v: v["type"] if isinstance(v, dict) else "")
def test_config_errors_are_one_clear_line(registry, layer, shape, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        network(registry, {**layer, "name": "a"}, shape)
    assert "\n" not in str(err.value)


def test_config_and_repr_show_the_options(registry):
    net = network(registry, {"type": "gelu", "approximate": "tanh"}, (3,))
    layer = net.nodes[-1].layer
    assert layer.get_config() == {"type": "gelu", "name": layer.name, "approximate": "tanh"}
    assert repr(layer) == f"GELU('{layer.name}', approximate=\"tanh\")"
    clip = network(registry, {"type": "clip", "max": 2}, (3,)).nodes[-1].layer
    assert clip.get_config() == {"type": "clip", "name": clip.name, "min": None, "max": 2}
    prelu = network(registry, {"type": "prelu"}, (3,)).nodes[-1].layer
    assert prelu.get_config() == {"type": "prelu", "name": prelu.name, "num_parameters": 1, "init": 0.25}
