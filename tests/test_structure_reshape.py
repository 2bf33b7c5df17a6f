"""identity, flatten (start_axis), reshape, slice and permute: against slow references over random
configurations, gradients against finite differences, and one-line config errors."""

import re

import numpy as np
import pytest

import reference_structure as ref
from cnnrun.engine import ConfigError, Network
from cnnrun.engine.gradcheck import check_layer_gradients, check_network_gradients


def one_layer(registry, layer, shape):
    config = {"input": {"shape": list(shape)}, "layers": [dict(layer, name="l")]}
    return Network.from_config(config, registry=registry, dtype="float64")


def forward_backward(net, x, rng):
    y = net.forward(x, training=True)
    grad = rng.standard_normal(y.shape)
    return y, grad, net.backward(grad)


def random_shape(rng, rank=None):
    return tuple(int(n) for n in rng.integers(1, 6, size=int(rng.integers(1, 4)) if rank is None else rank))


def test_identity(registry, rng):
    net = one_layer(registry, {"type": "identity"}, (3, 5))
    x = rng.standard_normal((1, 3, 5))
    y, grad, dx = forward_backward(net, x, rng)
    np.testing.assert_array_equal(y, x)
    np.testing.assert_array_equal(dx, grad)


@pytest.mark.parametrize("trial", range(8))
def test_flatten_start_axis_matches_reference(registry, trial):
    rng = np.random.default_rng(trial)
    shape = random_shape(rng)
    rank = len(shape) + 1
    start = int(rng.integers(1, rank)) - (rank if trial % 2 else 0)  # negative on odd trials
    net = one_layer(registry, {"type": "flatten", "start_axis": start}, shape)
    axis = start % rank
    expected_shape = (*shape[:axis - 1], int(np.prod(shape[axis - 1:])))
    assert net.output_shape == expected_shape
    x = rng.standard_normal((int(rng.integers(1, 4)), *shape))
    y, grad, dx = forward_backward(net, x, rng)
    np.testing.assert_array_equal(y, ref.reshape(x, (x.shape[0], *expected_shape)))
    np.testing.assert_array_equal(dx, ref.reshape(grad, x.shape))


def test_flatten_defaults_to_one_vector_per_sample(registry):
    assert one_layer(registry, {"type": "flatten"}, (3, 4, 5)).output_shape == (60,)
    assert one_layer(registry, {"type": "flatten"}, (7,)).output_shape == (7,)


@pytest.mark.parametrize("trial", range(8))
def test_reshape_matches_reference(registry, trial):
    rng = np.random.default_rng(10 + trial)
    shape = random_shape(rng)
    values = rng.permutation([n for n in shape] + [1])  # the same number of values, another layout
    target = [int(v) for v in values]
    if trial % 2:
        target[int(rng.integers(len(target)))] = -1
    net = one_layer(registry, {"type": "reshape", "shape": target}, shape)
    expected = tuple(int(v) for v in values)
    assert net.output_shape == expected
    x = rng.standard_normal((int(rng.integers(1, 3)), *shape))
    y, grad, dx = forward_backward(net, x, rng)
    np.testing.assert_array_equal(y, ref.reshape(x, (x.shape[0], *expected)))
    np.testing.assert_array_equal(dx, ref.reshape(grad, x.shape))


@pytest.mark.parametrize("trial", range(12))
def test_slice_matches_reference(registry, trial):
    rng = np.random.default_rng(20 + trial)
    shape = (int(rng.integers(1, 8)), *random_shape(rng, int(rng.integers(0, 3))))
    channels = shape[0]
    while True:
        start = int(rng.integers(-channels, channels))
        stop = None if rng.random() < 0.3 else int(rng.integers(-channels, channels + 1))
        step = int(rng.integers(1, 4))
        if range(channels)[start:stop:step]:
            break
    net = one_layer(registry, {"type": "slice", "start": start, "stop": stop, "step": step}, shape)
    x = rng.standard_normal((int(rng.integers(1, 4)), *shape))
    y, grad, dx = forward_backward(net, x, rng)
    np.testing.assert_array_equal(y, ref.channel_slice(x, start, stop, step))
    expected = np.zeros(x.shape)
    for k, c in enumerate(range(channels)[start:stop:step]):
        expected[:, c] = grad[:, k]
    np.testing.assert_array_equal(dx, expected)


def test_shufflenet_chunk_is_two_slices(registry, rng):
    layers = [{"type": "slice", "name": "left", "stop": 3}, {"type": "slice", "name": "right", "start": 3,
                                                               "inputs": ["input"]},
              {"type": "concat", "name": "cat", "inputs": ["right", "left"]}]
    net = Network.from_config({"input": {"shape": [6, 2, 2]}, "layers": layers}, registry=registry)
    x = rng.standard_normal((2, 6, 2, 2)).astype("float32")
    np.testing.assert_array_equal(net.forward(x), np.concatenate([x[:, 3:], x[:, :3]], axis=1))


