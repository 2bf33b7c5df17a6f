"""The CPU conv paths added for speed: 1x1 convs on small maps by channels-last products
(plugins/conv/cpu.py ``_pointwise``, and its weight gradient), packed filters kept in frozen contexts,
the channels-last copy, and the vector kernels compiled for AVX2, against the float64 references of
tests/reference_conv.py, NumPy and finite differences."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import reference_conv as reference
from cnnrun.engine import Context, jit
from cnnrun.engine.gradcheck import check_layer_gradients
from cnnrun.engine.plugins import get_backend
from cnnrun.plugins.common import Geometry
from cnnrun.plugins.conv import cpu, rules
from cnnrun.plugins.conv.direct import channels_last

ONE_BY_ONE = Geometry((1, 1), (1, 1), (0, 0), (1, 1), 1, (0, 0))


def _cases(count, seed):
    """Seeded 1x1 convs on maps of at most POINTWISE_MAX_PIXELS pixels: batch 1-3, 1-13 channels
    (not multiples of 4 too), odd sizes."""
    rng = np.random.default_rng(seed)
    cases = [(1, 5, 7, (7, 7)), (1, 1, 1, (1, 1))]
    while len(cases) < count:
        size = (int(rng.integers(1, 8)), int(rng.integers(1, 8)))
        cases.append((int(rng.integers(1, 4)), int(rng.integers(1, 14)), int(rng.integers(1, 14)), size))
    return cases


def _spy(monkeypatch):
    """The names of the pointwise kernels called, in order."""
    calls = []
    for name in ("pointwise_product", "pointwise_weight"):
        kernel = getattr(cpu, name)
        monkeypatch.setattr(cpu, name, lambda *args, name=name, kernel=kernel: calls.append(name) or kernel(*args))
    return calls


@pytest.mark.parametrize("batch, channels, out_channels, size", _cases(8, 5), ids=str)
def test_pointwise_path_matches_reference(batch, channels, out_channels, size, monkeypatch):
    rng = np.random.default_rng(batch * 100 + channels)
    x = rng.standard_normal((batch, channels, *size))
    w = rng.standard_normal((out_channels, channels, 1, 1))
    b = rng.standard_normal(out_channels)
    options = {"stride": (1, 1), "padding": ((0, 0), (0, 0)), "dilation": (1, 1), "groups": 1}
    expected_y = reference.conv2d(x, w, b, **options)
    grad = rng.standard_normal(expected_y.shape)
    expected = (expected_y, *reference.conv2d_backward(x, w, grad, **options))
    calls = _spy(monkeypatch)
    for settings in ({}, {"WORKSPACE_BYTES": 1}):  # one tile per sample; one pixel per tile
        for parallel in (False, True):
            with monkeypatch.context() as patch:
                for key, value in settings.items():
                    patch.setattr(cpu, key, value)
                patch.setattr(jit, "PARALLEL_MIN_WORK", 0 if parallel else 10 ** 18)
                ctx = Context(backend=get_backend("cpu"))
                dw, db = np.empty_like(w), np.empty_like(b)
                y = cpu.conv2d_forward(ctx, x, w, b, ONE_BY_ONE, size)
                dx = cpu.conv2d_backward(ctx, x, grad, w, ONE_BY_ONE, dw, db)
                # conv_transpose2d's forward with the filter (C, O) is conv2d's input gradient
                dx_t = cpu.conv_transpose2d_forward(ctx, grad, w, None, ONE_BY_ONE, size)
            for name, got, want in zip(("y", "dx", "dw", "db", "transpose"), (y, dx, dw, db, dx_t),
                                       (*expected, expected[1])):
                np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12, err_msg=f"{name} with {settings}")
    # every product by the pointwise path: forward, weight gradient, input gradient, transpose
    assert calls == ["pointwise_product", "pointwise_weight", "pointwise_product", "pointwise_product"] * 4


def test_larger_maps_padded_or_grouped_1x1_take_shifted_rows(monkeypatch):
    calls = _spy(monkeypatch)
    ctx = Context(backend=get_backend("cpu"))
    x = np.ones((1, 4, 8, 8))
    cpu.conv2d_forward(ctx, x, np.ones((4, 4, 1, 1)), None, ONE_BY_ONE, (8, 8))  # 64 > 49 pixels
    cpu.conv2d_forward(ctx, x[:, :, :4, :4], np.ones((4, 4, 1, 1)), None, ONE_BY_ONE._replace(padding=(1, 1)),
                       (6, 6))
    cpu.conv2d_forward(ctx, x[:, :, :4, :4], np.ones((4, 2, 1, 1)), None, ONE_BY_ONE._replace(groups=2), (4, 4))
    many = np.ones((1, 256, 8, 8))  # many channels do not change it
    cpu.conv2d_forward(ctx, many, np.ones((3, 256, 1, 1)), None, ONE_BY_ONE, (8, 8))
    assert calls == []
    cpu.conv2d_forward(ctx, x[:, :, :7, :7], np.ones((4, 4, 1, 1)), None, ONE_BY_ONE, (7, 7))
    assert calls == ["pointwise_product"]


@pytest.mark.parametrize("size", [(8, 8), (5, 12)])
def test_weight_gradient_alone_takes_channels_last_products_up_to_64_pixels(size, monkeypatch):
    """At 50-64 pixels the forward and input gradient take shifted rows, the weight gradient the
    pointwise path's products: all three against the float64 reference."""
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((2, 6, *size)), rng.standard_normal((5, 6, 1, 1))
    options = {"stride": (1, 1), "padding": ((0, 0), (0, 0)), "dilation": (1, 1), "groups": 1}
    grad = rng.standard_normal((2, 5, *size))
    expected = (reference.conv2d(x, w, None, **options), *reference.conv2d_backward(x, w, grad, **options)[:2])
    calls = _spy(monkeypatch)
    ctx = Context(backend=get_backend("cpu"))
    dw = np.empty_like(w)
    y = cpu.conv2d_forward(ctx, x, w, None, ONE_BY_ONE, size)
    dx = cpu.conv2d_backward(ctx, x, grad, w, ONE_BY_ONE, dw, None)
    for name, got, want in zip(("y", "dx", "dw"), (y, dx, dw), expected):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12, err_msg=name)
    assert calls == ["pointwise_weight"]
    cpu.conv2d_backward(ctx, x[:, :, :, :5], grad[:, :, :, :5], w, ONE_BY_ONE, dw, None)  # 40 pixels
    cpu.conv2d_backward(ctx, np.ones((1, 6, 9, 8)), np.ones((1, 5, 9, 8)), w, ONE_BY_ONE, dw, None)  # 72
    assert calls == ["pointwise_weight", "pointwise_weight", "pointwise_product"]


