"""batchnorm and dropout: references, literal running statistics, finite differences, errors."""

import re

import numpy as np
import pytest

import reference_layers as ref
from cnnrun.engine import ConfigError, Context, Network
from cnnrun.engine.gradcheck import check_layer_gradients, check_network_gradients
from cnnrun.engine.plugins import get_backend

DTYPES = ("float32", "float64")
TOL = {"float32": dict(rtol=1e-5, atol=1e-5), "float64": dict(rtol=1e-12, atol=1e-12)}
SHAPES = [(4,), (3, 5), (2, 3, 4)]


def network(registry, layers, input_shape, dtype="float64"):
    return Network.from_config({"input": {"shape": list(input_shape)}, "layers": layers},
                               registry=registry, dtype=dtype)


def batchnorm_network(registry, shape, dtype="float64", seed=0, **options):
    """A one-batchnorm network (layer "bn") with random gamma, beta and running statistics."""
    net = network(registry, [{"type": "batchnorm", "name": "bn", **options}], shape, dtype)
    rng = np.random.default_rng(seed)
    c = shape[0]
    net.params["bn"]["weight"][...] = rng.uniform(0.5, 2, c)
    net.params["bn"]["bias"][...] = rng.standard_normal(c)
    net.buffers["bn"]["running_mean"][...] = rng.standard_normal(c)
    net.buffers["bn"]["running_var"][...] = rng.uniform(0.5, 2, c)
    return net


# -- batchnorm -----------------------------------------------------------------------------------
def test_batchnorm_init(registry):
    net = network(registry, [{"type": "batchnorm", "name": "bn"}], (3, 4, 4))
    np.testing.assert_array_equal(net.params["bn"]["weight"], np.ones(3))
    np.testing.assert_array_equal(net.params["bn"]["bias"], np.zeros(3))
    np.testing.assert_array_equal(net.buffers["bn"]["running_mean"], np.zeros(3))
    np.testing.assert_array_equal(net.buffers["bn"]["running_var"], np.ones(3))
    assert net.nodes[0].layer.get_config() == {"type": "batchnorm", "name": "bn", "eps": 1e-5, "momentum": 0.1,
                                               "affine": True, "track_running_stats": True, "sync": False}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_matches_reference(registry, dtype, shape, training):
    rng = np.random.default_rng(11)
    for trial in range(3):
        batch = int(rng.integers(2 if len(shape) == 1 else 1, 5))
        options = {"eps": float(rng.uniform(1e-5, 1e-2)), "momentum": float(rng.uniform(0, 1))}
        net = batchnorm_network(registry, shape, dtype, seed=trial, **options)
        params, buffers = net.params["bn"], net.buffers["bn"]
        x = (rng.standard_normal((batch, *shape)) * 3 + 1).astype(dtype)
        expected = ref.batchnorm(x, params["weight"], params["bias"], buffers["running_mean"],
                                 buffers["running_var"], training=training, **options)
        y = net.forward(x, training=training)
        assert y.dtype == dtype and buffers["running_mean"].dtype == dtype
        np.testing.assert_allclose(y, expected[0], **TOL[dtype])
        np.testing.assert_allclose(buffers["running_mean"], expected[1], **TOL[dtype])
        np.testing.assert_allclose(buffers["running_var"], expected[2], **TOL[dtype])


def test_batchnorm_statistics_survive_a_large_mean(registry):
    """Values around 1e6 with standard deviation 1e-3: the variance is not lost to cancellation
    (E[x^2] - E[x]^2 would be; the sums are shifted by a value of the channel), and a NaN stays NaN."""
    net = batchnorm_network(registry, (2, 64))
    x = 1e6 + 1e-3 * np.random.default_rng(0).standard_normal((8, 2, 64))
    y = net.forward(x, training=True)
    params = net.params["bn"]
    expected = ref.batchnorm(x, params["weight"], params["bias"], np.zeros(2), np.ones(2), training=True)[0]
    np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-6)
    x[3, 1, 5] = np.nan
    y = net.forward(x, training=True)
    assert np.isfinite(y[:, 0]).all() and np.isnan(y[:, 1]).all()


