"""Issue 12's pooling and padding options against the naive references: per-side padding and
"same"/"same_lower" for conv and pools, max pooling with dilation, adaptive average and max pooling,
global max pooling, ``flatten`` on the global pools; finite-difference gradients; config errors."""

import numpy as np
import pytest

import reference_conv
import reference_pool_options as ref
from cnnrun.engine import ConfigError, Network
from cnnrun.engine.gradcheck import check_layer_gradients

TOLERANCE = {"float64": {"rtol": 1e-12, "atol": 1e-12}, "float32": {"rtol": 1e-5, "atol": 1e-6}}


def run(registry, layer, x, grad_y=None):
    net = Network.from_config({"input": {"shape": list(x.shape[1:])}, "layers": [{"name": "layer", **layer}]},
                              registry=registry, dtype=x.dtype.name)
    y = net.forward(x, training=True)
    return y if grad_y is None else (y, net.backward(grad_y))


def pads_of(padding, size, kernel, stride, dilation):
    """``((before, after), ...)`` of a JSON padding, from the references' own rules."""
    dims = len(size)
    if padding in ("same", "same_lower"):
        return tuple(ref.same_pads(i, k, s, d, padding == "same_lower") for i, k, s, d in
                     zip(size, kernel, stride, dilation))
    if isinstance(padding, int):
        return ((padding, padding),) * dims
    if len(padding) == 2 * dims:
        return tuple(zip(padding[:dims], padding[dims:]))
    return tuple((p, p) for p in padding)


