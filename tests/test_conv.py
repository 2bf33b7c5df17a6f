"""conv2d, conv1d and conv_transpose2d: kernels against the naive references in reference_conv.py,
finite-difference gradients, hand-worked values, config errors, parameters, MACs and init."""

import json
import math
import re
from functools import partial

import numpy as np
import pytest

import reference_conv as reference
from cnnrun.engine import CnnrunError, ConfigError, Context, Network, jit
from cnnrun.engine.gradcheck import check_layer_gradients
from cnnrun.engine.plugins import get_backend
from cnnrun.plugins.conv import cpu, rules


def _net(registry, layer, shape, dtype="float64"):
    config = {"input": {"shape": list(shape)}, "layers": [{"name": "conv", **layer}]}
    return Network.from_config(config, registry=registry, dtype=dtype)


def _tuple(value, n):
    return tuple(value) if isinstance(value, list) else (value,) * n


def _reference(layer, shape):
    """(forward(x, w, b), backward(x, w, grad)) of the reference for ``layer`` on inputs ``shape``."""
    kind = layer["type"]
    n = 1 if kind == "conv1d" else 2
    kernel, stride, dilation = (_tuple(layer.get(key, 1), n) for key in ("kernel_size", "stride", "dilation"))
    groups = layer.get("groups", 1)
    padding = layer.get("padding", 0)
    if kind == "conv_transpose2d":
        padding, output_padding = _tuple(padding, 2), _tuple(layer.get("output_padding", 0), 2)
        return (partial(reference.conv_transpose2d, stride=stride, padding=padding,
                        output_padding=output_padding, dilation=dilation, groups=groups),
                partial(reference.conv_transpose2d_backward, stride=stride, padding=padding,
                        dilation=dilation, groups=groups))
    if padding == "same":
        pads = tuple(reference.same_padding(*a) for a in zip(shape[1:], kernel, stride, dilation))
    elif padding == "valid":
        pads = ((0, 0),) * n
    else:
        pads = tuple((p, p) for p in _tuple(padding, n))
    if kind == "conv1d":
        options = {"stride": stride[0], "padding": pads[0], "dilation": dilation[0], "groups": groups}
        return partial(reference.conv1d, **options), partial(reference.conv1d_backward, **options)
    return (partial(reference.conv2d, stride=stride, padding=pads, dilation=dilation, groups=groups),
            partial(reference.conv2d_backward, stride=stride, padding=pads, dilation=dilation, groups=groups))


