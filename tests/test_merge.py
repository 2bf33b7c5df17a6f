"""add and concat: references, gradient routing, shape errors, and DAG networks checked end to end."""

import re

import numpy as np
import pytest

import reference_layers as ref
from cnnrun.engine import ConfigError, Context, Network
from cnnrun.engine.gradcheck import check_network_gradients
from cnnrun.engine.plugins import get_backend

DTYPES = ("float32", "float64")
TOL = {"float32": dict(rtol=1e-6, atol=1e-6), "float64": dict(rtol=1e-15, atol=1e-15)}


def layer(registry, type_name):
    return registry.get(type_name).from_config(type_name, {})


@pytest.mark.parametrize("dtype", DTYPES)
def test_add_matches_reference(registry, dtype):
    rng = np.random.default_rng(3)
    add = layer(registry, "add")
    for shape in [(5,), (2, 6), (3, 2, 4)]:
        for count in (2, 3, 4):
            batch = int(rng.integers(1, 4))
            xs = [rng.standard_normal((batch, *shape)).astype(dtype) for _ in range(count)]
            assert add.output_shape(*(shape,) * count) == shape
            ctx = Context(backend=get_backend("cpu"))
            y = add.forward(ctx, *xs)
            assert y.dtype == dtype
            np.testing.assert_allclose(y, ref.add(*xs), **TOL[dtype])
            assert all(x is not y for x in xs)  # the inputs are left alone
            grad = rng.standard_normal(y.shape).astype(dtype)
            grads = add.backward(ctx, grad)
            assert len(grads) == count
            for g in grads:
                np.testing.assert_array_equal(g, grad)


@pytest.mark.parametrize("dtype", DTYPES)
def test_concat_matches_reference(registry, dtype):
    rng = np.random.default_rng(4)
    concat = layer(registry, "concat")
    for rest in [(), (5,), (2, 3)]:
        for count in (2, 3):
            batch = int(rng.integers(1, 4))
            channels = [int(c) for c in rng.integers(1, 4, count)]
            shapes = [(c, *rest) for c in channels]
            assert concat.output_shape(*shapes) == (sum(channels), *rest)
            xs = [rng.standard_normal((batch, *s)).astype(dtype) for s in shapes]
            ctx = Context(backend=get_backend("cpu"))
            y = concat.forward(ctx, *xs)
            assert y.dtype == dtype
            np.testing.assert_array_equal(y, ref.concat(*xs))
            grad = rng.standard_normal(y.shape).astype(dtype)
            grads = concat.backward(ctx, grad)
            assert [g.shape for g in grads] == [x.shape for x in xs]
            assert all(g.flags.c_contiguous and g.dtype == dtype for g in grads)
            np.testing.assert_array_equal(ref.concat(*grads), grad)


def dag(registry, layers, input_shape, dtype="float64"):
    return Network.from_config({"input": {"shape": list(input_shape)}, "layers": layers},
                               registry=registry, dtype=dtype)


MLP_DAG = [  # 1-D: a residual sum of three branches, concatenated with a skip from the input
    {"type": "linear", "name": "fc1", "out_features": 6},
    {"type": "tanh", "name": "t1"},
    {"type": "linear", "name": "fc2", "out_features": 6},
    {"type": "batchnorm", "name": "bn"},
    {"type": "add", "name": "res", "inputs": ["fc1", "bn", "t1"]},
    {"type": "linear", "name": "skip", "out_features": 3, "inputs": ["input"]},
    {"type": "concat", "name": "cat", "inputs": ["res", "skip", "input"]},
    {"type": "linear", "name": "head", "out_features": 2},
]

SPATIAL_DAG = [  # 3-D: per-channel batchnorm, a channel concat, a sum that reads one input twice
    {"type": "batchnorm", "name": "bn"},
    {"type": "tanh", "name": "t"},
    {"type": "concat", "name": "cat", "inputs": ["input", "t"]},
    {"type": "sigmoid", "name": "s"},
    {"type": "add", "name": "res", "inputs": ["cat", "s", "cat"]},
    {"type": "flatten"},
    {"type": "linear", "name": "head", "out_features": 3},
]


