"""upsample, pad, pixel_shuffle, pixel_unshuffle, channel_shuffle against the naive references in
reference_resize.py over random configurations, finite-difference gradients, hand-worked values and
config errors."""

import math

import numpy as np
import pytest

import reference_resize as ref
from cnnrun.engine import ConfigError, Network
from cnnrun.engine.gradcheck import check_layer_gradients

TOL = {"rtol": 1e-12, "atol": 1e-12}


def run(registry, layer, x, grad_y=None):
    net = Network.from_config({"input": {"shape": list(x.shape[1:])}, "layers": [{"name": "layer", **layer}]},
                              registry=registry, dtype=x.dtype.name)
    y = net.forward(x, training=True)
    return y if grad_y is None else (y, net.backward(grad_y))


def upsample_cases(count, seed):
    rng = np.random.default_rng(seed)
    cases = []
    while len(cases) < count:
        size = [int(v) for v in rng.integers(1, 7, 2)]
        layer = {"type": "upsample", "mode": ("nearest", "bilinear")[len(cases) % 2]}
        if rng.random() < 0.5:
            layer["size"] = [int(v) for v in rng.integers(1, 10, 2)]
            out = layer["size"]
        else:
            scale = [float(rng.choice([0.5, 1.0, 1.5, 2.0, 2.5, 3.0])) for _ in range(2)]
            layer["scale_factor"] = scale if rng.random() < 0.7 else scale[0]
            scale = scale if isinstance(layer["scale_factor"], list) else [scale[0]] * 2
            out = [math.floor(n * s) for n, s in zip(size, scale)]
        if layer["mode"] == "bilinear" and rng.random() < 0.7:
            layer["align_corners"] = bool(rng.integers(2))
        if min(out) >= 1:
            cases.append((layer, (int(rng.integers(1, 3)), 2, *size), out))
    return cases


@pytest.mark.parametrize("layer, shape, out", upsample_cases(30, seed=21), ids=str)
def test_upsample_matches_reference(registry, layer, shape, out):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape)
    grad_y = rng.standard_normal((*shape[:2], *out))
    y, dx = run(registry, layer, x, grad_y)
    scale = layer.get("scale_factor")
    scale = None if scale is None else (scale if isinstance(scale, list) else [scale] * 2)
    if layer["mode"] == "nearest":
        expected_y, expected_dx = ref.upsample_nearest(x, out, scale), ref.upsample_nearest(x, out, scale, grad_y)
    else:
        corners = layer.get("align_corners", False)
        expected_y = ref.upsample_bilinear(x, out, scale, corners)
        expected_dx = ref.upsample_bilinear(x, out, scale, corners, grad_y)
    np.testing.assert_allclose(y, expected_y, **TOL)
    np.testing.assert_allclose(dx, expected_dx, **TOL)


def test_upsample_by_hand(registry):
    x = np.array([[[[1.0, 3.0]]]])
    np.testing.assert_array_equal(run(registry, {"type": "upsample", "scale_factor": 2}, x)[0, 0, 0], [1, 1, 3, 3])
    bilinear = run(registry, {"type": "upsample", "scale_factor": [1, 2], "mode": "bilinear"}, x)
    np.testing.assert_allclose(bilinear[0, 0, 0], [1, 1.5, 2.5, 3])  # sources 0, 0.25, 0.75, 1 (clamped)
    corners = run(registry, {"type": "upsample", "size": [1, 3], "mode": "bilinear", "align_corners": True}, x)
    np.testing.assert_allclose(corners[0, 0, 0], [1, 2, 3])
    # scale 1.5 on 5 columns: 7 outputs reading floor(o / 1.5) (PyTorch), not floor(o * 5 / 7)
    row = run(registry, {"type": "upsample", "scale_factor": [1, 1.5]}, np.arange(5.0).reshape(1, 1, 1, 5))
    np.testing.assert_array_equal(row[0, 0, 0], [0, 0, 1, 2, 2, 3, 4])
    # an unchanged size is the identity (ATen's nearest_idx), though floor(o / 1.2) would repeat column 0
    same = run(registry, {"type": "upsample", "scale_factor": [1, 1.2]}, np.arange(3.0).reshape(1, 1, 1, 3))
    np.testing.assert_array_equal(same[0, 0, 0], [0, 1, 2])