def _check_against_reference(registry, layer, shape, batch, seed=0):
    rng = np.random.default_rng(seed)
    net = _net(registry, layer, shape)
    forward, backward = _reference(layer, shape)
    params, grads = net.params["conv"], net.grads["conv"]
    x = rng.standard_normal((batch, *shape))
    y = net.forward(x)
    np.testing.assert_allclose(y, forward(x, params["weight"], params.get("bias")), rtol=1e-10, atol=1e-12)
    grad = rng.standard_normal(y.shape)
    dx = net.backward(grad)
    ref_dx, ref_dw, ref_db = backward(x, params["weight"], grad)
    np.testing.assert_allclose(dx, ref_dx, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(grads["weight"], ref_dw, rtol=1e-10, atol=1e-12)
    if layer.get("bias", True):
        np.testing.assert_allclose(grads["bias"], ref_db, rtol=1e-10, atol=1e-12)
    else:
        assert "bias" not in grads


def _random_cases(kind, count, seed, depthwise_3x3=False):
    """Seeded random configurations: kernel 1-7, stride 1-3, dilation 1-3, every padding form,
    groups 1 / depthwise / neither, odd sizes, batch 1 or 2; tiny enough for the Python references.
    ``depthwise_3x3``: depthwise 3x3 kernels only (their own CPU kernels)."""
    rng = np.random.default_rng(seed)
    n = 1 if kind == "conv1d" else 2
    cases = []
    while len(cases) < count:
        mode = "depthwise" if depthwise_3x3 else ("one", "depthwise", "grouped")[len(cases) % 3]
        groups = 1 if mode == "one" else int(rng.integers(2, 4))
        per_in = 1 if mode == "depthwise" else int(rng.integers(1, 4))
        per_out = int(rng.integers(1, 3))
        if kind == "conv_transpose2d":  # its conv has out_channels/groups input channels per group
            per_in, per_out = per_out, per_in
        kernel = [3] * n if depthwise_3x3 else [int(rng.integers(1, 8)) for _ in range(n)]
        stride = [int(rng.integers(1, 4)) for _ in range(n)]
        dilation = [int(rng.choice([1, 1, 2, 3])) for _ in range(n)]
        size = [int(rng.integers(1, 12)) for _ in range(n)]
        layer = {"type": kind, "out_channels": groups * per_out, "kernel_size": kernel, "stride": stride,
                 "dilation": dilation, "groups": groups}
        if kind == "conv_transpose2d":
            layer["padding"] = [int(rng.integers(0, k)) for k in kernel]
            layer["output_padding"] = [int(rng.integers(0, max(s, d))) for s, d in zip(stride, dilation)]
            out = [reference.transpose_output_size(*a) for a in
                   zip(size, kernel, stride, layer["padding"], layer["output_padding"], dilation)]
            cost = math.prod(size) * groups * per_in * per_out * math.prod(kernel)
        else:
            layer["padding"] = [int(rng.integers(0, 4)), [int(rng.integers(0, 4)) for _ in range(n)],
                                "same", "valid"][int(rng.integers(0, 4))]
            if layer["padding"] == "same":
                pads = [reference.same_padding(*a) for a in zip(size, kernel, stride, dilation)]
            else:
                pads = [(p, p) for p in _tuple(layer["padding"] if layer["padding"] != "valid" else 0, n)]
            out = [reference.output_size(i, k, s, b, a, d) for i, k, s, (b, a), d in
                   zip(size, kernel, stride, pads, dilation)]
            cost = math.prod(out) * groups * per_out * per_in * math.prod(kernel)
        if rng.random() < 0.25:
            layer["bias"] = False
        batch = int(rng.integers(1, 3))
        if min(out) >= 1 and batch * cost <= 6000:
            cases.append((layer, (groups * per_in, *size), batch))
    return cases


def _conv2d(**layer):
    return {"type": "conv2d", **layer}


def _conv1d(**layer):
    return {"type": "conv1d", **layer}


def _transpose(**layer):
    return {"type": "conv_transpose2d", **layer}


FIXED_CASES = [
    (_conv2d(out_channels=6, kernel_size=1), (4, 5, 7), 2),                          # pointwise
    (_conv2d(out_channels=4, kernel_size=1, groups=2), (6, 3, 4), 1),                # pointwise, groups
    (_conv2d(out_channels=4, kernel_size=3, padding=1, groups=4), (4, 6, 5), 2),     # depthwise
    (_conv2d(out_channels=3, kernel_size=3, padding=[3, 0], groups=3), (3, 5, 6), 2),  # its dx: padding (-1, 2)
    (_conv2d(out_channels=2, kernel_size=3, padding=1, dilation=2, groups=2), (2, 7, 6), 1),
    (_conv2d(out_channels=4, kernel_size=3, stride=2, padding=1, groups=4, bias=False), (4, 9, 12), 1),
    # depthwise 3x3 rows in vectors: several vectors of outputs a row, the last partial
    (_conv2d(out_channels=4, kernel_size=3, stride=2, padding=[1, 2], dilation=[1, 2], groups=2), (2, 5, 41), 1),
    (_conv2d(out_channels=3, kernel_size=3, padding=1, groups=3), (3, 4, 16), 2),   # 16 outputs a row
    (_conv2d(out_channels=6, kernel_size=[3, 5], stride=2, padding="same", groups=3), (3, 8, 7), 2),
    (_conv2d(out_channels=3, kernel_size=3), (1, 6, 6), 2),                          # one input channel
    # im2col's rows of taps in vectors: several vectors a row, the last partial, padding both sides
    (_conv2d(out_channels=4, kernel_size=3, stride=2, padding=1), (2, 5, 45), 1),
    (_conv2d(out_channels=3, kernel_size=3, stride=2, padding=2, dilation=2), (2, 4, 44), 1),
    (_conv2d(out_channels=3, kernel_size=3, padding=1, algorithm="im2col"), (2, 4, 37), 1),
    (_conv2d(out_channels=3, kernel_size=3, stride=3, padding=2), (2, 5, 40), 1),  # one value at a time
    (_conv2d(out_channels=5, kernel_size=3, padding=1), (3, 6, 7), 2),
    (_conv2d(out_channels=3, kernel_size=3, groups=3, padding=[0, 2]), (6, 5, 5), 1),
    (_conv2d(out_channels=4, kernel_size=4, stride=2, padding="same"), (2, 8, 9), 2),  # pads (1,1), (1,2)
    (_conv2d(out_channels=2, kernel_size=3, dilation=3, padding="valid"), (2, 9, 8), 1),
    (_conv2d(out_channels=2, kernel_size=7), (3, 7, 8), 1),
    (_conv2d(out_channels=3, kernel_size=1, stride=2), (4, 5, 5), 2),                # 1x1 strided
    (_conv2d(out_channels=4, kernel_size=1, padding=1, bias=False), (2, 3, 3), 1),   # 1x1 padded
    (_conv2d(out_channels=4, kernel_size=2, stride=3, padding=2, bias=False), (2, 5, 4), 2),
    (_conv1d(out_channels=4, kernel_size=1), (3, 9), 2),
    (_conv1d(out_channels=6, kernel_size=5, groups=3, padding="same"), (3, 10), 2),
    (_conv1d(out_channels=4, kernel_size=3, stride=2, padding="same", dilation=2, groups=2), (4, 12), 1),
    (_conv1d(out_channels=3, kernel_size=4, padding=[3], bias=False), (2, 6), 2),
    (_transpose(out_channels=3, kernel_size=3, stride=2, padding=1, output_padding=1), (4, 4, 5), 2),
    (_transpose(out_channels=4, kernel_size=3, dilation=2, output_padding=1), (2, 3, 3), 1),
    (_transpose(out_channels=4, kernel_size=3, groups=4, padding=1), (4, 5, 5), 2),  # depthwise
    (_transpose(out_channels=3, kernel_size=3, groups=3, stride=2), (6, 3, 4), 1),   # 2 inputs per output
    (_transpose(out_channels=6, kernel_size=1), (4, 3, 5), 2),                       # pointwise
    (_transpose(out_channels=4, kernel_size=[2, 3], stride=[2, 1], groups=2), (6, 3, 4), 2),
    (_transpose(out_channels=2, kernel_size=4, stride=3, padding=2, output_padding=[2, 0], bias=False),
     (3, 3, 3), 2),
]
RANDOM_CASES = (_random_cases("conv2d", 16, 1) + _random_cases("conv1d", 8, 2)
                + _random_cases("conv_transpose2d", 12, 3) + _random_cases("conv2d", 16, 4, depthwise_3x3=True)
                + _random_cases("conv_transpose2d", 8, 5, depthwise_3x3=True))


def _case_id(case):
    layer, shape, batch = case
    options = ",".join(f"{k}={json.dumps(v).replace(' ', '')}" for k, v in layer.items() if k != "type")
    return f"{layer['type']}[{options}]-in{list(shape)}x{batch}".replace(" ", "")


@pytest.mark.parametrize("case", FIXED_CASES + RANDOM_CASES, ids=_case_id)
def test_forward_and_backward_match_reference(registry, case):
    _check_against_reference(registry, *case)


@pytest.mark.parametrize("case", [
    (_conv2d(out_channels=4, kernel_size=3, stride=2, padding=1, groups=2), (4, 7, 6), 3),
    (_transpose(out_channels=4, kernel_size=3, stride=2, padding=1, output_padding=1), (2, 3, 4), 3),
], ids=_case_id)
def test_general_path_in_chunks_of_one_sample(registry, case, monkeypatch):
    monkeypatch.setattr(cpu, "WORKSPACE_BYTES", 1)
    _check_against_reference(registry, *case)


@pytest.mark.parametrize("layer, shape", [
    (_conv2d(out_channels=3, kernel_size=3, padding=1), (2, 4, 4)),
    (_conv2d(out_channels=4, kernel_size=3, stride=2, padding=1, groups=2), (2, 5, 5)),  # depthwise x2
    (_conv2d(out_channels=3, kernel_size=1), (4, 3, 3)),
    (_conv2d(out_channels=2, kernel_size=4, stride=2, padding="same"), (2, 6, 5)),
    (_conv2d(out_channels=4, kernel_size=2, dilation=2, groups=2), (4, 5, 5)),
    (_conv2d(out_channels=2, kernel_size=[3, 1], padding=[2, 0], bias=False), (3, 3, 4)),
    (_conv1d(out_channels=3, kernel_size=3, stride=2, padding="same"), (2, 7)),
    (_conv1d(out_channels=3, kernel_size=3, groups=3, dilation=2), (3, 8)),
    (_transpose(out_channels=2, kernel_size=3, stride=2, padding=1, output_padding=1), (3, 3, 3)),
    (_transpose(out_channels=4, kernel_size=2, dilation=2, groups=2), (2, 3, 3)),
    (_transpose(out_channels=3, kernel_size=3, groups=3, stride=2), (3, 3, 3)),
    (_transpose(out_channels=3, kernel_size=1), (2, 3, 3)),
], ids=lambda v: json.dumps(v).replace(" ", "") if isinstance(v, dict) else str(list(v)))
def test_gradients_match_finite_differences(registry, layer, shape):
    check_layer_gradients(layer, shape, registry=registry)


# -- known values ---------------------------------------------------------------------------------
@pytest.mark.parametrize("size, kernel, padding, stride, expected", [
    (5, 3, 0, 1, 3), (5, 3, 1, 1, 5), (7, 3, 0, 2, 3), (6, 3, 0, 2, 2), (10, 4, 1, 3, 3),
    (5, 5, 0, 1, 1), (32, 5, 2, 1, 32), (224, 7, 3, 2, 112), (227, 11, 0, 4, 55),
])
def test_output_size_is_floor_of_w_minus_f_plus_2p_over_s_plus_1(registry, size, kernel, padding, stride,
                                                                  expected):
    net = _net(registry, _conv2d(out_channels=2, kernel_size=kernel, padding=padding, stride=stride),
               (1, size, size))
    assert net.output_shape == (2, expected, expected)


X5 = [[1, 2, 0, 1, 3],
      [0, 1, 2, 3, 1],
      [1, 0, 1, 2, 2],
      [2, 1, 0, 1, 0],
      [3, 0, 1, 2, 1]]
SOBEL = [[1, 0, -1],
         [2, 0, -2],
         [1, 0, -1]]


@pytest.mark.parametrize("options, expected", [
    ({}, [[-3, -5, -2],
          [0, -6, -1],
          [6, -4, -1]]),
    ({"padding": 1, "stride": 2}, [[-5, 0, 5],
                                   [-2, -6, 8],
                                   [-1, -4, 5]]),
])
def test_5x5_input_3x3_kernel_worked_by_hand(registry, options, expected):
    net = _net(registry, _conv2d(out_channels=1, kernel_size=3, bias=False, **options), (1, 5, 5), "float32")
    net.params["conv"]["weight"][...] = SOBEL
    y = net.forward(np.array(X5, np.float32)[None, None])
    np.testing.assert_array_equal(y[0, 0], expected)


def test_vertical_edges_of_a_6x8_image(registry):
    image = np.zeros((6, 8), np.float32)
    image[:, 3:6] = 1  # columns 0-2 dark, 3-5 bright, 6-7 dark: a rising and a falling edge
    net = _net(registry, _conv2d(out_channels=1, kernel_size=[1, 2], bias=False), (1, 6, 8), "float32")
    net.params["conv"]["weight"][...] = [[[[1, -1]]]]
    y = net.forward(image[None, None])
    np.testing.assert_array_equal(y[0, 0], [[0, 0, -1, 0, 0, 1, 0]] * 6)


# -- errors ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("layer, shape, message", [
    (_conv2d(out_channels=4, kernel_size=[0, 3]), (3, 8, 8),
     r"kernel_size must be positive; got kernel_size=\[0, 3\]"),
    (_conv1d(out_channels=4, kernel_size=0), (3, 8),
     r"kernel_size must be positive; got kernel_size=0"),
    (_conv2d(out_channels=8, kernel_size=3, groups=4), (6, 14, 14),
     r"in_channels \(6\) must be divisible by groups \(4\); input shape \(6, 14, 14\)"),
    (_conv2d(out_channels=6, kernel_size=3, groups=4), (8, 14, 14),
     r"out_channels \(6\) must be divisible by groups \(4\); input shape \(8, 14, 14\)"),
    (_transpose(out_channels=4, kernel_size=3, groups=2), (3, 5, 5),
     r"in_channels \(3\) must be divisible by groups \(2\)"),
    (_conv2d(out_channels=2, kernel_size=7), (1, 5, 5),
     r"kernel_size=\[7, 7\] .*output size would be \(-1, -1\); input shape \(1, 5, 5\)"),
    (_conv1d(out_channels=2, kernel_size=3, dilation=4), (1, 8),
     r"kernel_size=\[3\] with dilation=\[4\] .*output size would be \(0,\)"),
    (_transpose(out_channels=2, kernel_size=3, padding=3), (1, 2, 2),
     r"padding=\[3, 3\] is too large: output size would be \(-2, -2\)"),
    (_conv2d(out_channels=2, kernel_size=3, padding="full"), (1, 5, 5),
     r"padding must be one of \"valid\", \"same\", \"same_lower\"; got padding=\"full\""),
    (_conv2d(out_channels=2, kernel_size=3, padding=-1), (1, 5, 5),
     r"padding must be >= 0; got padding=-1"),
    (_transpose(out_channels=2, kernel_size=3, padding="same"), (1, 5, 5),
     r"padding must be an integer or a list of 2 integers; got padding=\"same\""),
    (_transpose(out_channels=2, kernel_size=3, stride=2, output_padding=2), (1, 5, 5),
     r"output_padding must be smaller than stride or dilation; "
     r"got output_padding=2 with stride=2, dilation=1"),
    (_conv2d(out_channels=2, kernel_size=3), (3, 32),
     r"expects an input of shape \(C, H, W\); got input shape \(3, 32\)"),
    (_conv1d(out_channels=2, kernel_size=3), (3, 8, 8),
     r"expects an input of shape \(C, L\); got input shape \(3, 8, 8\)"),
    (_conv2d(out_channels=0, kernel_size=3), (3, 8, 8),
     r"out_channels must be >= 1; got out_channels=0"),
])
def test_config_errors_name_the_layer_and_value(registry, layer, shape, message):
    with pytest.raises(ConfigError, match=re.escape(f"layer 'conv' ({layer['type']}): ") + message):
        _net(registry, layer, shape)