def test_dag_shapes(registry):
    net = dag(registry, MLP_DAG, (4,))
    assert [n.output_shape for n in net.nodes if n.name in ("res", "cat")] == [(6,), (13,)]
    net = dag(registry, SPATIAL_DAG, (2, 3, 3))
    assert [n.output_shape for n in net.nodes if n.name in ("cat", "res")] == [(4, 3, 3), (4, 3, 3)]


@pytest.mark.parametrize("config, shape", [(MLP_DAG, (4,)), (SPATIAL_DAG, (2, 3, 3))])
@pytest.mark.parametrize("training", [True, False])
def test_dag_gradients(registry, config, shape, training):
    net = dag(registry, config, shape)
    rng = np.random.default_rng(5)
    channels = net.params["bn"]["weight"].shape
    net.params["bn"]["weight"][...] = rng.uniform(0.5, 2, channels)
    net.buffers["bn"]["running_mean"][...] = rng.standard_normal(channels)
    net.buffers["bn"]["running_var"][...] = rng.uniform(0.5, 2, channels)
    check_network_gradients(net, batch=3, training=training)


def test_dag_forward_matches_references(registry, rng):
    net = dag(registry, SPATIAL_DAG, (2, 3, 3))
    x = rng.standard_normal((2, 2, 3, 3))
    y = net.forward(x, training=False)
    t = ref.tanh(ref.batchnorm(x, net.params["bn"]["weight"], net.params["bn"]["bias"],
                               net.buffers["bn"]["running_mean"], net.buffers["bn"]["running_var"],
                               training=False)[0])
    cat = ref.concat(x, t)
    res = ref.add(cat, ref.sigmoid(cat), cat)
    head = net.params["head"]
    np.testing.assert_allclose(y, ref.linear(ref.flatten(res), head["weight"], head["bias"]), rtol=1e-12)


@pytest.mark.parametrize("type_name, shapes, message", [
    ("add", [(4,), (5,)], "inputs cannot broadcast: every dimension must be equal or 1; "
                          "got input shapes (4,), (5,)"),
    ("add", [(2, 3, 3), (2, 3, 3), (2, 3, 4)], "inputs cannot broadcast: every dimension must be equal or 1; "
                                               "got input shapes (2, 3, 3), (2, 3, 3), (2, 3, 4)"),
    ("concat", [(2, 3, 3), (4, 3, 2)], "inputs must match in every dimension but the channel axis "
                                       "(the first); got input shapes (2, 3, 3), (4, 3, 2)"),
    ("concat", [(2, 3), (2, 3, 3)], "inputs must match in every dimension but the channel axis "
                                     "(the first); got input shapes (2, 3), (2, 3, 3)"),
])
def test_mismatched_shapes(registry, type_name, shapes, message):
    merge = registry.get(type_name).from_config("merge", {})
    with pytest.raises(ConfigError, match=re.escape(f"layer 'merge' ({type_name}): {message}")):
        merge.output_shape(*shapes)


def test_add_of_different_shapes_in_a_network(registry):
    layers = [{"type": "linear", "name": "fc", "out_features": 5},
              {"type": "add", "name": "merge", "inputs": ["input", "fc"]}]
    message = "layer 'merge' (add): inputs cannot broadcast: every dimension must be equal or 1; got input shapes (4,), (5,)"
    with pytest.raises(ConfigError, match=re.escape(message)):
        dag(registry, layers, (4,))
    layers[1]["type"] = "concat"  # any feature counts concatenate: (4,) and (5,) -> (9,)
    assert dag(registry, layers, (4,)).output_shape == (9,)


@pytest.mark.parametrize("type_name", ["add", "concat"])
def test_spatial_input_merged_with_its_flattened_form(registry, type_name):
    layers = [{"type": "flatten", "name": "flat"}, {"type": type_name, "name": "merge", "inputs": ["input", "flat"]}]
    with pytest.raises(ConfigError, match=re.escape("got input shapes (2, 3, 3), (18,)")):
        dag(registry, layers, (2, 3, 3))


@pytest.mark.parametrize("type_name", ["add", "concat"])
def test_one_input_is_an_error(registry, type_name):
    with pytest.raises(ConfigError, match=re.escape(f"layer 'merge' ({type_name}): takes at least 2 input(s)")):
        dag(registry, [{"type": type_name, "name": "merge", "inputs": ["input"]}], (3,))