@pytest.mark.parametrize("trial", range(8))
def test_permute_matches_reference(registry, trial):
    rng = np.random.default_rng(30 + trial)
    shape = random_shape(rng, int(rng.integers(1, 4)))
    dims = [0] + [int(d) + 1 for d in rng.permutation(len(shape))]
    net = one_layer(registry, {"type": "permute", "dims": dims}, shape)
    assert net.output_shape == tuple(shape[d - 1] for d in dims[1:])
    x = rng.standard_normal((int(rng.integers(1, 4)), *shape))
    y, grad, dx = forward_backward(net, x, rng)
    assert y.flags.c_contiguous and dx.flags.c_contiguous
    np.testing.assert_array_equal(y, ref.permute(x, dims))
    np.testing.assert_array_equal(dx, ref.permute(grad, list(np.argsort(dims))))


@pytest.mark.parametrize("layer, shape", [
    ({"type": "flatten", "start_axis": 2}, (3, 4, 5)),
    ({"type": "reshape", "shape": [5, -1]}, (3, 2, 5)),
    ({"type": "slice", "start": 1, "stop": -1, "step": 2}, (6, 3)),
    ({"type": "permute", "dims": [0, 3, 1, 2]}, (2, 3, 4)),
    ({"type": "identity"}, (3,)),
])
def test_gradients(registry, layer, shape):
    check_layer_gradients(layer, shape, batch=2, registry=registry)


@pytest.mark.parametrize("layer, shape, message", [
    ({"type": "flatten", "start_axis": 0}, (3, 4),
     "start_axis must name a non-batch axis (1 to 2, or -2 to -1) of the input shape (3, 4) with the batch; "
     "got start_axis=0"),
    ({"type": "flatten", "start_axis": 3}, (3, 4), "got start_axis=3"),
    ({"type": "flatten", "start_axis": -3}, (3, 4), "got start_axis=-3"),
    ({"type": "reshape", "shape": [4, 4]}, (3, 5), "shape [4, 4] does not fit the input shape (3, 5) "
                                                   "(15 values per sample)"),
    ({"type": "reshape", "shape": [4, -1]}, (3, 5), "shape [4, -1] does not fit the input shape (3, 5)"),
    ({"type": "reshape", "shape": [-1, -1]}, (3, 5), "shape must hold positive sizes and at most one -1; "
                                                     "got shape=[-1, -1]"),
    ({"type": "reshape", "shape": [0, 5]}, (3, 5), "shape must hold positive sizes"),
    ({"type": "reshape", "shape": []}, (3, 5), "shape must be a non-empty list of integers; got shape=[]"),
    ({"type": "slice", "start": 5}, (4, 2), "start is out of range for 4 channels (-4 to 4); got start=5"),
    ({"type": "slice", "stop": -6}, (4, 2), "stop is out of range for 4 channels (-4 to 4); got stop=-6"),
    ({"type": "slice", "start": 3, "stop": 1}, (4, 2), "the slice 3:1:1 of 4 channels is empty"),
    ({"type": "slice", "step": 0}, (4, 2), "step must be >= 1; got step=0"),
    ({"type": "permute", "dims": [0, 1, 1]}, (3, 4), "dims must be a permutation of 0 to 2 starting with the "
                                                     "batch axis 0 (input shape (3, 4) with the batch); "
                                                     "got dims=[0, 1, 1]"),
    ({"type": "permute", "dims": [1, 0, 2]}, (3, 4), "got dims=[1, 0, 2]"),
    ({"type": "permute", "dims": [0, 2, 1]}, (3, 4, 5), "dims must be a permutation of 0 to 3"),
])
def test_config_errors(registry, layer, shape, message):
    with pytest.raises(ConfigError, match=re.escape(f"layer 'l' ({layer['type']}): ") + ".*" + re.escape(message)):
        one_layer(registry, layer, shape)


def test_channel_shuffle_through_a_rank_four_sample(registry, rng):
    # ShuffleNet's channel shuffle: (C, H, W) -> (g, C/g, H, W) -> (C/g, g, H, W) -> (C, H, W)
    layers = [{"type": "reshape", "shape": [2, 3, 4, 5]}, {"type": "permute", "dims": [0, 2, 1, 3, 4]},
              {"type": "reshape", "shape": [6, 4, 5]}]
    net = Network.from_config({"input": {"shape": [6, 4, 5]}, "layers": layers}, registry=registry, dtype="float64")
    x = rng.standard_normal((2, 6, 4, 5))
    expected = ref.reshape(ref.permute(ref.reshape(x, (2, 2, 3, 4, 5)), [0, 2, 1, 3, 4]), (2, 6, 4, 5))
    np.testing.assert_array_equal(net.forward(x), expected)
    check_network_gradients(net, batch=2)