# -- parameters, MACs, init, dtype ----------------------------------------------------------------
@pytest.mark.parametrize("layer, shape, expected, count", [
    (_conv2d(out_channels=8, kernel_size=3), (3, 8, 8), {"weight": (8, 3, 3, 3), "bias": (8,)}, 224),
    (_conv2d(out_channels=6, kernel_size=[3, 5], groups=2, bias=False), (4, 8, 8),
     {"weight": (6, 2, 3, 5)}, 180),
    (_conv1d(out_channels=4, kernel_size=5, groups=2), (6, 9), {"weight": (4, 3, 5), "bias": (4,)}, 64),
    (_transpose(out_channels=6, kernel_size=3, groups=2), (4, 5, 5),
     {"weight": (4, 3, 3, 3), "bias": (6,)}, 114),
])
def test_parameter_shapes_and_counts(registry, layer, shape, expected, count):
    net = _net(registry, layer, shape)
    assert {k: v.shape for k, v in net.params["conv"].items()} == expected
    assert net.parameter_count() == count == net.summary()[0]["params"]


@pytest.mark.parametrize("layer, shape, macs", [
    (_conv2d(out_channels=16, kernel_size=3, padding=1), (3, 32, 32), 16 * 32 * 32 * 3 * 9),
    (_conv2d(out_channels=8, kernel_size=3, stride=2, groups=4), (8, 9, 9), 8 * 4 * 4 * 2 * 9),
    (_conv1d(out_channels=6, kernel_size=5, padding="same"), (2, 20), 6 * 20 * 2 * 5),
    (_transpose(out_channels=6, kernel_size=3, stride=2, groups=2), (4, 5, 5), 4 * 5 * 5 * 3 * 9),
])
def test_macs_per_sample(registry, layer, shape, macs):
    assert _net(registry, layer, shape).summary()[0]["macs"] == macs


