"""CUDA kernels of layer_norm, group_norm, instance_norm, lrn and batchnorm's affine /
track_running_stats options against the CPU ones, under Numba's CUDA simulator (or on a GPU with
``NUMBA_ENABLE_CUDASIM=0 python -m pytest -m cuda``). The ``cuda_backend`` fixture launches 32
threads per block and at most 2 blocks: the cases below have more than 2 groups (block-stride loops)
and groups of more than 32 values (thread-stride loops)."""

import numpy as np
import pytest

from test_cuda_layers import DTYPES, assert_same_pass, both_devices

pytestmark = pytest.mark.cuda


def randomize(net):
    rng = np.random.default_rng(7)
    for tree in (net.params, net.buffers):
        for layer, arrays in tree.items():
            for name, array in arrays.items():
                positive = name in ("weight", "running_var")
                array[...] = rng.uniform(0.5, 2, array.shape) if positive else rng.standard_normal(array.shape)


# the layers whose training and evaluation passes differ run both; the others one (the same kernels)
CASES = [
    ({"type": "layer_norm", "normalized_shape": [5, 7]}, (2, 5, 7), [True]),  # 2 x 2 groups of 35
    ({"type": "layer_norm", "normalized_shape": 4, "elementwise_affine": False}, (4,), [True]),
    ({"type": "layer_norm", "normalized_shape": 3, "channels_first": True, "eps": 1e-3}, (3, 2, 2), [False]),
    ({"type": "group_norm", "num_groups": 3}, (6, 4, 5), [True]),  # 40 values a group
    ({"type": "group_norm", "num_groups": 2, "affine": False}, (4, 3), [False]),
    ({"type": "instance_norm"}, (3, 5), [True]),
    ({"type": "instance_norm", "affine": True, "track_running_stats": True, "momentum": 0.3}, (2, 3, 3),
     [True, False]),
    ({"type": "lrn", "size": 3, "alpha": 0.5, "beta": 0.7, "k": 2.0}, (5, 2, 3), [True]),
    ({"type": "lrn", "size": 4, "alpha": 1.5}, (3, 2), [False]),
    ({"type": "batchnorm", "affine": False}, (3, 4), [True, False]),
    ({"type": "batchnorm", "affine": False, "track_running_stats": False}, (3, 2, 2), [True, False]),
]
RUNS = [(layer, shape, training) for layer, shape, modes in CASES for training in modes]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layer, shape, training", RUNS, ids=[
    f"{layer['type']}-{i}-{'training' if training else 'eval'}" for i, (layer, _, training) in enumerate(RUNS)])
def test_norm_layers_on_cuda_match_cpu(cuda_backend, registry, dtype, layer, shape, training):
    cpu, gpu = both_devices(registry, [{"name": "n", **layer}], shape, dtype, setup=randomize)
    x = np.random.default_rng(8).standard_normal((2, *shape)) * 2 + 1
    for step in range(2 if cpu.buffers else 1):  # running statistics move twice
        assert_same_pass(cpu, gpu, x.astype(dtype) + step, dtype, training=training, seed=step)
