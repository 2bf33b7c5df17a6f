"""drop_path (per sample) and dropout2d (per channel): whole groups kept or zeroed, kept values scaled
by 1 / (1 - p), the drop rate, identity in eval, the same mask in backward, and finite differences
with a fixed mask."""

import re

import numpy as np
import pytest

from cnnrun.engine import ConfigError, Context, Network
from cnnrun.engine.gradcheck import check_layer_gradients
from cnnrun.engine.plugins import get_backend

GROUP_AXES = {"drop_path": 1, "dropout2d": 2}


def build(registry, type_name, **options):
    return registry.get(type_name).from_config(type_name, options)


def context(seed, training):
    ctx = Context(backend=get_backend("cpu"), rng=np.random.default_rng(seed))
    ctx.training = training
    return ctx


@pytest.mark.parametrize("type_name", list(GROUP_AXES))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("p", [0.2, 0.5, 0.9])
def test_groups_kept_or_zeroed_and_scaled(registry, type_name, dtype, p):
    layer = build(registry, type_name, p=p)
    x = (np.random.default_rng(1).uniform(0.5, 1.5, (200, 3, 5, 4))).astype(dtype)  # no zeros
    ctx = context(2, True)
    y = layer.forward(ctx, x)
    assert y.dtype == dtype
    axes = GROUP_AXES[type_name]
    groups = y.reshape(*x.shape[:axes], -1)
    kept = np.all(groups != 0, axis=-1)
    assert np.all(kept | np.all(groups == 0, axis=-1))  # a group is kept whole or zeroed whole
    scale = np.dtype(dtype).type(1) / np.dtype(dtype).type(1 - p)
    expected = np.where(kept.reshape(*kept.shape, *(1,) * (4 - axes)), x * scale, 0)
    np.testing.assert_array_equal(y, expected)
    assert abs((1 - kept.mean()) - p) < 4 * np.sqrt(p * (1 - p) / kept.size)  # the drop rate
    grad = np.random.default_rng(3).standard_normal(x.shape).astype(dtype)
    dx = layer.backward(ctx, grad)
    np.testing.assert_array_equal(dx, np.where(expected != 0, grad * scale, 0))


@pytest.mark.parametrize("type_name", list(GROUP_AXES))
def test_identity_in_eval_and_at_p_zero(registry, type_name):
    x = np.random.default_rng(4).standard_normal((2, 3, 4, 5))
    for training, p in [(False, 0.5), (True, 0.0)]:
        layer = build(registry, type_name, p=p)
        ctx = context(0, training)
        assert layer.forward(ctx, x) is x
        grad = np.ones_like(x)
        assert layer.backward(ctx, grad) is grad


def test_drop_path_works_on_any_shape(registry):
    layer = build(registry, "drop_path", p=0.5)
    x = np.ones((64, 7))
    y = layer.forward(context(5, True), x)
    assert set(np.unique(y.sum(axis=1))) <= {0.0, 14.0}


@pytest.mark.parametrize("layer, shape", [({"type": "drop_path", "p": 0.3}, (3, 4, 5)),
                                          ({"type": "drop_path", "p": 0.6}, (6,)),
                                          ({"type": "dropout2d", "p": 0.4}, (5, 3, 2))])
@pytest.mark.parametrize("batch", [1, 4])
def test_gradients_with_a_fixed_mask(registry, layer, shape, batch):
    # check_layer_gradients reseeds every context's rng before each pass: the mask is the same each time
    check_layer_gradients(layer, shape, batch=batch, registry=registry)


@pytest.mark.parametrize("layer, message", [
    ({"type": "drop_path"}, "missing required key 'p'"),
    ({"type": "drop_path", "p": 1}, "p must be"),
    ({"type": "dropout2d", "p": -0.1}, "p must be"),
])
def test_bad_p(registry, layer, message):
    config = {"input": {"shape": [3, 4, 4]}, "layers": [dict(layer, name="d")]}
    with pytest.raises(ConfigError, match=re.escape(f"layer 'd' ({layer['type']}): {message}")):
        Network.from_config(config, registry=registry)


def test_dropout2d_needs_an_image(registry):
    config = {"input": {"shape": [3, 4]}, "layers": [{"type": "dropout2d", "name": "d"}]}
    message = "layer 'd' (dropout2d): needs a (C, H, W) input; got input shape (3, 4)"
    with pytest.raises(ConfigError, match=re.escape(message)):
        Network.from_config(config, registry=registry)


def test_defaults(registry):
    assert build(registry, "dropout2d").p == 0.5
