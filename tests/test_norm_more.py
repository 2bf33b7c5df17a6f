"""layer_norm, group_norm, instance_norm, lrn and batchnorm's affine / track_running_stats options:
against the slow references of tests/reference_norm.py over random configurations, against float64
finite differences (and float32 against float64), parameter layout, config errors and fuse."""

import numpy as np
import pytest

import reference_layers as ref
import reference_norm as refn
from cnnrun.engine import ConfigError, Network
from cnnrun.engine.checkpoint import Checkpoint, network_state
from cnnrun.engine.fuse import foldable_pairs, fuse_network
from cnnrun.engine.gradcheck import check_layer_gradients, check_network_gradients

DTYPES = ("float32", "float64")
TOL = {"float32": dict(rtol=1e-5, atol=2e-5), "float64": dict(rtol=1e-11, atol=1e-11)}


def network(registry, layer, input_shape, dtype="float64", seed=0):
    """A one-layer network (layer "n") whose parameters are random (gamma around 1)."""
    net = Network.from_config({"input": {"shape": list(input_shape)}, "layers": [{"name": "n", **layer}]},
                              registry=registry, dtype=dtype)
    rng = np.random.default_rng(seed)
    for name, array in net.params.get("n", {}).items():
        array[...] = rng.uniform(0.5, 2, array.shape) if name == "weight" else rng.standard_normal(array.shape)
    return net


def random_input(rng, batch, shape, dtype):
    return (rng.standard_normal((batch, *shape)) * 3 + rng.uniform(-2, 2)).astype(dtype)


def parameters(net):
    params = net.params.get("n", {})
    return params.get("weight"), params.get("bias")


def random_shape(rng, rank):
    return tuple(int(v) for v in rng.integers(1, 6, rank))


# -- against the references ------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_layer_norm_matches_reference(registry, dtype):
    rng = np.random.default_rng(1)
    for trial in range(12):
        shape = random_shape(rng, int(rng.integers(1, 4)))
        shape = shape if np.prod(shape) > 1 else shape[:-1] + (3,)
        normalized = list(shape[len(shape) - int(rng.integers(1, len(shape) + 1)):])
        affine, eps = bool(trial % 3), float(rng.uniform(1e-6, 1e-2))
        layer = {"type": "layer_norm", "normalized_shape": normalized if trial % 2 or len(normalized) > 1
                 else normalized[0], "eps": eps, "elementwise_affine": affine}
        net = network(registry, layer, shape, dtype, seed=trial)
        assert list(net.params.get("n", {}).get("weight", np.zeros(normalized)).shape) == normalized
        x = random_input(rng, int(rng.integers(1, 4)), shape, dtype)
        expected = refn.layer_norm(x, normalized, *parameters(net), eps=eps)
        y = net.forward(x, training=bool(trial % 2))
        assert y.dtype == dtype
        np.testing.assert_allclose(y, expected, **TOL[dtype], err_msg=str((layer, shape)))


@pytest.mark.parametrize("dtype", DTYPES)
def test_layer_norm_channels_first_matches_reference(registry, dtype):
    rng = np.random.default_rng(2)
    for trial in range(8):
        shape = (int(rng.integers(2, 7)),) + random_shape(rng, int(rng.integers(0, 3)))
        affine, eps = trial % 4 != 3, float(rng.uniform(1e-6, 1e-2))
        layer = {"type": "layer_norm", "normalized_shape": [shape[0]], "channels_first": True, "eps": eps,
                 "elementwise_affine": affine}
        net = network(registry, layer, shape, dtype, seed=trial)
        x = random_input(rng, int(rng.integers(1, 4)), shape, dtype)
        expected = refn.layer_norm_channels_first(x, *parameters(net), eps=eps)
        np.testing.assert_allclose(net.forward(x), expected, **TOL[dtype], err_msg=str((layer, shape)))


@pytest.mark.parametrize("dtype", DTYPES)
def test_group_norm_matches_reference(registry, dtype):
    rng = np.random.default_rng(3)
    for trial in range(10):
        groups, per_group = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        shape = (groups * per_group,) + random_shape(rng, int(rng.integers(0, 3)))
        affine, eps = trial % 3 != 2, float(rng.uniform(1e-6, 1e-2))
        layer = {"type": "group_norm", "num_groups": groups, "eps": eps, "affine": affine}
        net = network(registry, layer, shape, dtype, seed=trial)
        x = random_input(rng, int(rng.integers(1, 4)), shape, dtype)
        expected = refn.group_norm(x, groups, *parameters(net), eps=eps)
        np.testing.assert_allclose(net.forward(x), expected, **TOL[dtype], err_msg=str((layer, shape)))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("track", [False, True])
