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


CASES = [
    ({"type": "layer_norm", "normalized_shape": [5, 7]}, (3, 5, 7)),  # 3 x 3 groups of 35
    ({"type": "layer_norm", "normalized_shape": 4, "elementwise_affine": False}, (4,)),
    ({"type": "layer_norm", "normalized_shape": 3, "channels_first": True, "eps": 1e-3}, (3, 2, 3)),
    ({"type": "group_norm", "num_groups": 3}, (6, 4, 5)),  # 40 values a group
    ({"type": "group_norm", "num_groups": 2, "affine": False}, (4, 3)),
    ({"type": "instance_norm"}, (3, 5)),
    ({"type": "instance_norm", "affine": True, "track_running_stats": True, "momentum": 0.3}, (2, 3, 3)),
    ({"type": "lrn", "size": 3, "alpha": 0.5, "beta": 0.7, "k": 2.0}, (5, 2, 3)),
    ({"type": "lrn", "size": 4, "alpha": 1.5}, (3, 2)),
    ({"type": "batchnorm", "affine": False}, (3, 4)),
    ({"type": "batchnorm", "affine": False, "track_running_stats": False}, (3, 2, 2)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("training", [True, False], ids=["training", "eval"])
@pytest.mark.parametrize("layer, shape", CASES, ids=[f"{c[0]['type']}-{i}" for i, c in enumerate(CASES)])
def test_norm_layers_on_cuda_match_cpu(cuda_backend, registry, dtype, training, layer, shape):
    cpu, gpu = both_devices(registry, [{"name": "n", **layer}], shape, dtype, setup=randomize)
    x = np.random.default_rng(8).standard_normal((3, *shape)) * 2 + 1
    for step in range(2):  # running statistics, where there are any, move twice
        assert_same_pass(cpu, gpu, x.astype(dtype) + step, dtype, training=training, seed=step)
