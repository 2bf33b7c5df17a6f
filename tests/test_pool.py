"""Pooling layers: kernels against the naive reference, finite differences, hand-worked values, errors."""

import numpy as np
import pytest

import reference_pool as ref
from cnnrun.engine import ConfigError, Network, jit
from cnnrun.engine.gradcheck import check_network_gradients

TOLERANCE = {"float64": {"rtol": 1e-12, "atol": 1e-12}, "float32": {"rtol": 1e-5, "atol": 1e-6}}


def build(registry, layer, shape, dtype="float64"):
    return Network.from_config({"input": {"shape": list(shape)}, "layers": [layer]},
                               registry=registry, dtype=dtype)


def run(registry, layer, x, grad_y=None):
    """Forward (and backward, given ``grad_y``) of a one-layer network of ``x``'s dtype."""
    net = build(registry, layer, x.shape[1:], x.dtype.name)
    y = net.forward(x, training=True)
    return y if grad_y is None else (y, net.backward(grad_y))


def pair(value):
    return (value, value) if isinstance(value, int) else tuple(value)


def reference(layer, x, grad_y=None):
    """The reference forward (or, given ``grad_y``, backward) of a window-pool layer config."""
    kind, kernel = layer["type"], layer["kernel_size"]
    options = [layer.get("stride") or kernel, layer.get("padding", 0), layer.get("ceil_mode", False)]
    if kind.startswith("avg"):
        options.append(layer.get("count_include_pad", True))
    if kind.endswith("2d"):
        kernel, options[0], options[1] = pair(kernel), pair(options[0]), pair(options[1])
    name = {"maxpool2d": "max_pool2d", "avgpool2d": "avg_pool2d", "maxpool1d": "max_pool1d",
            "avgpool1d": "avg_pool1d"}[kind]
    if grad_y is None:
        return getattr(ref, name)(x, kernel, *options)
    return getattr(ref, name + "_backward")(x, grad_y, kernel, *options)