@pytest.mark.parametrize("layer, shape, fan_in", [
    (_conv2d(out_channels=8, kernel_size=3, groups=2), (4, 6, 6), 2 * 9),
    (_conv1d(out_channels=16, kernel_size=5), (3, 10), 3 * 5),
    (_transpose(out_channels=2, kernel_size=3), (8, 4, 4), 2 * 9),  # PyTorch: weight.shape[1] * kh * kw
])
def test_init_is_uniform_within_one_over_sqrt_fan_in(registry, layer, shape, fan_in):
    params = _net(registry, layer, shape).params["conv"]
    bound = 1 / math.sqrt(fan_in)
    for array in params.values():
        assert np.abs(array).max() <= bound
    assert np.abs(params["weight"]).max() > 0.9 * bound
    assert np.abs(params["bias"]).max() > 0.25 * bound


@pytest.mark.parametrize("layer, shape", [
    (_conv2d(out_channels=4, kernel_size=3, padding=1), (3, 6, 6)),               # general
    (_conv2d(out_channels=4, kernel_size=1), (3, 6, 6)),                          # pointwise
    (_conv2d(out_channels=6, kernel_size=3, groups=3), (3, 6, 6)),                # depthwise
    (_conv2d(out_channels=3, kernel_size=3, stride=2, padding=1, groups=3), (3, 5, 70)),  # rows in vectors
    (_conv2d(out_channels=3, kernel_size=3, padding=[0, 1], groups=3), (3, 4, 15)),
    (_conv2d(out_channels=4, kernel_size=3, stride=2, padding=1), (3, 5, 70)),     # im2col rows in vectors
    (_conv2d(out_channels=4, kernel_size=3, padding=1, algorithm="im2col"), (3, 4, 37)),
    (_conv1d(out_channels=4, kernel_size=3, stride=2, padding="same"), (3, 9)),
    (_transpose(out_channels=4, kernel_size=3, stride=2, output_padding=1), (3, 4, 4)),
])
def test_float32_stays_float32_and_agrees_with_float64(registry, layer, shape):
    x = np.random.default_rng(5).standard_normal((2, *shape))
    results = {}
    for dtype in ("float32", "float64"):
        net = _net(registry, layer, shape, dtype)
        y = net.forward(x)
        dx = net.backward(np.ones_like(y))
        results[dtype] = (y, dx, *net.grads["conv"].values())
    for got, want in zip(results["float32"], results["float64"]):
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_config_round_trips_and_repr_shows_non_defaults(registry):
    layer = _net(registry, _conv2d(out_channels=4, kernel_size=3, padding="same"), (3, 6, 6)).nodes[0].layer
    assert layer.get_config() == {"type": "conv2d", "name": "conv", "out_channels": 4, "kernel_size": 3,
                                  "stride": 1, "padding": "same", "dilation": 1, "groups": 1, "bias": True,
                                  "algorithm": "auto"}
    assert repr(layer) == "Conv2d('conv', out_channels=4, kernel_size=3, padding=\"same\")"


