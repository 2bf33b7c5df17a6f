"""The CUDA kernels of conv2d, conv1d, conv_transpose2d and the pools against the CPU layers.

Each test builds one network, runs a forward and a backward pass on the CPU, moves the network to
CUDA (same parameters) and runs the same input and output gradient again: outputs, input gradients
and parameter gradients must agree. Without a GPU this runs under Numba's CUDA simulator
(tests/conftest.py), where every CUDA thread is a Python thread, so the shapes are tiny; the
``cuda_backend`` fixture launches 32 threads per block and at most 2 blocks, so several blocks and
the grid-stride loops run. On a GPU: ``NUMBA_ENABLE_CUDASIM=0 python -m pytest -m cuda``.
"""

import subprocess
import sys

import numpy as np
import pytest

from cnnrun.engine import Network

pytestmark = pytest.mark.cuda

TOL = {"float32": dict(rtol=1e-5, atol=1e-5), "float64": dict(rtol=1e-12, atol=1e-12)}


def run_on_both(registry, layers, shape, dtype, x=None, batch=2, seed=0):
    """``(cpu, cuda)``: each ``{"y", "dx", "<layer>.<param>" gradients, "<layer>.argmax"}`` as host
    arrays, from one network run on the CPU and then on CUDA with the same input and gradient."""
    config = {"input": {"shape": list(shape)}, "layers": layers}
    net = Network.from_config(config, registry=registry, dtype=dtype)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, *shape)) if x is None else x
    grad = None
    results = []
    for device in ("cpu", "cuda"):
        net.to(device)
        for arrays in net.grads.values():  # backward must overwrite every gradient
            for array in arrays.values():
                net.backend.fill(array, np.nan)
        y = net.forward(x, training=True)
        grad = rng.standard_normal(y.shape).astype(dtype) if grad is None else grad
        to_host = net.backend.to_host
        result = {"y": to_host(y), "dx": to_host(net.backward(grad))}
        for layer, arrays in net.grads.items():
            result.update({f"{layer}.{name}": to_host(a) for name, a in arrays.items()})
        for layer, ctx in net.contexts.items():
            if hasattr(ctx.saved, "argmax"):
                result[f"{layer}.argmax"] = to_host(ctx.saved.argmax)
        assert result["y"].dtype == dtype and result["dx"].dtype == dtype
        results.append(result)
    return results


def assert_agree(cpu, gpu, dtype, exact=False):
    assert cpu.keys() == gpu.keys()
    for key, expected in cpu.items():
        if exact:
            np.testing.assert_array_equal(gpu[key], expected, err_msg=key)
        else:
            np.testing.assert_allclose(gpu[key], expected, **TOL[dtype], err_msg=key)


# -- convolutions ---------------------------------------------------------------------------------
CONV_CASES = [  # (layer, input shape, dtype): im2col + matrix products unless depthwise
    ({"type": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1, "bias": False}, (3, 6, 7), "float64"),
    ({"type": "conv2d", "out_channels": 4, "kernel_size": 3, "stride": 2, "padding": "same", "dilation": 2,
      "groups": 2}, (4, 6, 7), "float32"),  # "same" pads 2 before, 3 after on the width
    ({"type": "conv2d", "out_channels": 6, "kernel_size": [3, 2], "stride": [2, 1], "padding": 1, "groups": 3},
     (3, 6, 7), "float64"),  # depthwise, two filters per channel
    ({"type": "conv1d", "out_channels": 4, "kernel_size": 3, "stride": 2, "padding": "same", "dilation": 2},
     (3, 9), "float64"),
    ({"type": "conv1d", "out_channels": 3, "kernel_size": 3, "padding": 1, "groups": 3}, (3, 8), "float32"),
    ({"type": "conv_transpose2d", "out_channels": 4, "kernel_size": 3, "stride": 2, "padding": 1,
      "output_padding": 1, "dilation": 2, "groups": 2}, (2, 4, 5), "float32"),
    ({"type": "conv_transpose2d", "out_channels": 3, "kernel_size": 2, "stride": 2, "output_padding": 1,
      "groups": 3}, (6, 3, 4), "float64"),  # depthwise: each output channel reads two input channels
]


@pytest.mark.parametrize("layer, shape, dtype", CONV_CASES,
                         ids=[f"{c[0]['type']}-{i}" for i, c in enumerate(CONV_CASES)])
def test_convolutions_match_cpu(cuda_backend, registry, layer, shape, dtype):
    cpu, gpu = run_on_both(registry, [{"name": "conv", **layer}], shape, dtype)
    assert ("conv.bias" in cpu) == layer.get("bias", True)
    assert_agree(cpu, gpu, dtype)


@pytest.mark.parametrize("trans_a, trans_b, accumulate, split", [(True, False, False, 10**9),
                                                                 (False, True, True, 8)])
