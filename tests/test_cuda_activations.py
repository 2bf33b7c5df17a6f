"""CUDA kernels of the activations added for issue 12 against the CPU ones: every element-wise layer
and option, prelu (one slope and one per channel, its weight gradient over several blocks), softmax
and log_softmax over every axis; float32 and float64.

Without a GPU they run under Numba's CUDA simulator (tests/conftest.py); the ``cuda_backend`` fixture
launches 32 threads per block and at most 2 blocks, so the grid-stride loops run.
"""

import numpy as np
import pytest

from test_cuda_layers import DTYPES, assert_same_pass, both_devices

pytestmark = pytest.mark.cuda

ELEMENTWISE = [{"type": "elu", "alpha": 0.4}, {"type": "selu"}, {"type": "celu", "alpha": 2.5}, {"type": "gelu"},
               {"type": "gelu", "approximate": "tanh"}, {"type": "silu"}, {"type": "mish"}, {"type": "hardswish"},
               {"type": "hardsigmoid"}, {"type": "hardtanh", "min_val": -0.5, "max_val": 2}, {"type": "relu6"},
               {"type": "clip", "min": -0.5, "max": 0.8}, {"type": "clip", "max": 1.5},
               {"type": "softplus", "beta": 2.5, "threshold": 3}, {"type": "softsign"}]


def layer_id(layer):
    return "-".join(str(v) for v in layer.values())


def values(shape, seed):
    """Random values, with the kinks (0, +-3, +-1, 6) and large magnitudes among them."""
    x = np.random.default_rng(seed).standard_normal(shape) * 4
    x.reshape(-1)[:10] = [0.0, 3.0, -3.0, 1.0, -1.0, 6.0, 80.0, -80.0, 30.0, -30.0]
    return x


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layer", ELEMENTWISE, ids=layer_id)
def test_elementwise(cuda_backend, registry, dtype, layer):
    cpu, gpu = both_devices(registry, [layer], (3, 5, 7), dtype)  # 210 values per batch of 2: 64 threads
    assert_same_pass(cpu, gpu, values((2, 3, 5, 7), 3).astype(dtype), dtype)


def randomize_slopes(net):
    weight = net.params["p"]["weight"]
    weight[...] = np.random.default_rng(5).uniform(-1, 2, weight.shape)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("num_parameters, shape", [(1, (3, 4, 5)), (3, (3, 4, 5)), (5, (5,)), (4, (4, 7))])
def test_prelu(cuda_backend, registry, dtype, num_parameters, shape):
    layers = [{"type": "prelu", "name": "p", "num_parameters": num_parameters}]
    cpu, gpu = both_devices(registry, layers, shape, dtype, setup=randomize_slopes)
    assert_same_pass(cpu, gpu, values((3, *shape), 6).astype(dtype), dtype)  # 3 samples: 2 blocks of 32 per slope


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["softmax", "log_softmax"])
@pytest.mark.parametrize("axis, shape", [(1, (4, 3, 5)), (2, (4, 3, 5)), (-1, (4, 3, 5)), (-1, (6,)), (1, (6,))])
def test_softmax_over_axis(cuda_backend, registry, dtype, kind, axis, shape):
    cpu, gpu = both_devices(registry, [{"type": kind, "axis": axis}], shape, dtype)
    x = np.random.default_rng(7).standard_normal((2, *shape)) * 3
    x.reshape(-1)[:2] = [500.0, -500.0]  # no overflow
    assert_same_pass(cpu, gpu, x.astype(dtype), dtype)