# -- every algorithm and kernel of cpu.py ---------------------------------------------------------
ROUTES = {  # settings of cpu.py and rules.py that send the same conv down each kernel of its path
    "shifted rows": {"PATCH_MIN_TAPS": 10 ** 9, "PATCH_FORWARD_MIN_TAPS": 10 ** 9},
    "patches": {"PATCH_MIN_TAPS": 1, "PATCH_FORWARD_MIN_TAPS": 1, "PATCH_MIN_ROWS": 1, "PATCH_TILE": 5},
    "small tiles": {"WORKSPACE_BYTES": 1, "TAP_BLOCK": 4, "PATCH_TILE": 1, "PATCH_MIN_TAPS": 1,
                    "PATCH_FORWARD_MIN_TAPS": 1},
}


def _algorithm_cases(kind, count, seed):
    """Seeded conv2d / conv_transpose2d configurations with 1-6 channels per group (several 4-row
    blocks and 3-tap blocks), kernel 1-4, stride mostly 1, dilation 1-2, every padding form."""
    rng = np.random.default_rng(seed)
    cases = []
    while len(cases) < count:
        groups = int(rng.choice([1, 1, 2, 3]))
        per_in, per_out = int(rng.integers(1, 7)), int(rng.integers(1, 7))
        kernel = [int(rng.integers(1, 5)) for _ in range(2)]
        stride = [int(rng.choice([1, 1, 1, 2])) for _ in range(2)]
        dilation = [int(rng.choice([1, 1, 2])) for _ in range(2)]
        size = [int(rng.integers(3, 10)) for _ in range(2)]
        layer = {"type": kind, "out_channels": groups * per_out, "kernel_size": kernel, "stride": stride,
                 "dilation": dilation, "groups": groups, "bias": bool(rng.random() < 0.75)}
        if kind == "conv_transpose2d":
            layer["padding"] = [int(rng.integers(0, k)) for k in kernel]
            out = [reference.transpose_output_size(i, k, s, p, 0, d) for i, k, s, p, d in
                   zip(size, kernel, stride, layer["padding"], dilation)]
        else:
            layer["padding"] = [int(rng.integers(0, 3)), "same", "valid"][int(rng.integers(0, 3))]
            pads = ([reference.same_padding(*a) for a in zip(size, kernel, stride, dilation)]
                    if layer["padding"] == "same" else [(0, 0) if layer["padding"] == "valid" else
                                                        (layer["padding"],) * 2] * 2)
            out = [reference.output_size(i, k, s, b, a, d) for i, k, s, (b, a), d in
                   zip(size, kernel, stride, pads, dilation)]
        batch = int(rng.integers(1, 4))
        cost = batch * math.prod(out if kind == "conv2d" else size) * groups * per_in * per_out * math.prod(kernel)
        if min(out) >= 1 and cost <= 20000:
            cases.append((layer, (groups * per_in, *size), batch))
    return cases