@pytest.mark.parametrize("shape", [(5, 3, 3), (4, 1, 7)])
def test_pointwise_gradients_match_finite_differences(registry, shape, monkeypatch):
    calls = _spy(monkeypatch)
    check_layer_gradients({"type": "conv2d", "name": "conv", "out_channels": 3, "kernel_size": 1}, shape,
                          registry=registry)
    assert "pointwise_weight" in calls and "pointwise_product" in calls


@pytest.mark.parametrize("kernel, stride, padding, route", [
    ((3, 3), (1, 1), (1, 1), {}),  # shifted rows
    ((3, 3), (2, 2), (1, 1), {"PATCH_FORWARD_MIN_TAPS": 1, "PATCH_MIN_ROWS": 1}),  # channels-last patches
    ((3, 3), (2, 2), (1, 1), {}),  # im2col
    ((1, 1), (1, 1), (0, 0), {}),  # pointwise
])
def test_frozen_context_packs_the_filter_once_and_gives_the_same_result(kernel, stride, padding, route,
                                                                     monkeypatch):
    for key, value in route.items():
        monkeypatch.setattr(rules, key, value)
    rng = np.random.default_rng(1)
    x, w, b = rng.standard_normal((2, 6, 5, 5)), rng.standard_normal((5, 6, *kernel)), rng.standard_normal(5)
    geom = Geometry(kernel, stride, padding, (1, 1), 1, padding)
    out_hw = tuple((5 + 2 * p - k) // s + 1 for k, s, p in zip(kernel, stride, padding))
    expected = cpu.conv2d_forward(Context(backend=get_backend("cpu")), x, w, b, geom, out_hw, "im2col")
    frozen = Context(backend=get_backend("cpu"))
    frozen.frozen = True
    made = []
    monkeypatch.setattr(frozen, "derived", lambda key, make: Context.derived(
        frozen, key, lambda: made.append(key) or make()))
    for _ in range(3):
        np.testing.assert_allclose(cpu.conv2d_forward(frozen, x, w, b, geom, out_hw), expected, rtol=1e-12)
    assert len(made) == 1


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("channels, height, width, top, left, rows, cols", [
    (3, 4, 5, 1, 1, 6, 7),        # zero padding on every side
    (21, 3, 37, 0, 2, 3, 40),     # channels and columns over a vector: blocks with partial edges
    (16, 5, 16, -1, -3, 2, 11),   # a negative top/left crops x
    (1, 2, 2, 0, 0, 2, 2),
])
def test_channels_last_copy_moves_each_value_and_zeros_the_rest(dtype, channels, height, width, top, left, rows,
                                                                 cols):
    """direct.channels_last (blocks transposed in registers) against NumPy's padding and transpose."""
    x = np.random.default_rng(4).standard_normal((2, channels, height, width)).astype(dtype)
    out = np.full((2, rows, cols, channels), np.nan, dtype)
    channels_last(x, out, top, left)
    padded = np.zeros((2, channels, rows + 2 * height, cols + 2 * width), dtype)
    padded[:, :, height + top:2 * height + top, width + left:2 * width + left] = x
    expected = padded[:, :, height:height + rows, width:width + cols].transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(out, expected)


AVX2_CONV_CHECK = """
import sys
import numpy as np
sys.path.insert(0, {tests!r})
import reference_conv as reference
from cnnrun.engine import Network
from cnnrun.plugins.conv.direct import channels_last
from cnnrun.plugins.products import blocks
assert blocks.VECTOR_BYTES == 32
rng = np.random.default_rng(6)
for dtype, tolerance in (("float32", 1e-4), ("float64", 1e-10)):  # 8 and 4 lanes
    x = rng.standard_normal((2, 11, 3, 19)).astype(dtype)
    out = np.empty((2, 5, 22, 11), dtype)
    channels_last(x, out, 1, 2)
    expected = np.zeros((2, 11, 5, 22), dtype)
    expected[:, :, 1:4, 2:21] = x
    assert np.array_equal(out, expected.transpose(0, 2, 3, 1))
    for layer, shape in (({{"stride": 2}}, (3, 5, 37)),                      # im2col's strided rows
                         ({{"algorithm": "winograd"}}, (10, 5, 7))):        # the tile-major weight pass
        config = {{"name": "t", "input": {{"shape": list(shape)}},
                  "layers": [{{"type": "conv2d", "name": "conv", "out_channels": 6, "kernel_size": 3, "padding": 1,
                              **layer}}]}}
        net = Network.from_config(config, dtype=dtype)
        x = rng.standard_normal((2, *shape))
        y = net.forward(x.astype(dtype), training=True)
        grad = np.cos(y).astype(np.float64)
        dx = net.backward(grad.astype(dtype))
        w, b = (net.params["conv"][k].astype(np.float64) for k in ("weight", "bias"))
        options = {{"stride": (layer.get("stride", 1),) * 2, "padding": ((1, 1), (1, 1)), "dilation": (1, 1),
                   "groups": 1}}
        want = (reference.conv2d(x, w, b, **options), *reference.conv2d_backward(x, w, grad, **options)[:2])
        for got, ref in zip((y, dx, net.grads["conv"]["weight"]), want):
            np.testing.assert_allclose(got, ref, rtol=0, atol=tolerance * np.abs(ref).max())
    config = {{"name": "t", "input": {{"shape": [11, 6, 7]}},  # the depthwise taps along the channels
              "layers": [{{"type": "conv2d", "name": "dw", "out_channels": 11, "kernel_size": 3, "padding": 1,
                          "groups": 11}}]}}
    net = Network.from_config(config, dtype=dtype)
    x = rng.standard_normal((4, 11, 6, 7))
    w, b = (net.params["dw"][k].astype(np.float64) for k in ("weight", "bias"))
    want = reference.conv2d(x, w, b, stride=(1, 1), padding=((1, 1), (1, 1)), dilation=(1, 1), groups=11)
    np.testing.assert_allclose(net.forward(x.astype(dtype)), want, rtol=0, atol=tolerance * np.abs(want).max())
print("ok")
"""


def test_avx2_hosts_compute_the_same_vector_rows_and_tiles(tmp_path):
    """Compiled for a Haswell (AVX2, 8 float32 lanes) in a fresh process: the register transposes of
    the channels-last copy, im2col's strided rows, Winograd's channels-last tiles and the depthwise
    taps along the channels (an inference pass of 4 samples takes them)."""
    env = dict(os.environ, NUMBA_CPU_NAME="haswell", NUMBA_CPU_FEATURES="+avx,+avx2,+fma,+f16c,+popcnt,+sse4.2",
               NUMBA_CACHE_DIR=str(tmp_path))
    script = AVX2_CONV_CHECK.format(tests=str(Path(__file__).parent))
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