def pad_cases(count, seed):
    rng = np.random.default_rng(seed)
    cases = []
    for i in range(count):
        mode = ("constant", "reflect", "replicate", "circular")[i % 4]
        dims = 1 + int(rng.integers(2))
        size = [int(v) for v in rng.integers(2 if mode == "reflect" else 1, 7, dims)]
        limit = {"reflect": lambda n: n - 1, "circular": lambda n: n}.get(mode, lambda n: 4)
        sides = [int(rng.integers(0, limit(n) + 1)) for n in size * 2]  # [top, left, bottom, right]
        padding = sides[0] if rng.random() < 0.3 and sides[0] <= limit(min(size)) else sides
        layer = {"type": "pad", "padding": padding, "mode": mode}
        if mode == "constant" and rng.random() < 0.5:
            layer["value"] = float(rng.standard_normal())
        pads = tuple(zip(sides[:dims], sides[dims:])) if isinstance(padding, list) else ((padding, padding),) * dims
        cases.append((layer, (int(rng.integers(1, 3)), 2, *size), pads))
    return cases


@pytest.mark.parametrize("layer, shape, pads", pad_cases(32, seed=8), ids=str)
def test_pad_matches_reference(registry, layer, shape, pads):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape)
    x4, pads4 = (x, pads) if len(shape) == 4 else (x[:, :, None], ((0, 0), *pads))
    expected_y = ref.pad(x4, pads4, layer["mode"], layer.get("value", 0.0))
    grad_y = rng.standard_normal(expected_y.shape)
    expected_dx = ref.pad(x4, pads4, layer["mode"], 0.0, grad_y)
    y, dx = run(registry, layer, x, grad_y.reshape(*shape[:2], *expected_y.shape[4 - len(shape) + 2:]))
    np.testing.assert_array_equal(y, expected_y.reshape(y.shape))
    np.testing.assert_allclose(dx, expected_dx.reshape(shape), **TOL)


def test_pad_by_hand(registry):
    x = np.array([[[1.0, 2.0, 3.0]]])
    by_mode = {"constant": [7, 7, 1, 2, 3, 7], "reflect": [3, 2, 1, 2, 3, 2], "replicate": [1, 1, 1, 2, 3, 3],
               "circular": [2, 3, 1, 2, 3, 1]}
    for mode, expected in by_mode.items():
        y = run(registry, {"type": "pad", "padding": [2, 1], "mode": mode, "value": 7}, x)
        np.testing.assert_array_equal(y[0, 0], expected, err_msg=mode)


@pytest.mark.parametrize("layer, shape", [
    ({"type": "pixel_shuffle", "upscale_factor": 2}, (1, 8, 3, 1)),
    ({"type": "pixel_shuffle", "upscale_factor": 3}, (2, 9, 2, 3)),
    ({"type": "pixel_unshuffle", "downscale_factor": 2}, (2, 3, 4, 6)),
    ({"type": "pixel_unshuffle", "downscale_factor": 3}, (1, 1, 3, 9)),
    ({"type": "channel_shuffle", "groups": 3}, (2, 6, 2, 3)),
    ({"type": "channel_shuffle", "groups": 2}, (1, 4, 5)),
])
def test_shuffles_match_reference_and_backward_is_the_inverse(registry, layer, shape):
    rng = np.random.default_rng(2)
    x = rng.standard_normal(shape)
    x4 = x if x.ndim == 4 else x[..., None]
    expected = {"pixel_shuffle": lambda a: ref.pixel_shuffle(a, layer.get("upscale_factor")),
                "pixel_unshuffle": lambda a: ref.pixel_unshuffle(a, layer.get("downscale_factor")),
                "channel_shuffle": lambda a: ref.channel_shuffle(a, layer.get("groups"))}[layer["type"]](x4)
    grad_y = rng.standard_normal(expected.shape if x.ndim == 4 else expected.shape[:-1])
    y, dx = run(registry, layer, x, grad_y)
    np.testing.assert_array_equal(y, expected.reshape(y.shape))
    # a permutation's gradient is the inverse permutation: <y, g> = <x, dx> and dx is a permutation of g
    assert np.isclose(np.vdot(y, grad_y), np.vdot(x, dx))
    np.testing.assert_array_equal(np.sort(dx, axis=None), np.sort(grad_y, axis=None))


