"""Winograd F(2x2, 3x3) (plugins/conv/winograd.py) and conv2d's ``algorithm`` option: the transform
matrices of the paper, each hand-unrolled kernel against its matrix product, whole convolutions
against the naive reference and against im2col, finite-difference gradients, config errors and
the "auto" rule."""

import re

import numpy as np
import pytest

import reference_conv as reference
from cnnrun.engine import ConfigError, Network, jit
from cnnrun.engine.gradcheck import check_layer_gradients
from cnnrun.plugins.conv import winograd
from cnnrun.plugins.products import cpu as products
from cnnrun.plugins.common import Geometry
from cnnrun.plugins.conv.rules import resolve_algorithm


def _net(registry, layer, shape, dtype="float64"):
    config = {"input": {"shape": list(shape)}, "layers": [{"name": "conv", "type": "conv2d", **layer}]}
    return Network.from_config(config, registry=registry, dtype=dtype)


def _pads(padding, size):
    if padding == "same":
        return tuple(reference.same_padding(s, 3, 1, 1) for s in size)
    if padding == "valid":
        return ((0, 0), (0, 0))
    p = padding if isinstance(padding, list) else [padding, padding]
    return tuple((q, q) for q in p)


# -- the transforms -------------------------------------------------------------------------------
def test_transform_matrices_are_the_papers():
    """Lavin & Gray 2015, section 4.1, F(2, 3)."""
    np.testing.assert_array_equal(winograd.B_T, [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]])
    np.testing.assert_array_equal(winograd.G, [[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
    np.testing.assert_array_equal(winograd.A_T, [[1, 1, 1, 0], [0, 1, -1, -1]])


def test_f23_gives_two_outputs_of_a_3_tap_correlation():
    d, g = np.array([1.0, 2, 3, 4]), np.array([2.0, -1, 3])
    y = winograd.A_T @ ((winograd.G @ g) * (winograd.B_T @ d))
    np.testing.assert_array_equal(y, [1 * 2 - 2 + 3 * 3, 2 * 2 - 3 + 4 * 3])  # [9, 13]


def test_nested_f2x2_3x3_gives_a_2x2_correlation(rng):
    d, g = rng.standard_normal((4, 4)), rng.standard_normal((3, 3))
    u, v = winograd.G @ g @ winograd.G.T, winograd.B_T @ d @ winograd.B_T.T
    y = winograd.A_T @ (u * v) @ winograd.A_T.T
    expected = [[np.sum(d[i:i + 3, j:j + 3] * g) for j in range(2)] for i in range(2)]
    np.testing.assert_allclose(y, expected, rtol=1e-13)


def _tiles_of(flat):
    """``(16, ...)`` -> ``(..., 4, 4)``: position k = 4*xi + nu as row xi, column nu."""
    return np.moveaxis(flat.reshape(4, 4, *flat.shape[1:]), (0, 1), (-2, -1))


def test_filter_kernels_are_g_g_gt_and_its_transpose(rng):
    w = rng.standard_normal((3, 2, 3, 3))
    u = np.zeros((16, 1, 4, 4))
    winograd._filter_tiles(w, u, False)
    np.testing.assert_allclose(_tiles_of(u[:, 0, :3, :2]), winograd.G @ w @ winograd.G.T, rtol=1e-14)
    assert not u[:, 0, 3:].any() and not u[:, 0, :, 2:].any()  # the padding stays zero
    winograd._filter_tiles(w, u, True)  # rotated by 180 degrees, channels swapped
    rotated = w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)
    np.testing.assert_allclose(_tiles_of(u[:, 0, :2, :3]), winograd.G @ rotated @ winograd.G.T, rtol=1e-14)
    du = rng.standard_normal((16, 1, 4, 4))
    dw = np.empty((3, 2, 3, 3))
    winograd._filter_gradient(du, dw)
    np.testing.assert_allclose(dw, winograd.G.T @ _tiles_of(du[:, 0, :3, :2]) @ winograd.G, rtol=1e-14)


def test_one_tile_kernels_are_the_matrix_products(rng):
    """A 4x4 input, no padding: one tile, so each transform is exactly its matrix product."""
    b_t, a_t = winograd.B_T, winograd.A_T
    x = rng.standard_normal((1, 3, 4, 4))
    v = np.zeros((16, 5))  # (16, plane): the tile's value of position k at v[k, first]
    winograd._input_block(x, 1, v, 2, 0, 0, 0, 1, 1, 1)
    np.testing.assert_allclose(_tiles_of(v[:, 2]), b_t @ x[0, 1] @ b_t.T, rtol=1e-14)
    assert not v[:, [0, 1, 3, 4]].any()
    mm = rng.standard_normal((16, 5))
    y = np.zeros((1, 2, 2, 2))
    winograd._output_block(mm, 1, 0.5, y, 1, 0, 1, 1, 1)
    np.testing.assert_allclose(y[0, 1], a_t @ _tiles_of(mm[:, 1]) @ a_t.T + 0.5, rtol=1e-14)
    dy = rng.standard_normal((1, 2, 2, 2))
    winograd._gradient_block(dy, 1, mm, 3, 0, 1, 1, 1)
    np.testing.assert_allclose(_tiles_of(mm[:, 3]), a_t.T @ dy[0, 1] @ a_t, rtol=1e-14)


def test_register_blocked_products(rng):
    a, b = rng.standard_normal((8, 12)), rng.standard_normal((12, 10))
    out = np.full((8, 10), np.nan)
    products.matrix_product(a, b, 7, out)  # the first 7 columns
    np.testing.assert_allclose(out[:, :7], a @ b[:, :7], rtol=1e-13)
    assert np.isnan(out[:, 7:]).all()
    tile_major = rng.standard_normal((10, 6))  # the weight gradient's: rows of a tile-major V, 3 columns from 2
    total = np.ones((8, 3))
    products.rows_product(a[:, :10], tile_major.reshape(-1), np.arange(10) * 6, np.int64(2), 3, total)
    np.testing.assert_allclose(total, 1 + a[:, :10] @ tile_major[:, 2:5], rtol=1e-13)


# -- whole convolutions ---------------------------------------------------------------------------
X5 = [[1, 2, 0, 1, 3],
      [0, 1, 2, 3, 1],
      [1, 0, 1, 2, 2],
      [2, 1, 0, 1, 0],
      [3, 0, 1, 2, 1]]
SOBEL = [[1, 0, -1],
         [2, 0, -2],
         [1, 0, -1]]


def test_5x5_input_sobel_worked_by_hand(registry):
    """Small integers and halves: float32 Winograd is exact here. Tiles: rows and columns (0, 1)
    and (2, the partial tile whose second output is dropped)."""
    net = _net(registry, {"out_channels": 1, "kernel_size": 3, "bias": False, "algorithm": "winograd"},
               (1, 5, 5), "float32")
    net.params["conv"]["weight"][...] = SOBEL
    y = net.forward(np.array(X5, np.float32)[None, None])
    np.testing.assert_array_equal(y[0, 0], [[-3, -5, -2],
                                            [0, -6, -1],
                                            [6, -4, -1]])
    dx = net.backward(np.ones_like(y))  # dx: the sum of the weights that read each pixel; dw: 3x3 window sums
    np.testing.assert_array_equal(dx[0, 0], [[1, 1, 0, -1, -1],
                                             [3, 3, 0, -3, -3],
                                             [4, 4, 0, -4, -4],
                                             [3, 3, 0, -3, -3],
                                             [1, 1, 0, -1, -1]])
    np.testing.assert_array_equal(net.grads["conv"]["weight"][0, 0], [[8, 12, 15], [8, 11, 12], [9, 8, 10]])


def _random_cases(count, seed):
    """Seeded: channels 1-8, groups 1 or 2, odd and even sizes 1-11, padding 0/1/2/[a, b]/"same"/
    "valid", batch 1-3, bias or not; small enough for the Python reference."""
    rng = np.random.default_rng(seed)
    cases = []
    while len(cases) < count:
        groups = int(rng.integers(1, 3))
        channels = groups * int(rng.integers(1, 9 // groups))
        out_channels = groups * int(rng.integers(1, 9 // groups))
        padding = [0, 1, 2, [int(rng.integers(0, 3)), int(rng.integers(0, 3))], "same", "valid"][len(cases) % 6]
        size = [int(rng.integers(1, 12)) for _ in range(2)]
        out = [s + sum(p) - 2 for s, p in zip(size, _pads(padding, size))]
        batch = int(rng.integers(1, 4))
        if min(out) >= 1 and batch * channels * out_channels * out[0] * out[1] <= 12000:
            layer = {"out_channels": out_channels, "kernel_size": 3, "padding": padding, "groups": groups,
                     "bias": bool(rng.random() < 0.75), "algorithm": "winograd"}
            cases.append((layer, (channels, *size), batch))
    return cases


CASES = [
    ({"out_channels": 1, "kernel_size": 3, "algorithm": "winograd"}, (1, 3, 3), 1),           # one tile, one output
    ({"out_channels": 4, "kernel_size": 3, "padding": 1, "algorithm": "winograd"}, (3, 1, 1), 2),
    ({"out_channels": 2, "kernel_size": 3, "padding": 3, "algorithm": "winograd"}, (2, 4, 5), 1),
    ({"out_channels": 4, "kernel_size": 3, "padding": "same", "groups": 4, "algorithm": "winograd"}, (4, 6, 7), 2),
] + _random_cases(18, 7)


def _case_id(case):
    layer, shape, batch = case
    options = ",".join(f"{k}={v}" for k, v in layer.items() if k not in ("kernel_size", "algorithm"))
    return f"{options}-in{list(shape)}x{batch}".replace(" ", "")


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_float64_forward_and_backward_match_reference(registry, case):
    layer, shape, batch = case
    rng = np.random.default_rng(3)
    net = _net(registry, layer, shape)
    options = {"stride": (1, 1), "padding": _pads(layer.get("padding", 0), shape[1:]), "dilation": (1, 1),
               "groups": layer.get("groups", 1)}
    _pass_matches_reference(net, rng.standard_normal((batch, *shape)), rng, options)


def _pass_matches_reference(net, x, rng, options, **forward_options):
    """One forward and backward of ``net``'s layer "conv" on x (a random output gradient) against the
    float64 reference: y, dx and the weight (and bias) gradients to 1e-10."""
    params, grads = net.params["conv"], net.grads["conv"]
    y = net.forward(x, **forward_options)
    np.testing.assert_allclose(y, reference.conv2d(x, params["weight"], params.get("bias"), **options),
                               rtol=1e-10, atol=1e-12)
    grad = rng.standard_normal(y.shape)
    dx = net.backward(grad)
    ref_dx, ref_dw, ref_db = reference.conv2d_backward(x, params["weight"], grad, **options)
    np.testing.assert_allclose(dx, ref_dx, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(grads["weight"], ref_dw, rtol=1e-10, atol=1e-12)
    if "bias" in params:
        np.testing.assert_allclose(grads["bias"], ref_db, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("case", CASES[4:12], ids=_case_id)
def test_float32_matches_reference_within_1e_4_of_the_output_scale(registry, case):
    """Float32 rounding (eps 6e-8) in the transforms (sums of at most 9 values, factors 1 and 1/2),
    the sums over at most 8 channels and the output transform leaves errors of about 2e-7 of the
    largest magnitude; a wrong index or transform coefficient is of the order of the values. 1e-4
    of the scale separates the two by a wide margin on both sides."""
    layer, shape, batch = case
    rng = np.random.default_rng(4)
    net = _net(registry, layer, shape, "float32")
    params, grads = net.params["conv"], net.grads["conv"]
    options = {"stride": (1, 1), "padding": _pads(layer.get("padding", 0), shape[1:]), "dilation": (1, 1),
               "groups": layer.get("groups", 1)}
    x = rng.standard_normal((batch, *shape)).astype(np.float32)
    w, b = params["weight"].astype(np.float64), params.get("bias")
    y = net.forward(x)
    grad = rng.standard_normal(y.shape).astype(np.float32)
    dx = net.backward(grad)
    ref_y = reference.conv2d(x.astype(np.float64), w, None if b is None else b.astype(np.float64), **options)
    ref_dx, ref_dw, _ = reference.conv2d_backward(x.astype(np.float64), w, grad.astype(np.float64), **options)
    for got, want in ((y, ref_y), (dx, ref_dx), (grads["weight"], ref_dw)):
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * np.abs(want).max())


@pytest.mark.parametrize("padding, shape, groups", [
    (1, (6, 13, 9), 1),
    ("same", (8, 10, 10), 2),
    (0, (4, 7, 12), 1),
    (1, (3, 5, 70), 1),        # 35 tiles a row: several vectors of tiles, the last one partial
    ([2, 0], (2, 4, 33), 1),
    (1, (20, 6, 7), 1),        # the weight gradient's tiles of 20 channels: several vectors, the last partial
    ("same", (20, 5, 6), 2),   # ... 10 channels a group
])
@pytest.mark.parametrize("dtype, tolerance", [("float64", 1e-10), ("float32", 1e-4)])
@pytest.mark.parametrize("min_tiles", [1, 7])
def test_matches_im2col_in_small_blocks(registry, monkeypatch, padding, shape, groups, dtype, tolerance,
                                        min_tiles):
    """Larger than the Python reference allows; blocks of one tile row, or of two that run across
    samples, on all threads, so the weight gradient is summed over many blocks and threads."""
    monkeypatch.setattr(winograd, "BLOCK_BYTES", 1)
    monkeypatch.setattr(winograd, "MIN_TILES", min_tiles)
    monkeypatch.setattr(winograd, "WEIGHT_MIN_TILES", min_tiles)
    monkeypatch.setattr(jit, "PARALLEL_MIN_WORK", 0)
    rng = np.random.default_rng(5)
    layer = {"out_channels": 6, "kernel_size": 3, "padding": padding, "groups": groups}
    nets = {name: _net(registry, {**layer, "algorithm": name}, shape, dtype) for name in ("winograd", "im2col")}
    for net in nets.values():
        net.initialize(9)
    x = rng.standard_normal((3, *shape))
    results = {}
    for name, net in nets.items():
        y = net.forward(x)
        dx = net.backward(np.cos(y))
        results[name] = (y, dx, net.grads["conv"]["weight"], net.grads["conv"]["bias"])
    for got, want in zip(results["winograd"], results["im2col"]):
        assert got.dtype == np.dtype(dtype)
        np.testing.assert_allclose(got, want, rtol=0, atol=tolerance * np.abs(want).max())


@pytest.mark.parametrize("layer, shape", [
    ({"out_channels": 3, "kernel_size": 3, "padding": 1}, (2, 5, 6)),
    ({"out_channels": 4, "kernel_size": 3, "padding": "same", "groups": 2}, (4, 5, 3)),
    ({"out_channels": 2, "kernel_size": 3, "padding": [2, 0], "bias": False}, (3, 4, 5)),
])
def test_gradients_match_finite_differences(registry, layer, shape):
    check_layer_gradients({"type": "conv2d", **layer, "algorithm": "winograd"}, shape, registry=registry)


# -- the option -----------------------------------------------------------------------------------
@pytest.mark.parametrize("layer, message", [
    ({"type": "conv2d", "kernel_size": 5, "algorithm": "winograd"},
     r"winograd needs kernel_size 3, stride 1 and dilation 1; got kernel_size=5, stride=1, dilation=1"),
    ({"type": "conv2d", "kernel_size": 3, "stride": 2, "algorithm": "winograd"},
     r"winograd needs kernel_size 3, stride 1 and dilation 1; got kernel_size=3, stride=2, dilation=1"),
    ({"type": "conv2d", "kernel_size": [3, 1], "dilation": [1, 2], "algorithm": "winograd"},
     r"winograd needs kernel_size 3, stride 1 and dilation 1; got kernel_size=\[3, 1\], stride=1, "
     r"dilation=\[1, 2\]"),
    ({"type": "conv2d", "kernel_size": 3, "algorithm": "fft"},
     r"algorithm must be one of \"auto\", \"im2col\", \"direct\", \"winograd\"; got algorithm=\"fft\""),
    ({"type": "conv2d", "kernel_size": 3, "stride": [1, 2], "algorithm": "direct"},
     r"direct needs stride 1; got stride=\[1, 2\] \(use \"im2col\" or \"auto\"\)"),
    ({"type": "conv1d", "kernel_size": 3, "algorithm": "winograd"},
     r"algorithm must be one of \"auto\", \"im2col\", \"direct\"; got algorithm=\"winograd\""),
    ({"type": "conv_transpose2d", "kernel_size": 3, "algorithm": "im2col"},
     r"unknown key 'algorithm'"),
])
def test_config_errors_name_the_layer_and_values(registry, layer, message):
    shape = [2, 9] if layer["type"] == "conv1d" else [2, 9, 9]
    config = {"input": {"shape": shape}, "layers": [{"name": "c1", "out_channels": 2, **layer}]}
    with pytest.raises(ConfigError, match=re.escape(f"layer 'c1' ({layer['type']}): ") + message):
        Network.from_config(config, registry=registry)


def test_config_and_repr_show_the_algorithm(registry):
    layer = _net(registry, {"out_channels": 4, "kernel_size": 3, "algorithm": "winograd"}, (3, 6, 6)).nodes[0].layer
    assert layer.get_config()["algorithm"] == "winograd"
    assert repr(layer) == "Conv2d('conv', out_channels=4, kernel_size=3, algorithm=\"winograd\")"
    default = _net(registry, {"out_channels": 4, "kernel_size": 3}, (3, 6, 6)).nodes[0].layer
    assert default.get_config()["algorithm"] == "auto"


# -- auto -----------------------------------------------------------------------------------------
def _geometry(kernel=3, stride=1, dilation=1, groups=1):
    return Geometry((kernel, kernel), (stride, stride), (1, 1), (dilation, dilation), groups, (1, 1))


@pytest.mark.parametrize("channels, out_channels, geom, out_hw, expected", [
    (64, 64, _geometry(), (56, 56), "winograd"),            # (c) of the benchmarks
    (128, 128, _geometry(), (28, 28), "winograd"),          # (d)
    (32, 32, _geometry(), (8, 8), "winograd"),              # just enough of both
    (64, 16, _geometry(), (9, 30), "winograd"),
    (256, 256, _geometry(groups=2), (14, 14), "winograd"),  # 128 x 128 per group
    (512, 512, _geometry(), (7, 7), None),                  # too small a picture
    (16, 16, _geometry(), (32, 32), "winograd"),            # ResNet-20's first stage
    (4, 16, _geometry(), (32, 32), "winograd"),             # just enough of both
    (8, 4, _geometry(), (32, 32), None),                    # too few channels
    (64, 64, _geometry(groups=4), (56, 56), "winograd"),    # 16 x 16 per group
    (64, 64, _geometry(groups=32), (56, 56), None),         # 2 x 2 per group
    (3, 64, _geometry(), (112, 112), None),                 # too few input channels
    (3, 32, _geometry(), (32, 32), None),
    (64, 64, _geometry(groups=64), (56, 56), None),         # depthwise
    (64, 64, _geometry(kernel=5), (56, 56), None),
    (64, 64, _geometry(stride=2), (28, 28), None),
    (64, 64, _geometry(dilation=2), (54, 54), None),
])
def test_auto_picks_winograd_where_it_pays(channels, out_channels, geom, out_hw, expected):
    assert winograd.choose_algorithm(channels, out_channels, geom, out_hw) == expected


def algorithm_for(layer, input_shape):
    """The CPU algorithm ``layer`` runs on ``input_shape`` (no batch)."""
    return resolve_algorithm(layer.algorithm, input_shape[0], layer.out_channels, layer._geometry(input_shape[1:]),
                             layer.output_shape(input_shape)[1:])


def test_auto_resolves_per_input_shape(registry):
    big = _net(registry, {"out_channels": 64, "kernel_size": 3, "padding": 1}, (64, 16, 16)).nodes[0].layer
    assert algorithm_for(big, (64, 16, 16)) == "winograd"
    assert algorithm_for(big, (64, 7, 9)) is None
    small = _net(registry, {"out_channels": 4, "kernel_size": 3, "padding": 1}, (3, 16, 16)).nodes[0].layer
    assert algorithm_for(small, (3, 16, 16)) is None
    fixed = _net(registry, {"out_channels": 4, "kernel_size": 3, "algorithm": "im2col"}, (3, 16, 16)).nodes[0].layer
    assert algorithm_for(fixed, (3, 16, 16)) == "im2col"


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("channels, groups", [(32, 1), (64, 1), (16, 2), (8, 8)])
def test_tile_rows_and_planes_are_an_odd_number_of_cache_lines(registry, dtype, channels, groups):
    """Rows of V and M a power of two apart would share a few L1 sets (1.4x slower products), and
    so would the 16 planes of a tile (64 rows of an odd number of lines: its 16 values in one set);
    rows and planes are rounded up to an odd number of 64-byte lines, rows to at least the tiles."""
    itemsize = np.dtype(dtype).itemsize
    for tiles in (1, 15, 16, 17, 64, 1000, 1024, 4096):
        length = winograd._odd_lines(tiles, dtype)
        lines, rest = divmod(length * itemsize, 64)
        assert length >= tiles and rest == 0 and lines % 2 == 1 and length - tiles < 2 * 64 // itemsize
    layer = {"out_channels": channels, "kernel_size": 3, "padding": 1, "groups": groups}
    ctx = _net(registry, layer, (channels, 16, 16), dtype).contexts["conv"]
    x = np.full((32, channels, 16, 16), np.nan, dtype)
    buffers = winograd._buffers(ctx, x, channels, groups, winograd._tiles((16, 16)))
    assert buffers.count == winograd._odd_lines(buffers.rows * 8, dtype)
    rows = -(-channels // groups // 4) * 4
    for buffer in (buffers.v, buffers.mm):
        plane_lines, rest = divmod(buffer.strides[1], 64)
        assert rest == 0 and plane_lines % 2 == 1 and buffer.shape[2] >= groups * rows * buffers.count
        matrices = winograd._rows_of(buffer, groups, rows, buffers.count)
        assert not matrices[..., channels // groups:, :].any()  # the padding rows are zero


def test_buffers_are_made_once_per_shape_and_remade_for_another(registry):
    """:func:`winograd._buffers` keeps its views and zeroed padding rows while the shapes stay
    (:meth:`Context.per_shape`: the last shapes only), and lays the workspace out anew, padding
    rows zeroed again, for any other: a forward after another layout left NaN everywhere, then
    the backward's two passes (other layouts of the same workspace) alternating with forwards of
    two batch sizes in one context, all equal the reference (6 channels: two padding rows)."""
    layer = {"out_channels": 6, "kernel_size": 3, "padding": 1, "algorithm": "winograd"}
    net = _net(registry, layer, (6, 8, 8))
    ctx = net.contexts["conv"]
    options = {"stride": (1, 1), "padding": ((1, 1), (1, 1)), "dilation": (1, 1), "groups": 1}
    rng = np.random.default_rng(8)
    x2 = rng.standard_normal((2, 6, 8, 8))
    first = winograd._buffers(ctx, x2, 6, 1, (4, 4))
    assert winograd._buffers(ctx, x2, 6, 1, (4, 4)) is first
    winograd._buffers(ctx, x2[:1], 6, 1, (4, 4)).v.fill(np.nan)
    ctx._workspaces["winograd.tiles"].fill(np.nan)
    assert winograd._buffers(ctx, x2, 6, 1, (4, 4)) is not first
    for batch in (2, 3, 2, 2):
        _pass_matches_reference(net, rng.standard_normal((batch, 6, 8, 8)), rng, options, training=True)
