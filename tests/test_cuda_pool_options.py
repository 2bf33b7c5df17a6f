"""Issue 12's pooling and padding options on CUDA against the CPU (under Numba's CUDA simulator
without a GPU; see tests/test_cuda_conv_pool.py): per-side and "same_lower" padding of conv and pools,
dilated max pooling, adaptive pools, global max pooling."""

import numpy as np
import pytest

from test_cuda_conv_pool import assert_agree, run_on_both

pytestmark = pytest.mark.cuda

CASES = [  # (layer, input shape, dtype)
    ({"type": "maxpool2d", "kernel_size": 3, "stride": 2, "dilation": [2, 1], "padding": [1, 0, 1, 1],
      "ceil_mode": True}, (2, 7, 6), "float64"),
    ({"type": "maxpool1d", "kernel_size": 2, "stride": 1, "dilation": 3, "padding": "same_lower"}, (2, 7), "float32"),
    ({"type": "avgpool2d", "kernel_size": [3, 2], "stride": 2, "padding": [0, 1, 1, 0], "ceil_mode": True,
      "count_include_pad": True}, (2, 5, 6), "float64"),
    ({"type": "avgpool1d", "kernel_size": 3, "stride": 2, "padding": "same", "count_include_pad": False}, (2, 8),
     "float32"),
    ({"type": "adaptive_avgpool2d", "output_size": [3, 2]}, (2, 7, 5), "float64"),
    ({"type": "adaptive_avgpool2d", "output_size": 4}, (1, 3, 9), "float32"),
    ({"type": "adaptive_maxpool2d", "output_size": [2, 4]}, (2, 5, 6), "float64"),
    ({"type": "adaptive_maxpool2d", "output_size": [4, None]}, (2, 3, 2), "float32"),
    ({"type": "global_maxpool", "flatten": True}, (3, 4, 3), "float32"),
    ({"type": "global_maxpool"}, (2, 5), "float64"),
    ({"type": "global_avgpool", "flatten": True}, (3, 4, 3), "float32"),
    ({"type": "conv2d", "out_channels": 4, "kernel_size": 3, "stride": 2, "padding": [2, 0, 1, 1]}, (2, 6, 5),
     "float64"),
    ({"type": "conv2d", "out_channels": 2, "kernel_size": [2, 3], "groups": 2, "padding": "same_lower"}, (2, 5, 4),
     "float32"),
    ({"type": "conv1d", "out_channels": 2, "kernel_size": 4, "padding": [3, 0]}, (2, 7), "float64"),
]


@pytest.mark.parametrize("layer, shape, dtype", CASES, ids=[f"{c[0]['type']}-{i}" for i, c in enumerate(CASES)])
def test_pool_and_padding_options_match_cpu(cuda_backend, registry, layer, shape, dtype):
    """Max pools agree exactly (same argmax, gradients added in the same order) on inputs with ties."""
    exact = "max" in layer["type"]
    x = np.random.default_rng(1).integers(-2, 3, (2, *shape)) if exact else None
    cpu, gpu = run_on_both(registry, [{"name": "layer", **layer}], shape, dtype, x=x)
    assert_agree(cpu, gpu, dtype, exact=exact)