def random_pool_cases(count, seed):
    """Max and average pools, 2-D and 1-D: kernel 1-5, stride 1-3, dilation 1-3 (max), per-side or
    "same"/"same_lower" padding, ceil_mode, count_include_pad, odd sizes, batch 1 or 2."""
    rng = np.random.default_rng(seed)
    cases = []
    while len(cases) < count:
        kind = ("maxpool2d", "avgpool2d", "maxpool1d", "avgpool1d")[len(cases) % 4]
        dims = 2 if kind.endswith("2d") else 1
        kernel = [int(k) for k in rng.integers(1, 6, dims)]
        stride = [int(s) for s in rng.integers(1, 4, dims)]
        dilation = [int(d) for d in rng.integers(1, 4, dims)] if kind.startswith("max") else [1] * dims
        size = [int(i) for i in rng.integers(1, 10, dims)]
        form = int(rng.integers(3))
        if form == 0:
            padding = [int(rng.integers(0, k // 2 + 1)) for k in kernel * 2]  # [top, left, bottom, right]
        else:
            padding = ("same", "same_lower")[form - 1]
        layer = {"type": kind, "kernel_size": kernel if dims == 2 else kernel[0],
                 "stride": stride if dims == 2 else stride[0], "padding": padding,
                 "ceil_mode": bool(rng.integers(2))}
        if kind.startswith("max"):
            layer["dilation"] = dilation if dims == 2 else dilation[0]
        else:
            layer["count_include_pad"] = bool(rng.integers(2))
        pads = pads_of(padding, size, kernel, stride, dilation)
        if any(2 * p > k for side, k in zip(pads, kernel) for p in side):
            continue  # PyTorch's rule: padding at most half the kernel (a "same" of a large stride can exceed it)
        out = [ref.output_size(i, k, s, b, a, d, layer["ceil_mode"]) for i, k, s, (b, a), d in
               zip(size, kernel, stride, pads, dilation)]
        if min(out) >= 1:
            cases.append((layer, (int(rng.integers(1, 3)), 2, *size), pads))
    return cases


def pool_reference(layer, x, pads, grad_y):
    """(y, grad_x) of the reference, 1-D layers run as height-1 2-D pools."""
    two_d = layer["type"].endswith("2d")
    x4 = x if two_d else x[:, :, None]
    lift = (lambda v: tuple(v) if isinstance(v, list) else (v, v)) if two_d else (lambda v: (1, v))
    pads4 = pads if two_d else ((0, 0), *pads)
    kernel, stride = lift(layer["kernel_size"]), lift(layer["stride"])
    g4 = grad_y if two_d else grad_y[:, :, None]
    if layer["type"].startswith("max"):
        y, indices = ref.max_pool2d(x4, kernel, stride, pads4, lift(layer["dilation"]), layer["ceil_mode"])
        dx = ref.indices_backward(x4, g4, indices)
    else:
        options = (kernel, stride, pads4, layer["ceil_mode"], layer["count_include_pad"])
        y, dx = ref.avg_pool2d(x4, *options)[0], ref.avg_pool2d_backward(x4, g4, *options)
    return (y, dx) if two_d else (y[:, :, 0], dx[:, :, 0])


@pytest.mark.parametrize("layer, shape, pads", random_pool_cases(40, seed=12),
                         ids=lambda v: str(v) if isinstance(v, tuple) else None)
def test_pools_with_per_side_padding_same_and_dilation_match_reference(registry, layer, shape, pads):
    rng = np.random.default_rng(3)
    x = rng.integers(-3, 4, shape).astype(np.float64) if layer["type"].startswith("max") else \
        rng.standard_normal(shape)  # ties in max pools: the first maximum wins
    y = run(registry, layer, x)
    grad_y = rng.standard_normal(y.shape)
    expected_y, expected_dx = pool_reference(layer, x, pads, grad_y)
    y, dx = run(registry, layer, x, grad_y)
    np.testing.assert_allclose(y, expected_y, **TOLERANCE["float64"])
    np.testing.assert_allclose(dx, expected_dx, **TOLERANCE["float64"])


def test_dilated_max_pool_and_per_side_padding_by_hand(registry):
    x = np.arange(25.0).reshape(1, 1, 5, 5)
    y = run(registry, {"type": "maxpool2d", "kernel_size": 2, "stride": 1, "dilation": 2}, x)
    np.testing.assert_array_equal(y[0, 0], [[12, 13, 14], [17, 18, 19], [22, 23, 24]])
    avg = run(registry, {"type": "avgpool1d", "kernel_size": 2, "padding": [1, 0]}, np.array([[[2.0, 4, 6]]]))
    np.testing.assert_array_equal(avg, [[[1.0, 5.0]]])  # windows [pad, 2], [4, 6]; the 6 without a partner dropped


@pytest.mark.parametrize("padding, expected", [("same", [6, 12, 7]), ("same_lower", [1, 6, 12])])
def test_same_upper_and_lower_put_the_odd_pixel_after_and_before(registry, padding, expected):
    """Kernel 2, stride 1 on 3 values: one pixel of padding, after (SAME_UPPER) or before (SAME_LOWER)."""
    x = np.array([[[1.0, 5.0, 7.0]]])
    conv = {"type": "conv1d", "out_channels": 1, "kernel_size": 2, "padding": padding, "bias": False}
    net = Network.from_config({"input": {"shape": [1, 3]}, "layers": [conv]}, registry=registry, dtype="float64")
    net.params["conv1d_1"]["weight"][...] = 1.0
    np.testing.assert_array_equal(net.forward(x)[0, 0], expected)


def random_conv_cases(count, seed):
    rng = np.random.default_rng(seed)
    cases = []
    while len(cases) < count:
        kind = ("conv2d", "conv1d")[len(cases) % 2]
        dims = 2 if kind == "conv2d" else 1
        kernel = [int(k) for k in rng.integers(1, 6, dims)]
        stride = [int(s) for s in rng.integers(1, 4, dims)]
        dilation = [int(d) for d in rng.choice([1, 1, 2], dims)]
        size = [int(i) for i in rng.integers(1, 9, dims)]
        groups = int(rng.integers(1, 3))
        padding = [[int(p) for p in rng.integers(0, 4, 2 * dims)], "same", "same_lower"][int(rng.integers(3))]
        pads = pads_of(padding, size, kernel, stride, dilation)
        out = [reference_conv.output_size(i, k, s, b, a, d) for i, k, s, (b, a), d in
               zip(size, kernel, stride, pads, dilation)]
        if min(out) >= 1:
            layer = {"type": kind, "out_channels": 2 * groups, "kernel_size": kernel, "stride": stride,
                     "dilation": dilation, "groups": groups, "padding": padding,
                     "algorithm": str(rng.choice(["im2col", "direct", "auto"])) if stride == [1] * dims else "im2col"}
            cases.append((layer, (int(rng.integers(1, 3)), groups, *size), pads))
    return cases


@pytest.mark.parametrize("layer, shape, pads", random_conv_cases(24, seed=5),
                         ids=lambda v: str(v) if isinstance(v, tuple) else None)
def test_convolutions_with_per_side_padding_match_reference(registry, layer, shape, pads):
    rng = np.random.default_rng(1)
    net = Network.from_config({"input": {"shape": list(shape[1:])}, "layers": [{"name": "conv", **layer}]},
                              registry=registry, dtype="float64")
    x = rng.standard_normal(shape)
    w, b = net.params["conv"]["weight"], net.params["conv"]["bias"]
    y = net.forward(x, training=True)
    grad_y = rng.standard_normal(y.shape)
    dx = net.backward(grad_y)
    options = dict(stride=layer["stride"], padding=pads, dilation=layer["dilation"], groups=layer["groups"])
    if layer["type"] == "conv1d":
        options = {k: (v[0] if k != "groups" else v) for k, v in options.items()}
        forward, backward = reference_conv.conv1d, reference_conv.conv1d_backward
    else:
        forward, backward = reference_conv.conv2d, reference_conv.conv2d_backward
    np.testing.assert_allclose(y, forward(x, w, b, **options), rtol=1e-10, atol=1e-12)
    ref_dx, ref_dw, ref_db = backward(x, w, grad_y, **options)
    np.testing.assert_allclose(dx, ref_dx, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(net.grads["conv"]["weight"], ref_dw, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(net.grads["conv"]["bias"], ref_db, rtol=1e-10, atol=1e-12)


ADAPTIVE_CASES = [((1, 2, 7, 5), [3, 2]), ((2, 1, 5, 5), 5), ((1, 3, 4, 9), [1, None]), ((2, 2, 3, 2), [5, 4]),
                  ((1, 1, 10, 7), 3), ((1, 2, 1, 1), 2)]


@pytest.mark.parametrize("kind", ["adaptive_avgpool2d", "adaptive_maxpool2d"])
@pytest.mark.parametrize("shape, output_size", ADAPTIVE_CASES)
def test_adaptive_pools_match_reference(registry, kind, shape, output_size):
    rng = np.random.default_rng(4)
    x = rng.integers(-2, 3, shape).astype(np.float64) if "max" in kind else rng.standard_normal(shape)
    out_hw = [shape[2 + i] if o is None else o for i, o in
              enumerate(output_size if isinstance(output_size, list) else [output_size] * 2)]
    grad_y = rng.standard_normal((*shape[:2], *out_hw))
    y, dx = run(registry, {"type": kind, "output_size": output_size}, x, grad_y)
    if "max" in kind:
        expected_y, indices = ref.adaptive_max_pool2d(x, out_hw)
        expected_dx = ref.indices_backward(x, grad_y, indices)
    else:
        expected_y, expected_dx = ref.adaptive_avg_pool2d(x, out_hw), ref.adaptive_avg_pool2d_backward(x, grad_y)
    np.testing.assert_allclose(y, expected_y, **TOLERANCE["float64"])
    np.testing.assert_allclose(dx, expected_dx, **TOLERANCE["float64"])


def test_adaptive_bins_overlap_by_pytorchs_rule(registry):
    """5 inputs into 3 bins: [0, 2), [1, 4), [3, 5)."""
    y = run(registry, {"type": "adaptive_avgpool2d", "output_size": [1, 3]}, np.array([[[[0.0, 3, 6, 9, 12]]]]))
    np.testing.assert_allclose(y[0, 0, 0], [1.5, 6, 10.5])


@pytest.mark.parametrize("shape", [(1, 3, 4, 5), (2, 2, 7)])
@pytest.mark.parametrize("flatten", [False, True])
def test_global_pools_and_flatten(registry, shape, flatten):
    rng = np.random.default_rng(2)
    x = rng.integers(-3, 4, shape).astype(np.float64)
    kept = (1,) * (len(shape) - 2)
    grad_y = rng.standard_normal(shape[:2] if flatten else (*shape[:2], *kept))
    y, dx = run(registry, {"type": "global_maxpool", "flatten": flatten}, x, grad_y)
    x4 = x.reshape(*shape[:2], 1, -1)
    expected, indices = ref.adaptive_max_pool2d(x4, (1, 1))
    np.testing.assert_array_equal(y, expected.reshape(y.shape))
    expected_dx = ref.indices_backward(x4, grad_y.reshape(*shape[:2], 1, 1), indices)
    np.testing.assert_array_equal(dx, expected_dx.reshape(shape))
    y, dx = run(registry, {"type": "global_avgpool", "flatten": flatten}, x, grad_y)
    assert y.shape == grad_y.shape
    np.testing.assert_allclose(y, x.mean(axis=tuple(range(2, len(shape)))).reshape(y.shape), rtol=1e-12)
    np.testing.assert_allclose(dx, np.broadcast_to(grad_y.reshape(*shape[:2], *kept) / np.prod(shape[2:]), shape),
                               rtol=1e-12)


@pytest.mark.parametrize("layer, shape", [
    ({"type": "maxpool2d", "kernel_size": 3, "stride": 2, "dilation": 2, "padding": [1, 0, 1, 1]}, (2, 7, 6)),
    ({"type": "avgpool2d", "kernel_size": [3, 2], "stride": 2, "padding": [0, 1, 1, 0], "ceil_mode": True,
      "count_include_pad": False}, (2, 5, 6)),
    ({"type": "maxpool1d", "kernel_size": 2, "dilation": 3, "padding": "same_lower", "stride": 1}, (2, 7)),
    ({"type": "adaptive_avgpool2d", "output_size": [3, 2]}, (2, 7, 5)),
    ({"type": "adaptive_maxpool2d", "output_size": [2, 4]}, (2, 5, 6)),
    ({"type": "global_maxpool", "flatten": True}, (3, 4, 3)),
    ({"type": "conv2d", "out_channels": 2, "kernel_size": 3, "stride": 2, "padding": [2, 0, 1, 1]}, (2, 6, 5)),
    ({"type": "conv1d", "out_channels": 2, "kernel_size": 4, "padding": "same_lower"}, (2, 7)),
])
def test_gradients_against_finite_differences(registry, layer, shape):
    check_layer_gradients(layer, shape, registry=registry)


@pytest.mark.parametrize("layer, match", [
    ({"type": "conv2d", "out_channels": 2, "kernel_size": 3, "padding": [1, 2, 3]},
     r"layer 'l' \(conv2d\): padding must be an integer, a list of 2 \(per dimension\) or 4 \(per side: "
     r"\[top, left, bottom, right\]\) integers, or one of \"valid\", \"same\", \"same_lower\"; "
     r"got padding=\[1, 2, 3\]"),
    ({"type": "conv1d", "out_channels": 2, "kernel_size": 3, "padding": [1, -1]},
     r"padding must be >= 0; got padding=\[1, -1\]"),
    ({"type": "maxpool2d", "kernel_size": 2, "padding": "same_upper"},
     r"padding must be one of \"valid\", \"same\", \"same_lower\"; got padding=\"same_upper\""),
    ({"type": "maxpool2d", "kernel_size": 3, "padding": [0, 0, 2, 0]},
     r"padding must be at most half of kernel_size; got padding=\[0, 0, 2, 0\] with kernel_size=3"),
    ({"type": "maxpool2d", "kernel_size": 3, "dilation": 0}, r"dilation must be positive; got dilation=0"),
    ({"type": "avgpool2d", "kernel_size": 3, "dilation": 2}, r"unknown key 'dilation'"),
    ({"type": "adaptive_avgpool2d", "output_size": 0}, r"layer 'l' \(adaptive_avgpool2d\): output_size must be a "
     r"positive integer or a list \[H, W\] of positive integers or nulls; got output_size=0"),
    ({"type": "adaptive_maxpool2d", "output_size": [2, 2, 2]}, r"got output_size=\[2, 2, 2\]"),
    ({"type": "adaptive_maxpool2d", "output_size": None}, r"got output_size=null"),
    ({"type": "adaptive_maxpool2d"}, r"missing required key 'output_size'"),
    ({"type": "global_maxpool", "flatten": "yes"}, r"flatten must be true or false; got flatten=\"yes\""),
])
def test_config_errors_name_layer_key_and_value(registry, layer, match):
    config = {"input": {"shape": [2, 6, 6] if "1d" not in layer["type"] else [2, 6]},
              "layers": [{"name": "l", **layer}]}
    with pytest.raises(ConfigError, match=match) as caught:
        Network.from_config(config, registry=registry)
    assert "\n" not in str(caught.value)


def test_adaptive_pools_need_a_2d_input(registry):
    config = {"input": {"shape": [2, 6]}, "layers": [{"type": "adaptive_avgpool2d", "output_size": 2}]}
    with pytest.raises(ConfigError, match=r"expects a \(C, H, W\) input; got input shape \(2, 6\)"):
        Network.from_config(config, registry=registry)