def random_cases(per_kind=12, seed=7):
    """Seeded configurations: kernel 1-7 (non-square in 2-D), stride 1-3 or omitted, padding 0..k/2,
    both ceil modes and count_include_pad values, odd sizes, batch 1 or 2, float64 and float32,
    inputs with ties (small integers) or without."""
    rng = np.random.default_rng(seed)
    cases = []
    for kind in ("maxpool2d", "avgpool2d", "maxpool1d", "avgpool1d"):
        dims = 2 if kind.endswith("2d") else 1
        for i in range(per_kind):
            kernel = [int(k) for k in rng.integers(1, 8, dims)]
            padding = [int(rng.integers(0, k // 2 + 1)) for k in kernel]
            layer = {"type": kind, "kernel_size": kernel if dims == 2 else kernel[0],
                     "padding": padding if dims == 2 else padding[0], "ceil_mode": bool(rng.integers(2))}
            if rng.random() < 0.8:
                stride = [int(s) for s in rng.integers(1, 4, dims)]
                layer["stride"] = stride if dims == 2 else stride[0]
            if kind.startswith("avg"):
                layer["count_include_pad"] = bool(rng.integers(2))
            spatial = [k - 2 * p + int(rng.integers(0, 6)) for k, p in zip(kernel, padding)]
            shape = (int(rng.integers(1, 4)), *(max(1, s) for s in spatial))
            cases.append(pytest.param(layer, shape, int(rng.integers(1, 3)), ("float64", "float32")[i % 2],
                                      i % 3 == 0, len(cases), id=f"{kind}-{i}"))
    return cases


# kernel_size = stride = 2, padding 0: the specialised loop; odd sizes leave a row or column out of it
FAST_SHAPES = [((3, 6, 8), False, "float32", True), ((2, 7, 5), False, "float32", False),
               ((2, 7, 5), False, "float64", True), ((2, 5, 7), True, "float32", False)]
FAST_CASES = [
    pytest.param({"type": kind, "kernel_size": 2, "ceil_mode": ceil}, shape, 2, dtype, ties, 100 + i,
                 id=f"{kind}-2x2-{'x'.join(map(str, shape))}-{'ceil' if ceil else 'floor'}-{dtype}")
    for kind in ("maxpool2d", "avgpool2d")
    for i, (shape, ceil, dtype, ties) in enumerate(FAST_SHAPES)
]


@pytest.mark.parametrize("layer, shape, batch, dtype, ties, seed", random_cases() + FAST_CASES)
def test_forward_and_backward_match_reference(registry, layer, shape, batch, dtype, ties, seed):
    rng = np.random.default_rng(seed)
    draw = rng.integers(-2, 3, (batch, *shape)) if ties else rng.standard_normal((batch, *shape))
    x = draw.astype(dtype)
    expected = reference(layer, x.astype(np.float64))
    grad_y = rng.standard_normal(expected.shape).astype(dtype)
    y, grad_x = run(registry, layer, x, grad_y)
    assert y.shape == expected.shape and y.dtype == dtype and grad_x.dtype == dtype
    np.testing.assert_allclose(y, expected, **TOLERANCE[dtype])
    expected_grad = reference(layer, x.astype(np.float64), grad_y.astype(np.float64))
    np.testing.assert_allclose(grad_x, expected_grad, **TOLERANCE[dtype])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("shape", [(3, 4, 5), (2, 7), (1, 1, 1)])
def test_global_avgpool_matches_reference(registry, shape, dtype):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, *shape)).astype(dtype)
    grad_y = rng.standard_normal((2, shape[0]) + (1,) * (len(shape) - 1)).astype(dtype)
    y, grad_x = run(registry, {"type": "global_avgpool"}, x, grad_y)
    np.testing.assert_allclose(y, ref.global_avg_pool(x.astype(np.float64)), **TOLERANCE[dtype])
    np.testing.assert_allclose(grad_x, ref.global_avg_pool_backward(x, grad_y.astype(np.float64)),
                               **TOLERANCE[dtype])


@pytest.mark.parametrize("layer, shape", [
    ({"type": "maxpool2d", "kernel_size": [3, 2], "stride": [2, 1], "padding": [1, 1], "ceil_mode": True},
     (2, 5, 6)),
    ({"type": "maxpool2d", "kernel_size": 2}, (2, 5, 4)),
    ({"type": "avgpool2d", "kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True,
      "count_include_pad": False}, (2, 6, 5)),
    ({"type": "avgpool2d", "kernel_size": [2, 3], "stride": 1, "padding": [1, 0]}, (1, 4, 5)),
    ({"type": "avgpool2d", "kernel_size": 2}, (2, 4, 5)),
    ({"type": "maxpool1d", "kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True}, (2, 8)),
    ({"type": "avgpool1d", "kernel_size": 4, "stride": 3, "padding": 2, "ceil_mode": True}, (2, 9)),
    ({"type": "global_avgpool"}, (3, 4, 5)),
    ({"type": "global_avgpool"}, (3, 7)),
], ids=lambda v: v["type"] if isinstance(v, dict) else None)
def test_gradients_match_finite_differences(registry, layer, shape):
    net = build(registry, layer, shape)
    size = 2 * int(np.prod(shape))
    x = np.random.default_rng(0).permutation(size).reshape(2, *shape) * 0.1  # distinct: one max per window
    check_network_gradients(net, x=x)


def test_maxpool2d_by_hand(registry):
    x = np.array([[[[1, 5, 2, 0],
                    [3, 4, 8, 6],
                    [7, 0, 1, 2],
                    [9, 2, 3, 3]]]], dtype=np.float32)
    y, grad_x = run(registry, {"type": "maxpool2d", "kernel_size": 2}, x, np.ones((1, 1, 2, 2)))
    np.testing.assert_array_equal(y[0, 0], [[5, 8], [9, 3]])
    np.testing.assert_array_equal(grad_x[0, 0], [[0, 1, 0, 0],
                                                 [0, 0, 1, 0],
                                                 [0, 0, 0, 0],
                                                 [1, 0, 1, 0]])  # the tie 3, 3 goes to the first


def test_maxpool_overlapping_windows_accumulate(registry):
    x = np.array([[[0, 9, 1, 2]]], dtype=np.float64)
    layer = {"type": "maxpool1d", "kernel_size": 2, "stride": 1}
    y, grad_x = run(registry, layer, x, np.array([[[1.0, 2.0, 4.0]]]))
    np.testing.assert_array_equal(y[0, 0], [9, 9, 2])
    np.testing.assert_array_equal(grad_x[0, 0], [0, 3, 0, 4])


@pytest.mark.parametrize("count_include_pad, expected, expected_grad", [
    (True, [[0.25, 1.25], [2.75, 7.0]], np.full((3, 3), 0.25)),
    (False, [[1.0, 2.5], [5.5, 7.0]], [[1.0, 0.5, 0.5], [0.5, 0.25, 0.25], [0.5, 0.25, 0.25]]),
])
def test_avgpool2d_padding_by_hand(registry, count_include_pad, expected, expected_grad):
    x = np.arange(1, 10, dtype=np.float64).reshape(1, 1, 3, 3)
    layer = {"type": "avgpool2d", "kernel_size": 2, "stride": 2, "padding": 1,
             "count_include_pad": count_include_pad}
    y, grad_x = run(registry, layer, x, np.ones((1, 1, 2, 2)))
    np.testing.assert_allclose(y[0, 0], expected, rtol=1e-15)
    np.testing.assert_allclose(grad_x[0, 0], expected_grad, rtol=1e-15)


@pytest.mark.parametrize("count_include_pad, expected", [(True, [1, 3, 5, 3]), (False, [1.5, 3, 5, 6])])
def test_ceil_mode_window_reaching_past_the_padding(registry, count_include_pad, expected):
    # L=6, k=3, s=2, p=1, ceil: 4 windows; the last, [5, 8), is cut at L + p = 7: divisor 2 (with pad), 1 (without)
    x = np.arange(1, 7, dtype=np.float64).reshape(1, 1, 6)
    layer = {"type": "avgpool1d", "kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True,
             "count_include_pad": count_include_pad}
    np.testing.assert_allclose(run(registry, layer, x)[0, 0], expected, rtol=1e-15)


def test_ceil_mode_drops_a_window_starting_in_the_padding(registry):
    # L=5, k=2, s=2, p=1: ceil(5/2) + 1 = 4 windows, but the 4th would start at 5 = L: PyTorch gives 3
    layer = {"type": "maxpool1d", "kernel_size": 2, "stride": 2, "padding": 1, "ceil_mode": True}
    assert build(registry, layer, (1, 5)).output_shape == (1, 3)
    x = np.arange(1, 6, dtype=np.float64).reshape(1, 1, 5)
    np.testing.assert_array_equal(run(registry, layer, x)[0, 0], [1, 3, 5])
    assert build(registry, {**layer, "type": "avgpool2d"}, (1, 5, 5)).output_shape == (1, 3, 3)
    assert build(registry, {**layer, "padding": 0}, (1, 5)).output_shape == (1, 3)  # ceil keeps [4, 6)
    assert build(registry, {**layer, "padding": 0, "ceil_mode": False}, (1, 5)).output_shape == (1, 2)


def test_max_pools_propagate_nan_like_pytorch(registry):
    # PyTorch takes a value if `val > max || isnan(val)`: the last NaN of a window wins
    x = np.array([[[np.nan, 1, np.nan, 2, 0, 0]]])
    y, grad_x = run(registry, {"type": "maxpool1d", "kernel_size": 3}, x, np.array([[[1.0, 2.0]]]))
    np.testing.assert_array_equal(y[0, 0], [np.nan, 2])
    np.testing.assert_array_equal(grad_x[0, 0], [0, 0, 1, 2, 0, 0])
    x2 = np.array([[[[np.nan, 1], [np.nan, 0]]]], dtype=np.float32)  # the 2x2 loop
    y, grad_x = run(registry, {"type": "maxpool2d", "kernel_size": 2}, x2, np.ones((1, 1, 1, 1)))
    assert np.isnan(y[0, 0, 0, 0])
    np.testing.assert_array_equal(grad_x[0, 0], [[0, 0], [1, 0]])


def test_repeated_calls_and_batch_sizes(registry):
    layer = {"type": "maxpool2d", "kernel_size": 3, "stride": 2, "padding": 1}
    net = build(registry, layer, (2, 5, 5))
    rng = np.random.default_rng(5)
    first, second = rng.standard_normal((3, 2, 5, 5)), rng.standard_normal((1, 2, 5, 5))
    y_first = net.forward(first, training=True)
    kept = y_first.copy()
    net.forward(second, training=True)
    grad_y = rng.standard_normal((1, 2, 3, 3))
    np.testing.assert_array_equal(net.backward(grad_y), reference(layer, second, grad_y))
    np.testing.assert_array_equal(y_first, kept)  # outputs are not workspace buffers


def test_pools_have_no_parameters_and_no_macs(registry):
    config = {"input": {"shape": [3, 8, 8]}, "layers": [
        {"type": "maxpool2d", "kernel_size": 2, "name": "p1"},
        {"type": "avgpool2d", "kernel_size": 3, "stride": 1, "padding": 1},
        {"type": "global_avgpool"}]}
    net = Network.from_config(config, registry=registry)
    assert [(r["output_shape"], r["params"], r["macs"]) for r in net.summary()] == [
        ([3, 4, 4], 0, 0), ([3, 4, 4], 0, 0), ([3, 1, 1], 0, 0)]
    pool = net.nodes[0].layer
    assert pool.get_config() == {"type": "maxpool2d", "name": "p1", "kernel_size": 2, "stride": None,
                                 "padding": 0, "ceil_mode": False, "dilation": 1}
    assert repr(net.nodes[1].layer) == "AvgPool2d('avgpool2d_1', kernel_size=3, stride=1, padding=1)"


@pytest.mark.parametrize("layer, shape, match", [
    ({"type": "maxpool2d", "kernel_size": 3, "padding": 2}, (1, 8, 8),
     r"padding must be at most half of kernel_size; got padding=2 with kernel_size=3"),
    ({"type": "avgpool1d", "kernel_size": 4, "padding": [3]}, (1, 8),
     r"padding must be at most half of kernel_size; got padding=\[3\] with kernel_size=4"),
    ({"type": "maxpool2d", "kernel_size": [0, 3]}, (1, 8, 8),
     r"kernel_size must be positive; got kernel_size=\[0, 3\]"),
    ({"type": "avgpool2d", "kernel_size": 2, "stride": [2, 0]}, (1, 8, 8), r"stride must be positive"),
    ({"type": "maxpool1d", "kernel_size": [2, 2]}, (1, 8),
     r"kernel_size must be an integer or a list of 1 integers"),
    ({"type": "maxpool2d", "kernel_size": 2, "padding": -1}, (1, 8, 8), r"padding must be >= 0"),
    ({"type": "avgpool2d", "kernel_size": 2, "ceil_mode": "yes"}, (1, 8, 8), r"ceil_mode must be true or false"),
    ({"type": "maxpool2d", "kernel_size": 2, "count_include_pad": False}, (1, 8, 8),
     r"unknown key 'count_include_pad'"),
    ({"type": "maxpool2d", "kernel_size": 2}, (3, 8),
     r"layer 'maxpool2d_1' \(maxpool2d\): expects a \(C, H, W\) input; got input shape \(3, 8\) \(use maxpool1d"),
    ({"type": "avgpool1d", "kernel_size": 2}, (3, 8, 8),
     r"avgpool1d\): expects a \(C, L\) input; got input shape \(3, 8, 8\) \(use avgpool2d"),
    ({"type": "avgpool2d", "kernel_size": 3}, (1, 2, 9),
     r"output size \(0, 3\) is not positive: input shape \(1, 2, 9\) is smaller than kernel_size=\[3, 3\]"),
    ({"type": "maxpool1d", "kernel_size": 5, "padding": 1}, (1, 2), r"output size \(0,\) is not positive"),
    ({"type": "global_avgpool"}, (8,),
     r"global_avgpool\): expects a \(C, H, W\) or \(C, L\) input; got input shape \(8,\)"),
    ({"type": "maxpool2d"}, (1, 8, 8), r"missing required key 'kernel_size'"),
])
def test_config_errors(registry, layer, shape, match):
    with pytest.raises(ConfigError, match=match):
        build(registry, layer, shape)


@pytest.mark.parametrize("parallel", [False, True], ids=["one thread", "threads"])
@pytest.mark.parametrize("layer", [
    {"type": "maxpool2d", "kernel_size": 2},                      # the 2x2 loop, NaN rows to the exact loop
    {"type": "avgpool2d", "kernel_size": 2},
    {"type": "avgpool2d", "kernel_size": [7, 6]},                 # one window covering the whole plane
    {"type": "maxpool2d", "kernel_size": 3, "stride": 2, "padding": 1},
], ids=lambda layer: "-".join(map(str, layer.values())))
def test_fast_loops_on_many_planes_with_nans_and_ties(registry, monkeypatch, layer, parallel):
    monkeypatch.setattr(jit, "PARALLEL_MIN_WORK", 0 if parallel else 10 ** 18)
    rng = np.random.default_rng(11)
    x = rng.integers(-2, 3, (3, 5, 7, 6)).astype(np.float32)  # ties in most windows
    x[0, 1, 2, 3] = x[2, 4, 5, 0] = x[2, 4, 5, 1] = np.nan
    x[1, 2, 0, 0] = np.inf
    expected = reference(layer, x.astype(np.float64))
    grad_y = rng.standard_normal(expected.shape).astype(np.float32)
    y, grad_x = run(registry, layer, x, grad_y)
    np.testing.assert_allclose(y, expected, **TOLERANCE["float32"])
    np.testing.assert_allclose(grad_x, reference(layer, x.astype(np.float64), grad_y.astype(np.float64)),
                               **TOLERANCE["float32"])


@pytest.mark.parametrize("parallel", [False, True], ids=["one thread", "threads"])
def test_global_avgpool_on_many_planes(registry, monkeypatch, parallel):
    monkeypatch.setattr(jit, "PARALLEL_MIN_WORK", 0 if parallel else 10 ** 18)
    x = np.random.default_rng(12).standard_normal((3, 6, 9, 7)).astype(np.float32)
    grad_y = np.random.default_rng(13).standard_normal((3, 6, 1, 1)).astype(np.float32)
    y, grad_x = run(registry, {"type": "global_avgpool"}, x, grad_y)
    np.testing.assert_allclose(y, ref.global_avg_pool(x.astype(np.float64)), **TOLERANCE["float32"])
    np.testing.assert_allclose(grad_x, ref.global_avg_pool_backward(x, grad_y.astype(np.float64)),
                               **TOLERANCE["float32"])