ALGORITHM_CASES = (_algorithm_cases("conv2d", 10, 11) + _algorithm_cases("conv_transpose2d", 6, 12)
                   + [(_conv2d(out_channels=9, kernel_size=3, padding=1), (8, 7, 6), 2),
                      (_conv2d(out_channels=5, kernel_size=[2, 3], stride=2, padding=1, groups=5), (5, 7, 7), 2),
                      (_transpose(out_channels=7, kernel_size=3, padding=1), (9, 5, 6), 2)])


def _cpu_pass(layer_obj, kind, x, params, grad, algorithm):
    """(y, dx, dw, db) through cpu.py's wrappers with ``algorithm``."""
    weight, bias = params["weight"], params.get("bias")
    grad_w, grad_b = np.empty_like(weight), (np.empty_like(bias) if bias is not None else None)
    ctx = Context(backend=get_backend("cpu"))
    if kind == "conv_transpose2d":
        geom = layer_obj._geometry()
        y = cpu.conv_transpose2d_forward(ctx, x, weight, bias, geom, grad.shape[2:], algorithm)
        dx = cpu.conv_transpose2d_backward(ctx, x, grad, weight, geom, grad_w, grad_b, algorithm)
    else:
        geom = layer_obj._geometry(x.shape[2:])
        y = cpu.conv2d_forward(ctx, x, weight, bias, geom, grad.shape[2:], algorithm)
        dx = cpu.conv2d_backward(ctx, x, grad, weight, geom, grad_w, grad_b, algorithm)
    return y, dx, grad_w, grad_b