def test_matrix_product_over_several_tiles(cuda_backend, monkeypatch, trans_a, trans_b, accumulate, split):
    """The grouped tiled product on 2 x 2 tiles of 64 x 64 per group, two steps of the inner
    dimension; then transposed the other way, split in three along the inner dimension, added to c."""
    from cnnrun.engine.layer import Context
    from cnnrun.plugins.products import cuda

    monkeypatch.setattr(cuda, "SPLIT_MIN_DEPTH", split)
    rng = np.random.default_rng(2)
    groups, rows, cols, depth = 2, 65, 66, 17
    a = rng.standard_normal((groups, depth, rows) if trans_a else (groups, rows, depth))
    b = rng.standard_normal((groups, cols, depth) if trans_b else (groups, depth, cols))
    c = rng.standard_normal((groups, rows, cols))
    out = cuda_backend.asarray(c, np.float64)
    cuda.matmul(Context(backend=cuda_backend), "test", cuda_backend.asarray(a, np.float64),
                 cuda_backend.asarray(b, np.float64), out, trans_a, trans_b, accumulate)
    expected = (a.transpose(0, 2, 1) if trans_a else a) @ (b.transpose(0, 2, 1) if trans_b else b)
    np.testing.assert_allclose(cuda_backend.to_host(out), expected + c if accumulate else expected, **TOL["float64"])


@pytest.mark.parametrize("layer, shape", [
    ({"type": "conv2d", "out_channels": 4, "kernel_size": 3, "stride": [1, 2], "padding": [0, 1]}, (2, 6, 7)),
    ({"type": "conv_transpose2d", "out_channels": 2, "kernel_size": 2, "stride": 2}, (4, 3, 4)),
], ids=["conv2d", "conv_transpose2d"])
def test_sample_chunks_and_split_products(cuda_backend, registry, monkeypatch, layer, shape):
    """A one-sample workspace makes the general path run chunk by chunk (the weight gradient then
    accumulates), and a short split length splits the matrix products' inner dimension."""
    from cnnrun.plugins.conv import cuda
    from cnnrun.plugins.products import cuda as products

    monkeypatch.setattr(cuda, "WORKSPACE_BYTES", 1)
    monkeypatch.setattr(products, "SPLIT_MIN_DEPTH", 8)
    cpu, gpu = run_on_both(registry, [{"name": "conv", **layer}], shape, "float64")
    assert_agree(cpu, gpu, "float64")


# -- pooling --------------------------------------------------------------------------------------
POOL_CASES = [  # (layer, input shape, dtype)
    ({"type": "maxpool2d", "kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True}, (2, 6, 7), "float64"),
    ({"type": "maxpool2d", "kernel_size": 2}, (2, 5, 7), "float32"),
    ({"type": "maxpool1d", "kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True}, (2, 9), "float32"),
    ({"type": "avgpool2d", "kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True,
      "count_include_pad": False}, (2, 6, 7), "float64"),
    ({"type": "avgpool2d", "kernel_size": [2, 3], "stride": [1, 2], "padding": [1, 1]}, (2, 5, 6), "float32"),
    ({"type": "avgpool1d", "kernel_size": 4, "stride": 3, "padding": 2, "ceil_mode": True}, (2, 9), "float64"),
    ({"type": "avgpool1d", "kernel_size": 3, "stride": 2, "padding": 1, "count_include_pad": False}, (2, 8),
     "float32"),
    ({"type": "global_avgpool"}, (3, 5, 6), "float32"),
    ({"type": "global_avgpool"}, (3, 7), "float64"),
]


@pytest.mark.parametrize("layer, shape, dtype", POOL_CASES,
                         ids=[f"{c[0]['type']}-{i}" for i, c in enumerate(POOL_CASES)])
def test_pools_match_cpu(cuda_backend, registry, layer, shape, dtype):
    """Max pools agree exactly (same argmax, gradients added in the same order); ties everywhere."""
    rng = np.random.default_rng(1)
    x = rng.integers(-2, 3, (2, *shape)) if layer["type"].startswith("max") else None
    cpu, gpu = run_on_both(registry, [{"name": "pool", **layer}], shape, dtype, x=x)
    assert_agree(cpu, gpu, dtype, exact=layer["type"].startswith("max"))


def test_max_pool_ties_nan_and_padding(cuda_backend, registry):
    """Ties go to the first maximum, NaN wins (as PyTorch), padding is never the maximum."""
    x = -np.ones((1, 1, 4, 4))
    x[0, 0, 0, 2] = np.nan
    cpu, gpu = run_on_both(registry, [{"name": "pool", "type": "maxpool2d", "kernel_size": 2, "stride": 2,
                                       "padding": 1}], (1, 4, 4), "float64", x=x)
    assert_agree(cpu, gpu, "float64", exact=True)
    np.testing.assert_array_equal(gpu["pool.argmax"][0], [[0, 2, 3], [4, 5, 7], [12, 13, 15]])
    np.testing.assert_array_equal(gpu["y"][0, 0], [[-1, np.nan, -1], [-1, -1, -1], [-1, -1, -1]])


def test_network_of_convolutions_and_pools(cuda_backend, registry):
    """Layers hand device arrays to each other: conv, max pool, depthwise conv, average pools."""
    layers = [{"type": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": "same"},
              {"type": "maxpool2d", "kernel_size": 2},
              {"type": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1, "groups": 4},
              {"type": "avgpool2d", "kernel_size": 2, "stride": 1},
              {"type": "global_avgpool"}]
    cpu, gpu = run_on_both(registry, layers, (2, 6, 7), "float32", batch=1)
    assert_agree(cpu, gpu, "float32")


def test_plugins_import_without_numba_cuda():
    """The layers import their CUDA kernels only when a network runs on cuda."""
    code = ("import sys, cnnrun.plugins.conv, cnnrun.plugins.pool; "
            "print(sorted(m for m in sys.modules if m.startswith(('numba.cuda', 'numba_cuda')) "
            "or m.endswith('.cuda')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
