"""CUDA kernels of the structure layers against the CPU under the simulator: broadcasting add, sub
and mul and their sums over broadcast axes, scale, slice, permute, reshape views, drop_path and
dropout2d (their masks are drawn on the host, so both devices draw the same ones)."""

import numpy as np
import pytest

from test_cuda_layers import DTYPES, assert_same_pass, both_devices

pytestmark = pytest.mark.cuda

SE = [{"type": "global_avgpool", "name": "pool"}, {"type": "sigmoid", "name": "gate"},
      {"type": "conv2d", "name": "map", "out_channels": 1, "kernel_size": 1, "inputs": ["input"]}]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op, inputs", [("add", ["input", "gate", "map"]), ("add", ["input", "input"]),
                                        ("sub", ["gate", "input"]), ("sub", ["input", "input"]),
                                        ("mul", ["input", "gate", "map"]), ("mul", ["map", "input"])])
def test_elementwise(cuda_backend, registry, dtype, op, inputs):
    # (3, 5, 7) against (3, 1, 1) and (1, 5, 7): 105 values per sample over 64 threads; the gate's
    # gradient sums 35 values (a block each, 32 threads), the map's 3 (a thread each)
    layers = SE + [{"type": op, "name": "merge", "inputs": inputs}]
    cpu, gpu = both_devices(registry, layers, (3, 5, 7), dtype)
    x = np.random.default_rng(1).standard_normal((3, 3, 5, 7)).astype(dtype)
    assert_same_pass(cpu, gpu, x, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(3, 5, 7), (4, 9), (5,)])
def test_scale(cuda_backend, registry, dtype, shape):
    def randomize(net):
        net.params["s"]["weight"][...] = np.random.default_rng(2).standard_normal(shape[0])

    cpu, gpu = both_devices(registry, [{"type": "scale", "name": "s"}], shape, dtype, setup=randomize)
    assert_same_pass(cpu, gpu, np.random.default_rng(3).standard_normal((3, *shape)).astype(dtype), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layers", [
    [{"type": "slice", "start": 1, "stop": -1, "step": 2}],
    [{"type": "slice", "stop": 3, "name": "a"}, {"type": "slice", "start": 3, "name": "b", "inputs": ["input"]},
     {"type": "concat", "inputs": ["b", "a"]}],
    [{"type": "permute", "dims": [0, 2, 3, 1]}],
    [{"type": "permute", "dims": [0, 3, 1, 2]}, {"type": "reshape", "shape": [-1, 7]},
     {"type": "flatten", "start_axis": 2}, {"type": "identity"}],
], ids=["slice", "chunk", "permute", "views"])
def test_moves(cuda_backend, registry, dtype, layers):
    cpu, gpu = both_devices(registry, layers, (7, 3, 5), dtype)
    assert_same_pass(cpu, gpu, np.random.default_rng(4).standard_normal((2, 7, 3, 5)).astype(dtype), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layer", [{"type": "drop_path", "p": 0.4}, {"type": "dropout2d", "p": 0.3}],
                         ids=lambda layer: layer["type"])
def test_group_dropout(cuda_backend, registry, dtype, layer):
    cpu, gpu = both_devices(registry, [layer], (3, 5, 7), dtype)
    for net in (cpu, gpu):
        for ctx in net.contexts.values():
            ctx.rng = np.random.default_rng(5)
    x = np.random.default_rng(6).standard_normal((8, 3, 5, 7)).astype(dtype)
    assert_same_pass(cpu, gpu, x, dtype)
    assert_same_pass(cpu, gpu, x, dtype, training=False)