@pytest.mark.parametrize("case", ALGORITHM_CASES, ids=_case_id)
def test_every_algorithm_kernel_and_thread_count_matches_reference(registry, case, monkeypatch):
    layer, shape, batch = case
    net = _net(registry, layer, shape)
    forward, backward = _reference(layer, shape)
    rng = np.random.default_rng(3)
    params = net.params["conv"]
    x = rng.standard_normal((batch, *shape))
    expected_y = forward(x, params["weight"], params.get("bias"))
    grad = rng.standard_normal(expected_y.shape)
    expected = (expected_y, *backward(x, params["weight"], grad))
    stride_one = _tuple(layer.get("stride", 1), 2) == (1, 1)
    for algorithm in (None, "im2col", "direct") if stride_one else (None, "im2col"):
        for route, settings in ROUTES.items():
            for parallel in (False, True) if route == "small tiles" else (False,):  # many tiles to share
                with monkeypatch.context() as patch:
                    for key, value in settings.items():
                        patch.setattr(rules if hasattr(rules, key) else cpu, key, value)
                    patch.setattr(jit, "PARALLEL_MIN_WORK", 0 if parallel else 10 ** 18)
                    got = _cpu_pass(net.nodes[0].layer, layer["type"], x, params, grad, algorithm)
                for name, a, b in zip(("y", "dx", "dw", "db"), got, expected):
                    if b is not None and (name != "db" or layer.get("bias", True)):
                        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12, err_msg=(
                            f"{name} with algorithm={algorithm}, {route}, {'parallel' if parallel else 'serial'}"))