def test_batchnorm_running_statistics_literal(registry):
    # channel 0: 1, 2, 3 -> mean 2, biased var 2/3, unbiased var 1
    # channel 1: 2, 4, 9 -> mean 5, biased var 26/3, unbiased var 13
    net = network(registry, [{"type": "batchnorm", "name": "bn"}], (2,))
    x = np.array([[1.0, 2.0], [2.0, 4.0], [3.0, 9.0]])
    y = net.forward(x, training=True)
    np.testing.assert_allclose(net.buffers["bn"]["running_mean"], [0.2, 0.5], rtol=1e-15)
    np.testing.assert_allclose(net.buffers["bn"]["running_var"], [1.0, 2.2], rtol=1e-15)
    np.testing.assert_allclose(y[:, 0], (x[:, 0] - 2) / np.sqrt(2 / 3 + 1e-5), rtol=1e-14)
    np.testing.assert_allclose(y[:, 1], (x[:, 1] - 5) / np.sqrt(26 / 3 + 1e-5), rtol=1e-14)
    net.forward(x, training=True)  # a second step moves 10% further
    np.testing.assert_allclose(net.buffers["bn"]["running_mean"], [0.38, 0.95], rtol=1e-15)
    np.testing.assert_allclose(net.buffers["bn"]["running_var"], [1.0, 3.28], rtol=1e-15)
    y = net.forward(x, training=False)  # eval: the running statistics, which stay put
    np.testing.assert_allclose(y[:, 0], (x[:, 0] - 0.38) / np.sqrt(1.0 + 1e-5), rtol=1e-14)
    np.testing.assert_allclose(y[:, 1], (x[:, 1] - 0.95) / np.sqrt(3.28 + 1e-5), rtol=1e-14)
    np.testing.assert_allclose(net.buffers["bn"]["running_var"], [1.0, 3.28], rtol=1e-15)


def test_batchnorm_statistics_cover_batch_and_length(registry):
    # one channel, values 1, 3 (sample 0) and 5, 7 (sample 1): mean 4, unbiased var 20/3
    net = network(registry, [{"type": "batchnorm", "name": "bn", "momentum": 0.5}], (1, 2), "float32")
    net.forward(np.array([[[1, 3]], [[5, 7]]], np.float32), training=True)
    np.testing.assert_allclose(net.buffers["bn"]["running_mean"], [2.0], rtol=1e-7)
    np.testing.assert_allclose(net.buffers["bn"]["running_var"], [0.5 + 10 / 3], rtol=1e-7)


def test_batchnorm_eval_uses_running_statistics(registry, rng):
    net = batchnorm_network(registry, (3, 2, 2), seed=5)
    params, buffers = net.params["bn"], net.buffers["bn"]
    before = {k: v.copy() for k, v in buffers.items()}
    x = rng.standard_normal((1, 3, 2, 2))  # batch 1 is fine in eval
    y = net.forward(x, training=False)
    view = (3, 1, 1)
    expected = ((x - before["running_mean"].reshape(view)) / np.sqrt(before["running_var"].reshape(view) + 1e-5)
                * params["weight"].reshape(view) + params["bias"].reshape(view))
    np.testing.assert_allclose(y, expected, rtol=1e-13)
    for k in before:
        np.testing.assert_array_equal(buffers[k], before[k])


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_gradients(registry, shape, training):
    check_layer_gradients({"type": "batchnorm"}, shape, batch=3, registry=registry, training=training)
    net = batchnorm_network(registry, shape, seed=1)
    check_network_gradients(net, batch=3, training=training)


def test_batchnorm_gradients_batch_one_with_length(registry):
    check_network_gradients(batchnorm_network(registry, (2, 5), seed=2), batch=1, training=True)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_float32_backward_matches_float64(registry, rng, shape, training):
    nets = {dtype: batchnorm_network(registry, shape, dtype, seed=3) for dtype in DTYPES}
    x = rng.standard_normal((3, *shape))
    grad = rng.standard_normal((3, *shape))
    results = {}
    for dtype, net in nets.items():
        net.forward(x.astype(dtype), training=training)
        dx = net.backward(grad.astype(dtype))
        assert dx.dtype == dtype and net.grads["bn"]["weight"].dtype == dtype
        results[dtype] = [dx, net.grads["bn"]["weight"], net.grads["bn"]["bias"]]
    for got, want in zip(results["float32"], results["float64"]):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_batchnorm_one_value_per_channel_when_training(registry):
    message = ("layer 'bn' (batchnorm): expected more than 1 value per channel when training; "
               "got a batch of shape (1, 4)")
    net = network(registry, [{"type": "batchnorm", "name": "bn"}], (4,))
    with pytest.raises(ConfigError, match=re.escape(message)):
        net.forward(np.ones((1, 4)), training=True)
    assert net.forward(np.ones((1, 4)), training=False).shape == (1, 4)
    net = network(registry, [{"type": "batchnorm", "name": "bn"}], (2, 1, 1))
    with pytest.raises(ConfigError, match=re.escape("got a batch of shape (1, 2, 1, 1)")):
        net.forward(np.ones((1, 2, 1, 1)), training=True)


