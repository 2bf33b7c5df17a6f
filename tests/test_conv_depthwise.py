"""The depthwise 3x3 forward's three layouts (plugins/conv/rules.py ``depthwise_layout``): along the
channels of a channels-last copy, in vectors along the output rows, over padded planes; each
against the float64 reference of tests/reference_conv.py over seeded configurations, and the
forward layouts inside the backward (the stride-1 input gradient is the forward of the rotated
filter)."""

import numpy as np
import pytest

import reference_conv as reference
from cnnrun.engine import Context, jit
from cnnrun.engine.plugins import get_backend
from cnnrun.plugins.common import Geometry
from cnnrun.plugins.conv import cpu, rules

LAYOUTS = {  # rules' settings that send a depthwise 3x3 forward down each layout
    "channels_last": {"DEPTHWISE_CHANNELS_LAST_MAX_WIDTH": 10 ** 9, "DEPTHWISE_CHANNELS_LAST_MIN_BATCH": 1},
    "rows": {"DEPTHWISE_CHANNELS_LAST_MAX_WIDTH": 0, "DEPTHWISE_ROWS_MAX_WIDTH": 10 ** 9},
    "planes": {"DEPTHWISE_CHANNELS_LAST_MAX_WIDTH": 0, "DEPTHWISE_ROWS_MAX_WIDTH": 0},
}


def _cases(count, seed):
    """(batch, channels, (H, W), stride, (top, left, bottom, right), dilation): 1-37 channels (one
    vector and a partial one of float32 and float64 lanes), 1-11 outputs a row (groups of four
    outputs and the rest), strides 1-2 per axis, asymmetric paddings 0-2, dilation 1-2, batch 1-3."""
    rng = np.random.default_rng(seed)
    cases = [(1, 37, (9, 9), (1, 1), (1, 1, 1, 1), (1, 1)), (3, 16, (8, 8), (2, 2), (1, 1, 1, 1), (1, 1))]
    while len(cases) < count:
        stride = tuple(int(rng.integers(1, 3)) for _ in range(2))
        dilation = tuple(int(rng.choice([1, 1, 2])) for _ in range(2))
        pads = tuple(int(rng.integers(0, 3)) for _ in range(4))
        size = tuple(int(rng.integers(2, 13)) for _ in range(2))
        out = [reference.output_size(size[a], 3, stride[a], pads[a], pads[a + 2], dilation[a]) for a in range(2)]
        if min(out) >= 1:
            cases.append((int(rng.integers(1, 4)), int(rng.choice([1, 5, 17, 37])), size, stride, pads, dilation))
    return cases


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", _cases(14, 21), ids=str)
def test_every_layout_matches_reference(case, dtype, monkeypatch):
    batch, channels, size, stride, pads, dilation = case
    rng = np.random.default_rng(channels + 10 * size[0])
    x = rng.standard_normal((batch, channels, *size))
    w = rng.standard_normal((channels, 1, 3, 3))
    b = rng.standard_normal(channels)
    options = {"stride": stride, "padding": ((pads[0], pads[2]), (pads[1], pads[3])), "dilation": dilation,
               "groups": channels}
    expected_y = reference.conv2d(x, w, b, **options)
    grad = rng.standard_normal(expected_y.shape)
    expected_dx, expected_dw, _ = reference.conv2d_backward(x, w, grad, **options)
    geom = Geometry((3, 3), stride, pads[:2], dilation, channels, pads[2:])
    tolerance = {"rtol": 1e-10, "atol": 1e-12} if dtype == "float64" else {"rtol": 1e-4, "atol": 1e-4}
    x, w, b, grad = (a.astype(dtype) for a in (x, w, b, grad))
    for layout, settings in LAYOUTS.items():
        for parallel in (False, True):
            with monkeypatch.context() as patch:
                for key, value in settings.items():
                    patch.setattr(rules, key, value)
                patch.setattr(jit, "PARALLEL_MIN_WORK", 0 if parallel else 10 ** 18)
                ctx = Context(backend=get_backend("cpu"))
                assert rules.depthwise_layout(channels, channels, expected_y, geom) == (
                    layout if layout != "planes" or stride[1] == 1 else "rows")
                y = cpu.conv2d_forward(ctx, x, w, b, geom, expected_y.shape[2:])
                dw, db = np.empty_like(w), np.empty_like(b)
                dx = cpu.conv2d_backward(ctx, x, grad, w, geom, dw, db)
            where = f"{layout}, {'parallel' if parallel else 'serial'}"
            assert y.dtype == np.dtype(dtype)
            np.testing.assert_allclose(y, expected_y, **tolerance, err_msg=f"y, {where}")
            np.testing.assert_allclose(dx, expected_dx, **tolerance, err_msg=f"dx, {where}")
            np.testing.assert_allclose(dw, expected_dw, **tolerance, err_msg=f"dw, {where}")


def test_channels_last_only_for_one_output_per_input_channel_on_narrow_maps_and_batches():
    """The rule as measured (rules.py, docs/performance.md sixth session): outputs at most 8 wide,
    4 samples or more, one output channel per input channel; else the rows or planes."""
    geom = Geometry((3, 3), (1, 1), (1, 1), (1, 1), 8, (1, 1))
    assert (rules.DEPTHWISE_CHANNELS_LAST_MAX_WIDTH, rules.DEPTHWISE_CHANNELS_LAST_MIN_BATCH) == (8, 4)
    assert rules.depthwise_layout(8, 8, np.empty((4, 8, 8, 8)), geom) == "channels_last"
    assert rules.depthwise_layout(8, 8, np.empty((3, 8, 8, 8)), geom) == "rows"
    assert rules.depthwise_layout(8, 8, np.empty((4, 8, 9, 9)), geom) == "rows"
    assert rules.depthwise_layout(8, 16, np.empty((4, 16, 8, 8)), geom) == "rows"
    assert rules.depthwise_layout(8, 8, np.empty((4, 8, 32, 32)), geom) == "planes"
