"""The resizing layers' CUDA kernels against the CPU (under Numba's CUDA simulator without a GPU;
see tests/test_cuda_conv_pool.py)."""

import pytest

from test_cuda_conv_pool import assert_agree, run_on_both

pytestmark = pytest.mark.cuda

CASES = [  # (layer, input shape, dtype)
    ({"type": "upsample", "scale_factor": 2}, (2, 3, 2), "float32"),
    ({"type": "upsample", "size": [4, 5], "mode": "bilinear"}, (2, 3, 3), "float64"),
    ({"type": "upsample", "scale_factor": [1.5, 0.5], "mode": "bilinear", "align_corners": True}, (1, 4, 5),
     "float32"),
    ({"type": "upsample", "size": [2, 7]}, (2, 5, 3), "float64"),
    ({"type": "pad", "padding": [1, 2, 0, 1], "mode": "reflect"}, (2, 3, 4), "float64"),
    ({"type": "pad", "padding": [2, 1], "mode": "circular"}, (2, 3), "float32"),
    ({"type": "pad", "padding": 2, "mode": "replicate"}, (1, 2, 3), "float64"),
    ({"type": "pad", "padding": [0, 1, 2, 1], "value": -1.5}, (2, 2, 3), "float32"),
    ({"type": "pixel_shuffle", "upscale_factor": 2}, (8, 2, 3), "float32"),
    ({"type": "pixel_unshuffle", "downscale_factor": 2}, (2, 4, 6), "float64"),
    ({"type": "channel_shuffle", "groups": 3}, (6, 2, 3), "float32"),
    ({"type": "channel_shuffle", "groups": 2}, (4, 5), "float64"),
]


@pytest.mark.parametrize("layer, shape, dtype", CASES, ids=[f"{c[0]['type']}-{i}" for i, c in enumerate(CASES)])
def test_resizing_matches_cpu(cuda_backend, registry, layer, shape, dtype):
    cpu, gpu = run_on_both(registry, [{"name": "layer", **layer}], shape, dtype)
    assert_agree(cpu, gpu, dtype)