def test_instance_norm_matches_reference(registry, dtype, affine, track):
    rng = np.random.default_rng(4)
    for trial in range(3):
        shape = (int(rng.integers(1, 5)),) + tuple(int(v) for v in rng.integers(2, 5, int(rng.integers(1, 3))))
        eps, momentum = float(rng.uniform(1e-6, 1e-2)), float(rng.uniform(0, 1))
        layer = {"type": "instance_norm", "eps": eps, "momentum": momentum, "affine": affine,
                 "track_running_stats": track}
        net = network(registry, layer, shape, dtype, seed=trial)
        assert set(net.params.get("n", {})) == ({"weight", "bias"} if affine else set())
        assert set(net.buffers.get("n", {})) == ({"running_mean", "running_var"} if track else set())
        running = None
        if track:
            net.buffers["n"]["running_mean"][...] = rng.standard_normal(shape[0])
            net.buffers["n"]["running_var"][...] = rng.uniform(0.5, 2, shape[0])
        for training in (True, True, False):  # the running statistics move twice, then serve evaluation
            if track:
                running = tuple(net.buffers["n"][k].copy() for k in ("running_mean", "running_var"))
            x = random_input(rng, int(rng.integers(1, 4)), shape, dtype)
            y, mean, var = refn.instance_norm(x, *parameters(net), eps=eps, running=running, training=training,
                                              momentum=momentum)
            np.testing.assert_allclose(net.forward(x, training=training), y, **TOL[dtype])
            if track:
                np.testing.assert_allclose(net.buffers["n"]["running_mean"], mean, **TOL[dtype])
                np.testing.assert_allclose(net.buffers["n"]["running_var"], var, **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_lrn_matches_reference(registry, dtype):
    rng = np.random.default_rng(5)
    for trial in range(10):
        shape = (int(rng.integers(1, 8)),) + random_shape(rng, int(rng.integers(1, 3)))
        options = {"size": int(rng.integers(1, shape[0] + 3)), "alpha": float(rng.uniform(0, 2)),
                   "beta": float(rng.uniform(-0.5, 1.5)), "k": float(rng.uniform(0.5, 3))}
        net = network(registry, {"type": "lrn", **options}, shape, dtype)
        x = random_input(rng, int(rng.integers(1, 4)), shape, dtype)
        np.testing.assert_allclose(net.forward(x), refn.lrn(x, **options), **TOL[dtype],
                                   err_msg=str((options, shape)))


def test_lrn_defaults_divide_alpha_by_size(registry):
    # one channel of value 2 with size 5: 2 / (1 + 1e-4 / 5 * 4) ** 0.75
    net = network(registry, {"type": "lrn", "size": 5}, (1, 1))
    np.testing.assert_allclose(net.forward(np.full((1, 1, 1), 2.0)), 2 / (1 + 1e-4 / 5 * 4) ** 0.75, rtol=1e-15)
    assert net.nodes[0].layer.get_config() == {"type": "lrn", "name": "n", "size": 5, "alpha": 1e-4,
                                               "beta": 0.75, "k": 1.0}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("track", [False, True])
@pytest.mark.parametrize("training", [False, True])
def test_batchnorm_options_match_reference(registry, dtype, affine, track, training):
    rng = np.random.default_rng(6)
    shape = (3, 2, 5)
    layer = {"type": "batchnorm", "affine": affine, "track_running_stats": track, "eps": 1e-3}
    net = network(registry, layer, shape, dtype)
    assert set(net.params.get("n", {})) == ({"weight", "bias"} if affine else set())
    assert set(net.buffers.get("n", {})) == ({"running_mean", "running_var"} if track else set())
    weight, bias = parameters(net)
    weight = np.ones(3) if weight is None else weight
    bias = np.zeros(3) if bias is None else bias
    running = (net.buffers["n"]["running_mean"].copy(), net.buffers["n"]["running_var"].copy()) if track \
        else (np.zeros(3), np.ones(3))
    x = random_input(rng, 2, shape, dtype)
    y, mean, var = ref.batchnorm(x, weight, bias, *running, training=training or not track, eps=1e-3)
    np.testing.assert_allclose(net.forward(x, training=training), y, **TOL[dtype])
    if track:
        np.testing.assert_allclose(net.buffers["n"]["running_mean"], mean if training else running[0])
        np.testing.assert_allclose(net.buffers["n"]["running_var"], var if training else running[1])


# -- gradients -----------------------------------------------------------------------------------
GRADIENT_CASES = [
    ({"type": "layer_norm", "normalized_shape": [3, 4]}, (2, 3, 4)),
    ({"type": "layer_norm", "normalized_shape": 5, "eps": 1e-3}, (5,)),
    ({"type": "layer_norm", "normalized_shape": [4], "elementwise_affine": False}, (3, 4)),
    ({"type": "layer_norm", "normalized_shape": 3, "channels_first": True}, (3, 2, 3)),
    ({"type": "layer_norm", "normalized_shape": 4, "channels_first": True, "elementwise_affine": False}, (4, 5)),
    ({"type": "group_norm", "num_groups": 2}, (4, 3)),
    ({"type": "group_norm", "num_groups": 3, "affine": False, "eps": 1e-2}, (3, 2, 2)),
    ({"type": "group_norm", "num_groups": 1}, (5,)),
    ({"type": "instance_norm"}, (3, 5)),
    ({"type": "instance_norm", "affine": True}, (2, 3, 3)),
    ({"type": "instance_norm", "affine": True, "track_running_stats": True}, (2, 4)),
    ({"type": "lrn", "size": 3, "alpha": 0.5, "beta": 0.7, "k": 2.0}, (5, 3)),
    ({"type": "lrn", "size": 2, "alpha": 1.5, "beta": 1.2}, (4, 2, 2)),
    ({"type": "batchnorm", "affine": False}, (3, 4)),
    ({"type": "batchnorm", "track_running_stats": False}, (3, 2, 2)),
    ({"type": "batchnorm", "affine": False, "track_running_stats": False}, (4,)),
]


@pytest.mark.parametrize("layer, shape", GRADIENT_CASES, ids=lambda v: str(v) if isinstance(v, tuple) else v["type"])
@pytest.mark.parametrize("training", [True, False], ids=["training", "eval"])
def test_gradients(registry, layer, shape, training):
    check_layer_gradients(layer, shape, registry=registry, training=training, batch=3)


def test_gradients_at_batch_one(registry):
    for layer, shape in GRADIENT_CASES[:13]:
        check_layer_gradients(layer, shape, registry=registry, batch=1)


# -- layout, config and errors ---------------------------------------------------------------------
def test_parameter_layout_and_defaults(registry):
    net = Network.from_config({"input": {"shape": [4, 3, 3]}, "layers": [
        {"name": "ln", "type": "layer_norm", "normalized_shape": [3, 3]},
        {"name": "cf", "type": "layer_norm", "normalized_shape": 4, "channels_first": True},
        {"name": "gn", "type": "group_norm", "num_groups": 2},
        {"name": "in", "type": "instance_norm"}, {"name": "lrn", "type": "lrn", "size": 3}]}, registry=registry)
    assert {k: v.shape for k, v in net.params["ln"].items()} == {"weight": (3, 3), "bias": (3, 3)}
    assert {k: v.shape for k, v in net.params["cf"].items()} == {"weight": (4,), "bias": (4,)}
    assert {k: v.shape for k, v in net.params["gn"].items()} == {"weight": (4,), "bias": (4,)}
    for name in ("ln", "cf", "gn"):
        np.testing.assert_array_equal(net.params[name]["weight"], 1)
        np.testing.assert_array_equal(net.params[name]["bias"], 0)
    assert "in" not in net.params and "in" not in net.buffers and "lrn" not in net.params
    configs = {node.name: node.layer.get_config() for node in net.nodes}
    assert configs["ln"] == {"type": "layer_norm", "name": "ln", "normalized_shape": [3, 3], "eps": 1e-5,
                             "elementwise_affine": True, "channels_first": False}
    assert configs["gn"] == {"type": "group_norm", "name": "gn", "num_groups": 2, "eps": 1e-5, "affine": True}
    assert configs["in"] == {"type": "instance_norm", "name": "in", "eps": 1e-5, "momentum": 0.1,
                             "affine": False, "track_running_stats": False}


ERRORS = [
    ({"type": "group_norm", "num_groups": 4}, (6, 3),
     "layer 'n' (group_norm): channels (6) must be divisible by num_groups (4); input shape (6, 3)"),
    ({"type": "group_norm", "num_groups": 0}, (6, 3), "layer 'n' (group_norm): num_groups must be >= 1; got num_groups=0"),
    ({"type": "layer_norm", "normalized_shape": [4, 3]}, (2, 3, 4),
     "layer 'n' (layer_norm): normalized_shape [4, 3] does not match the input's last dimensions; input shape (2, 3, 4)"),
    ({"type": "layer_norm", "normalized_shape": [2, 3, 4, 5]}, (3, 4, 5),
     "layer 'n' (layer_norm): normalized_shape [2, 3, 4, 5] does not match the input's last dimensions; "
     "input shape (3, 4, 5)"),
    ({"type": "layer_norm", "normalized_shape": 4, "channels_first": True}, (3, 4),
     "layer 'n' (layer_norm): normalized_shape [4] does not match the input's channels; input shape (3, 4)"),
    ({"type": "layer_norm", "normalized_shape": [3, 4], "channels_first": True}, (3, 4),
     "layer 'n' (layer_norm): with channels_first, normalized_shape must be the number of channels; "
     "got normalized_shape=[3, 4]"),
    ({"type": "layer_norm", "normalized_shape": []}, (3,),
     "layer 'n' (layer_norm): normalized_shape must be a positive integer or a non-empty list of them; "
     "got normalized_shape=[]"),
    ({"type": "layer_norm", "normalized_shape": 3, "eps": 0}, (3,),
     "layer 'n' (layer_norm): eps must be in (0, inf); got eps=0"),
    ({"type": "lrn", "size": 0}, (3, 4), "layer 'n' (lrn): size must be >= 1; got size=0"),
    ({"type": "lrn", "size": 3, "k": 0}, (3, 4), "layer 'n' (lrn): k must be in (0, inf); got k=0"),
    ({"type": "lrn", "size": 3}, (3,), "layer 'n' (lrn): expected a (C, L) or (C, H, W) input; got input shape (3,)"),
    ({"type": "instance_norm"}, (3,),
     "layer 'n' (instance_norm): expected a (C, L) or (C, H, W) input; got input shape (3,)"),
    ({"type": "instance_norm", "affine": 1}, (3, 2), "layer 'n' (instance_norm): affine must be true or false; got affine=1"),
    ({"type": "batchnorm", "track_running_stats": "no"}, (3,),
     "layer 'n' (batchnorm): track_running_stats must be true or false; got track_running_stats=\"no\""),
]


@pytest.mark.parametrize("layer, shape, message", ERRORS, ids=[m.split(": ", 1)[1][:40] for _, _, m in ERRORS])
def test_config_errors_are_one_clear_line(registry, layer, shape, message):
    with pytest.raises(ConfigError) as caught:
        network(registry, layer, shape)
    assert str(caught.value) == message


def test_batch_statistics_need_more_than_one_value(registry):
    net = network(registry, {"type": "instance_norm"}, (3, 1))
    with pytest.raises(ConfigError, match=r"layer 'n' \(instance_norm\): expected more than 1 value per channel"):
        net.forward(np.ones((2, 3, 1)))
    net = network(registry, {"type": "batchnorm", "track_running_stats": False}, (3,))
    with pytest.raises(ConfigError, match=r"more than 1 value per channel without running statistics"):
        net.forward(np.ones((1, 3)), training=False)


# -- fuse ------------------------------------------------------------------------------------------
def fused_pair(registry, batchnorm):
    config = {"name": "f", "input": {"shape": [2, 5, 5]}, "layers": [
        {"name": "c", "type": "conv2d", "out_channels": 3, "kernel_size": 3}, {"name": "b", **batchnorm}]}
    net = Network.from_config(config, registry=registry, seed=0)
    for name, array in net.buffers.get("b", {}).items():
        array[...] = np.random.default_rng(1).uniform(0.5, 2, array.shape)
    params, buffers = network_state(net)
    return net, fuse_network(config, Checkpoint(params, buffers, {}, {}), registry=registry)


def test_fuse_folds_batchnorm_without_affine(registry):
    net, (config, checkpoint, pairs) = fused_pair(registry, {"type": "batchnorm", "affine": False})
    assert pairs == [("c", "b")] and [layer["name"] for layer in config["layers"]] == ["c"]
    fused = Network.from_config(config, registry=registry)
    for name, array in checkpoint.params["c"].items():
        fused.params["c"][name][...] = array
    x = np.random.default_rng(2).standard_normal((2, 2, 5, 5)).astype(np.float32)
    np.testing.assert_allclose(fused.forward(x, training=False), net.forward(x, training=False), rtol=1e-5, atol=1e-5)


def test_fuse_leaves_batchnorm_without_running_statistics(registry):
    net, (config, _, pairs) = fused_pair(registry, {"type": "batchnorm", "track_running_stats": False})
    assert pairs == [] and foldable_pairs(net) == [] and [layer["name"] for layer in config["layers"]] == ["c", "b"]


def test_a_network_of_every_new_layer_has_correct_gradients(registry):
    layers = [{"type": "conv2d", "out_channels": 6, "kernel_size": 3}, {"type": "group_norm", "num_groups": 3},
              {"type": "lrn", "size": 3, "alpha": 0.3}, {"type": "instance_norm", "affine": True},
              {"type": "layer_norm", "normalized_shape": 6, "channels_first": True, "eps": 1e-6},
              {"type": "batchnorm", "affine": False}, {"type": "layer_norm", "normalized_shape": [3, 3]},
              {"type": "flatten"}, {"type": "linear", "out_features": 3}]
    net = Network.from_config({"input": {"shape": [2, 5, 5]}, "layers": layers}, registry=registry,
                              dtype="float64", seed=0)
    check_network_gradients(net, batch=2, max_checks=12)