@pytest.mark.parametrize("algorithm", ["im2col", "direct"])
@pytest.mark.parametrize("route", ["shifted rows", "patches"])
@pytest.mark.parametrize("layer, shape", [
    (_conv2d(out_channels=5, kernel_size=3, padding=1), (3, 5, 4)),
    (_conv2d(out_channels=4, kernel_size=[2, 3], dilation=2, groups=2, padding="same"), (4, 6, 6)),
    (_conv2d(out_channels=3, kernel_size=1, bias=False), (5, 3, 4)),
    (_transpose(out_channels=4, kernel_size=3, padding=1), (3, 4, 4)),
], ids=lambda v: json.dumps(v).replace(" ", "") if isinstance(v, dict) else str(v))
def test_algorithm_gradients_match_finite_differences(registry, monkeypatch, algorithm, route, layer, shape):
    choose = rules.choose_path
    monkeypatch.setattr(rules, "choose_path", lambda weight_shape, geom, _=None: choose(weight_shape, geom, algorithm))
    for key, value in ROUTES[route].items():
        monkeypatch.setattr(rules if hasattr(rules, key) else cpu, key, value)
    check_layer_gradients(layer, shape, registry=registry)


def test_unknown_or_unfit_algorithm_is_one_clear_error():
    geom = cpu.Geometry((3, 3), (2, 2), (1, 1), (1, 1), 1, (1, 1))
    with pytest.raises(CnnrunError, match=r"the direct conv algorithm needs stride 1; got stride=\(2, 2\)"):
        rules.choose_path((4, 3, 3, 3), geom, "direct")
    with pytest.raises(CnnrunError, match=r"unknown conv algorithm 'fft'; expected one of: im2col, direct"):
        rules.choose_path((4, 3, 3, 3), geom, "fft")
    assert rules.choose_path((4, 1, 3, 3), geom._replace(groups=4), "direct") == "depthwise"
    assert rules.choose_path((4, 3, 1, 1), geom._replace(kernel=(1, 1), stride=(1, 1)), "im2col") == "direct"
