"""Broadcasting add, sub and mul, and scale: against slow references over random shapes, gradients
against finite differences, and one-line shape errors."""

import re

import numpy as np
import pytest

import reference_structure as ref
from cnnrun.engine import ConfigError, Context, Network
from cnnrun.engine.gradcheck import check_float32, check_layer_gradients, check_network_gradients
from cnnrun.engine.plugins import get_backend

OPS = ("add", "sub", "mul")


def random_broadcast_shapes(rng, count):
    """``count`` shapes of one rank (1 to 3) whose dimensions are a common size or 1 (odd sizes)."""
    full = [int(n) for n in rng.choice([1, 2, 3, 5], size=int(rng.integers(1, 4)))]
    return [tuple(n if rng.random() < 0.5 else 1 for n in full) for _ in range(count)]


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_elementwise_matches_reference(registry, op, dtype):
    rng = np.random.default_rng(OPS.index(op))
    layer = registry.get(op).from_config(op, {})
    for _ in range(12):
        count = 2 if op == "sub" else int(rng.integers(2, 5))
        shapes = random_broadcast_shapes(rng, count)
        batch = int(rng.integers(1, 4))
        xs = [rng.standard_normal((batch, *s)).astype(dtype) for s in shapes]
        out_shape = layer.output_shape(*shapes)
        assert out_shape == ref.broadcast_shape(*shapes)
        ctx = Context(backend=get_backend("cpu"))
        y = layer.forward(ctx, *xs)
        assert y.shape == (batch, *out_shape) and y.dtype == dtype
        np.testing.assert_allclose(y, ref.elementwise(op, *xs), rtol=1e-6, atol=1e-6)
        grad = rng.standard_normal(y.shape).astype(dtype)
        grads = layer.backward(ctx, grad)
        assert [g.shape for g in grads] == [x.shape for x in xs] and all(g.dtype == dtype for g in grads)
        for got, expected in zip(grads, ref.elementwise_grads(op, grad, *xs)):
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_add_of_one_shape_is_the_plain_sum_and_hands_dy_through(registry):
    add = registry.get("add").from_config("add", {})
    xs = [np.full((2, 3), v) for v in (1.0, 2.0, 4.0)]
    ctx = Context(backend=get_backend("cpu"))
    np.testing.assert_array_equal(add.forward(ctx, *xs), np.full((2, 3), 7.0))
    grad = np.ones((2, 3))
    assert all(g is grad for g in add.backward(ctx, grad))


def squeeze_excite(op, count=2):
    """x (C, H, W) against a (C, 1, 1) gate and, for three inputs, a (1, H, W) map."""
    layers = [{"type": "global_avgpool", "name": "pool"}, {"type": "sigmoid", "name": "gate"},
              {"type": "conv2d", "name": "map", "out_channels": 1, "kernel_size": 1, "inputs": ["input"]}]
    inputs = ["input", "gate", "map"][:count]
    return layers + [{"type": op, "name": "merge", "inputs": inputs}]


@pytest.mark.parametrize("op, count", [("add", 2), ("add", 3), ("sub", 2), ("mul", 2), ("mul", 3)])
@pytest.mark.parametrize("batch", [1, 3])
def test_broadcast_gradients(registry, op, count, batch):
    config = {"input": {"shape": [3, 5, 4]}, "layers": squeeze_excite(op, count)}
    net = Network.from_config(config, registry=registry, dtype="float64")
    assert net.output_shape == (3, 5, 4)
    check_network_gradients(net, batch=batch)
    check_float32(net, registry=registry, batch=batch)


@pytest.mark.parametrize("op", OPS)
def test_same_shape_gradients(registry, op):
    layers = [{"type": "tanh", "name": "t"}, {"type": op, "name": "merge", "inputs": ["input", "t"]}]
    net = Network.from_config({"input": {"shape": [2, 3]}, "layers": layers}, registry=registry, dtype="float64")
    check_network_gradients(net, batch=2)


@pytest.mark.parametrize("shapes, message", [
    ([(3, 4, 4), (2, 1, 1)], "inputs cannot broadcast: every dimension must be equal or 1; "
                             "got input shapes (3, 4, 4), (2, 1, 1)"),
    ([(3, 4, 4), (3,)], "inputs must have the same number of dimensions to broadcast; "
                        "got input shapes (3, 4, 4), (3,)"),
])
@pytest.mark.parametrize("op", OPS)
def test_shapes_that_cannot_broadcast(registry, op, shapes, message):
    layer = registry.get(op).from_config("merge", {})
    with pytest.raises(ConfigError, match=re.escape(f"layer 'merge' ({op}): {message}")):
        layer.output_shape(*shapes)


def test_sub_takes_two_inputs(registry):
    config = {"input": {"shape": [3]}, "layers": [{"type": "sub", "name": "d", "inputs": ["input"] * 3}]}
    with pytest.raises(ConfigError, match=re.escape("layer 'd' (sub): takes 2 input(s); got inputs=[\"input\", \"input\", \"input\"]")):
        Network.from_config(config, registry=registry)


# -- scale -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(3, 5, 4), (5, 7), (3,)])
@pytest.mark.parametrize("batch", [1, 2])
def test_scale_matches_reference(registry, shape, batch):
    config = {"input": {"shape": list(shape)}, "layers": [{"type": "scale", "name": "s", "init": 1e-6}]}
    net = Network.from_config(config, registry=registry, dtype="float64")
    assert net.params["s"]["weight"].shape == (shape[0],)
    np.testing.assert_array_equal(net.params["s"]["weight"], np.full(shape[0], 1e-6))
    rng = np.random.default_rng(len(shape))
    weight = rng.standard_normal(shape[0])
    net.params["s"]["weight"][...] = weight
    x = rng.standard_normal((batch, *shape))
    np.testing.assert_allclose(net.forward(x, training=True), ref.scale(x, weight), rtol=1e-14)
    grad = rng.standard_normal(x.shape)
    np.testing.assert_allclose(net.backward(grad), ref.scale(grad, weight), rtol=1e-14)
    np.testing.assert_allclose(net.grads["s"]["weight"], ref.scale_weight_grad(x, grad), rtol=1e-12)


@pytest.mark.parametrize("shape", [(3, 5, 4), (2, 7), (4,)])
def test_scale_gradients(registry, shape):
    check_layer_gradients({"type": "scale", "init": 0.7}, shape, batch=3, registry=registry)


def test_scale_defaults_and_bad_init(registry):
    assert registry.get("scale").from_config("s", {}).init == 1.0
    with pytest.raises(ConfigError, match=re.escape("layer 's' (scale): init must be a finite number; got init=\"x\"")):
        registry.get("scale").from_config("s", {"init": "x"})