@pytest.mark.parametrize("options, message", [
    ({"momentum": 1.5}, "momentum must be in [0, 1]; got momentum=1.5"),
    ({"momentum": -0.1}, "momentum must be in [0, 1]; got momentum=-0.1"),
    ({"eps": 0}, "eps must be in (0, inf); got eps=0"),
    ({"eps": "small"}, 'eps must be a finite number; got eps="small"'),
])
def test_batchnorm_bad_options(registry, options, message):
    with pytest.raises(ConfigError, match=re.escape(f"layer 'bn' (batchnorm): {message}")):
        network(registry, [{"type": "batchnorm", "name": "bn", **options}], (4,))


# -- dropout -------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_is_identity_in_eval(registry, rng, dtype):
    net = network(registry, [{"type": "dropout", "p": 0.7}], (3, 4), dtype)
    x = rng.standard_normal((2, 3, 4)).astype(dtype)
    np.testing.assert_array_equal(net.forward(x, training=False), x)
    grad = rng.standard_normal(x.shape).astype(dtype)
    np.testing.assert_array_equal(net.backward(grad), grad)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [0.15, 0.5, 0.9])  # 0.15: f32(1)/f32(0.85) != f32(1/0.85)
def test_dropout_training_rate_and_scaling(registry, rng, dtype, p):
    net = network(registry, [{"type": "dropout", "p": p}], (20000,), dtype)
    x = rng.uniform(1, 2, (5, 20000)).astype(dtype)  # no zeros, so y == 0 marks a dropped value
    y = net.forward(x, training=True)
    assert y.dtype == dtype
    keep = y != 0
    assert abs(1 - keep.mean() - p) < 0.01  # 1e5 draws: the standard deviation is <= 0.0016
    scale = np.array(1, dtype) / np.array(1 - p, dtype)  # PyTorch: mask.div_(1 - p), in the dtype
    np.testing.assert_array_equal(y[keep], x[keep] * scale)
    np.testing.assert_allclose(y, ref.dropout(x, keep, p), rtol=1e-6 if dtype == "float32" else 1e-15)
    grad = rng.standard_normal(x.shape).astype(dtype)
    np.testing.assert_array_equal(net.backward(grad), np.where(keep, grad * scale, 0))


def test_dropout_mask_comes_from_ctx_rng(registry, rng):
    layer = registry.get("dropout").from_config("drop", {"p": 0.4})
    x = rng.standard_normal((3, 50))
    ctx = Context(backend=get_backend("cpu"), rng=np.random.default_rng(42))
    ctx.training = True
    y = layer.forward(ctx, x)
    keep = np.random.default_rng(42).random(x.shape) >= 0.4
    np.testing.assert_array_equal(y, ref.dropout(x, keep, 0.4))


def test_dropout_same_seed_same_mask(registry, rng):
    x = rng.standard_normal((4, 100))
    first, second = (network(registry, [{"type": "dropout"}], (100,)) for _ in range(2))
    y1 = first.forward(x, training=True)
    np.testing.assert_array_equal(y1, second.forward(x, training=True))
    assert not np.array_equal(y1 != 0, first.forward(x, training=True) != 0)  # a fresh mask each step
    first.initialize(seed=0)
    np.testing.assert_array_equal(first.forward(x, training=True), y1)


def test_dropout_p_zero_keeps_everything(registry, rng):
    net = network(registry, [{"type": "dropout", "p": 0}], (10,))
    x = rng.standard_normal((3, 10))
    np.testing.assert_array_equal(net.forward(x, training=True), x)


def test_dropout_gradients(registry):
    check_layer_gradients({"type": "dropout", "p": 0.4}, (3, 5), batch=3, registry=registry, training=True)


@pytest.mark.parametrize("p, message", [
    (1, "p must be in [0, 1); got p=1"),
    (-0.1, "p must be in [0, 1); got p=-0.1"),
    (None, "p must be a finite number; got p=null"),
])
def test_dropout_bad_p(registry, p, message):
    with pytest.raises(ConfigError, match=re.escape(f"layer 'drop' (dropout): {message}")):
        network(registry, [{"type": "dropout", "name": "drop", "p": p}], (4,))