@pytest.mark.parametrize("layer, shape", [
    ({"type": "upsample", "scale_factor": 2}, (2, 2, 3)),
    ({"type": "upsample", "size": [5, 4], "mode": "bilinear"}, (2, 3, 3)),
    ({"type": "upsample", "scale_factor": [1.5, 0.5], "mode": "bilinear", "align_corners": True}, (1, 4, 5)),
    ({"type": "pad", "padding": [1, 2, 0, 1], "mode": "reflect"}, (2, 3, 4)),
    ({"type": "pad", "padding": [2, 1], "mode": "circular"}, (2, 3)),
    ({"type": "pad", "padding": 2, "mode": "replicate"}, (1, 2, 3)),
    ({"type": "pad", "padding": [0, 1, 2, 1], "value": 0.5}, (2, 2, 2)),
    ({"type": "pixel_shuffle", "upscale_factor": 2}, (4, 2, 3)),
    ({"type": "pixel_unshuffle", "downscale_factor": 2}, (1, 4, 2)),
    ({"type": "channel_shuffle", "groups": 2}, (4, 2, 2)),
])
def test_gradients_against_finite_differences(registry, layer, shape):
    check_layer_gradients(layer, shape, registry=registry)


@pytest.mark.parametrize("layer, shape, match", [
    ({"type": "upsample"}, (2, 4, 4), r"give exactly one of size and scale_factor; got size=null, scale_factor=null"),
    ({"type": "upsample", "size": 4, "scale_factor": 2}, (2, 4, 4), r"give exactly one of size and scale_factor"),
    ({"type": "upsample", "scale_factor": 0}, (2, 4, 4), r"scale_factor must be in \(0, inf\); got scale_factor=0"),
    ({"type": "upsample", "scale_factor": [2, 2, 2]}, (2, 4, 4), r"scale_factor must be a positive number or a list"),
    ({"type": "upsample", "scale_factor": 0.1}, (2, 4, 4), r"output size \(0, 0\) is not positive"),
    ({"type": "upsample", "size": 4, "mode": "bicubic"}, (2, 4, 4), r"mode must be one of \"nearest\", \"bilinear\""),
    ({"type": "upsample", "size": 4, "align_corners": True}, (2, 4, 4),
     r"align_corners works with mode \"bilinear\" only; got align_corners=true with mode=\"nearest\""),
    ({"type": "upsample", "size": 4}, (2, 4), r"expects a \(C, H, W\) input; got input shape \(2, 4\)"),
    ({"type": "pad", "padding": [1, 1, 1]}, (2, 4, 4),
     r"padding must be an integer, a list of 2 \(per dimension\) or 4 \(per side: \[top, left, bottom, right\]\) "
     r"integers; got padding=\[1, 1, 1\]"),
    ({"type": "pad", "padding": "same"}, (2, 4, 4), r"padding must be an integer, a list of 2 .*got padding=\"same\""),
    ({"type": "pad", "padding": 1, "mode": "edge"}, (2, 4, 4), r"mode must be one of \"constant\", \"reflect\""),
    ({"type": "pad", "padding": [0, 3], "mode": "reflect"}, (2, 3),
     r"reflect padding must be smaller than the padded axis; got padding=\[0, 3\] for input shape \(2, 3\)"),
    ({"type": "pad", "padding": 4, "mode": "circular"}, (2, 3, 5),
     r"circular padding must be at most the padded axis"),
    ({"type": "pixel_shuffle", "upscale_factor": 2}, (6, 2, 2),
     r"C divisible by upscale_factor\^2 = 4; got input shape \(6, 2, 2\)"),
    ({"type": "pixel_shuffle", "upscale_factor": 0}, (4, 2, 2), r"upscale_factor must be >= 1; got upscale_factor=0"),
    ({"type": "pixel_unshuffle", "downscale_factor": 2}, (1, 3, 2), r"H and W divisible by downscale_factor = 2"),
    ({"type": "channel_shuffle", "groups": 4}, (6, 2, 2), r"C divisible by groups = 4; got input shape \(6, 2, 2\)"),
])
def test_config_errors_name_layer_key_and_value(registry, layer, shape, match):
    config = {"input": {"shape": list(shape)}, "layers": [{"name": "l", **layer}]}
    with pytest.raises(ConfigError, match=match) as caught:
        Network.from_config(config, registry=registry)
    message = str(caught.value)
    assert "\n" not in message and f"layer 'l' ({layer['type']})" in message
