"""Inference plans (:mod:`cnnrun.engine.plan`): batchnorm folded, add and relu fused into the conv's
output pass; the outputs equal the unfused network's to float32 rounding, and fusion stays away
where it would change what another layer reads."""

import numpy as np
import pytest

from cnnrun.engine import Network
from cnnrun.engine.checkpoint import Checkpoint, network_state, restore_network
from cnnrun.engine.data import Examples
from cnnrun.plugins.merge.cpu import epilogue

from helpers import with_statistics


def config_of(shape, layers):
    return {"name": "net", "input": {"shape": list(shape)}, "layers": layers}


def random_config(rng):
    """A random chain of residual units: conv (random kernel, stride, groups, bias, algorithm),
    batchnorm or not, relu or not, a residual add (of the unit's input, or of a 1x1 conv + batchnorm
    of it) or not; a linear + batchnorm + relu head."""
    first = channels = int(rng.choice([2, 4]))
    size = 9
    layers, previous = [], "input"
    for unit in range(int(rng.integers(2, 4))):
        out = int(rng.choice([channels, 4, 6]))
        stride = int(rng.choice([1, 1, 2])) if size > 4 else 1
        kernel = int(rng.choice([1, 3]))
        groups = 2 if out % 2 == 0 and channels % 2 == 0 and rng.random() < 0.3 else 1
        algorithm = "winograd" if kernel == 3 and stride == 1 and groups == 1 and rng.random() < 0.5 else "auto"
        name = f"u{unit}"
        layers.append({"name": f"{name}c", "type": "conv2d", "out_channels": out, "kernel_size": kernel,
                       "stride": stride, "padding": kernel // 2, "groups": groups,
                       "bias": bool(rng.random() < 0.5), "algorithm": algorithm, "inputs": previous})
        last = f"{name}c"
        if rng.random() < 0.8:
            layers.append({"name": f"{name}b", "type": "batchnorm"})
            last = f"{name}b"
        residual = rng.random()
        if residual < 0.6:
            if stride == 1 and out == channels and residual < 0.3:
                other = previous
            else:
                layers.append({"name": f"{name}s", "type": "conv2d", "out_channels": out, "kernel_size": 1,
                               "stride": stride, "bias": False, "inputs": previous})
                layers.append({"name": f"{name}sb", "type": "batchnorm"})
                other = f"{name}sb"
            pair = [last, other] if rng.random() < 0.5 else [other, last]
            layers.append({"name": f"{name}a", "type": "add", "inputs": pair})
            last = f"{name}a"
        if rng.random() < 0.8:
            layers.append({"name": f"{name}r", "type": "relu", "inputs": last})
            last = f"{name}r"
        previous, channels, size = last, out, -(-size // stride)
    layers += [{"type": "flatten", "inputs": previous}, {"name": "fc", "type": "linear", "out_features": 5},
               {"name": "fcb", "type": "batchnorm"}, {"type": "relu"}]
    return config_of((first, 9, 9), layers)


def check_same(net, x):
    """The plan's output equals the unfused pass's to float32 rounding, and the parameters are untouched."""
    before = {k: {n: a.copy() for n, a in named.items()} for k, named in net.params.items()}
    net.params_changed()
    expected = net.forward(x).copy()
    plan = net.inference()
    got = net.forward(x)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * max(1.0, np.abs(expected).max()))
    for layer, named in before.items():
        for key, array in named.items():
            np.testing.assert_array_equal(net.params[layer][key], array)
    return plan


@pytest.mark.parametrize("seed", range(12))
def test_a_plan_computes_what_the_network_computes(seed):
    rng = np.random.default_rng(seed)
    config = random_config(rng)
    net = with_statistics(Network.from_config(config), seed)
    plan = check_same(net, rng.standard_normal((int(rng.integers(1, 4)), *config["input"]["shape"]),
                                               dtype=np.float32))
    assert len(plan.steps) < len(net.nodes) or not any(n.layer.type_name == "batchnorm" for n in net.nodes)


RESNET_BLOCK = [
    {"name": "c1", "type": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1, "bias": False},
    {"name": "b1", "type": "batchnorm"}, {"name": "r1", "type": "relu"},
    {"name": "c2", "type": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1, "bias": False},
    {"name": "b2", "type": "batchnorm"}, {"name": "add", "type": "add", "inputs": ["b2", "r1"]},
    {"name": "r2", "type": "relu"}, {"type": "global_avgpool"}, {"type": "flatten"}]


@pytest.mark.parametrize("layers, steps", [
    (RESNET_BLOCK, ["c1 + b1 + r1", "c2 + b2 + add + r2", "global_avgpool_1", "flatten_1"]),
    # the conv's output is read by the relu and by the add: nothing fuses into the conv
    ([{"name": "c", "type": "conv2d", "out_channels": 3, "kernel_size": 3, "padding": 1},
      {"name": "r", "type": "relu"}, {"name": "a", "type": "add", "inputs": ["c", "r"]}],
     ["c", "r", "a"]),
    # the batchnorm's output is read twice: folded, but neither add nor relu fuses
    ([{"name": "c", "type": "conv2d", "out_channels": 3, "kernel_size": 1}, {"name": "b", "type": "batchnorm"},
      {"name": "r", "type": "relu"}, {"name": "a", "type": "add", "inputs": ["b", "r"]}],
     ["c + b", "r", "a"]),
    # the relu's output feeds two layers: fused (its output is kept)
    ([{"name": "c", "type": "conv2d", "out_channels": 3, "kernel_size": 3}, {"name": "r", "type": "relu"},
      {"name": "p", "type": "maxpool2d", "kernel_size": 2}, {"name": "q", "type": "avgpool2d", "kernel_size": 2,
                                                               "inputs": "r"},
      {"name": "a", "type": "add", "inputs": ["p", "q"]}],
     ["c + r", "p", "q", "a"]),
    # batchnorm after something that is not conv/linear stays; so does relu after it
    ([{"name": "p", "type": "maxpool2d", "kernel_size": 2}, {"name": "b", "type": "batchnorm"},
      {"name": "r", "type": "relu"}, {"name": "c", "type": "conv2d", "out_channels": 2, "kernel_size": 1}],
     ["p", "b", "r", "c"]),
    # x + x and an add of three inputs are left alone; the network's output is not fused past
    ([{"name": "c", "type": "conv2d", "out_channels": 3, "kernel_size": 1}, {"name": "a", "type": "add",
                                                                             "inputs": ["c", "c"]},
      {"name": "d", "type": "conv2d", "out_channels": 3, "kernel_size": 1},
      {"name": "e", "type": "add", "inputs": ["d", "a", "a"]}, {"name": "f", "type": "conv2d",
                                                                "out_channels": 3, "kernel_size": 1}],
     ["c", "a", "d", "e", "f"]),
])
def test_fusion_applies_only_where_nothing_else_reads_the_value(layers, steps):
    net = with_statistics(Network.from_config(config_of((3, 6, 6), layers)))
    plan = check_same(net, np.random.default_rng(0).standard_normal((2, 3, 6, 6), dtype=np.float32))
    assert plan.describe() == steps


def block_network():
    return with_statistics(Network.from_config(config_of((4, 6, 6), RESNET_BLOCK)))


def test_the_plan_is_kept_until_the_parameters_may_change():
    net = block_network()
    x = np.random.default_rng(1).standard_normal((2, 4, 6, 6), dtype=np.float32)
    plan = net.inference()
    assert net.inference() is plan
    net.forward(x, training=True)  # batchnorm's running statistics move: the plan goes
    assert net.inference() is not plan
    net.params["c1"]["weight"] *= 2
    net.params_changed()
    check_same(net, x)
    state = network_state(net)
    other = block_network()
    other.inference()
    restore_network(other, Checkpoint(*state, {}, {}))
    np.testing.assert_allclose(other.forward(x), net.forward(x), rtol=1e-6)
    net.inference()
    net.initialize(3)
    assert net.inference() is not plan
    with pytest.raises(Exception, match="inference plan"):
        net.forward(x)
        net.backward(np.ones((2, 4)))


def test_evaluate_runs_the_plan():
    net = block_network()
    examples = Examples(np.random.default_rng(2).standard_normal((5, 4, 6, 6), dtype=np.float32),
                        np.array([0, 1, 2, 3, 0]))
    expected = net.forward(examples.x)
    net.evaluate(examples.x, examples.y, batch_size=2)
    assert net._plan is not None
    np.testing.assert_allclose(net.forward(examples.x), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype, shape", [(np.float32, (3, 5, 7)), (np.float32, (3, 5, 71)), (np.float64, (2, 3, 67))])
def test_the_epilogue_adds_and_clips_in_place_and_keeps_nan(dtype, shape):
    """Sizes with and without a vector remainder; a NaN in the vectorized part and in the last value."""
    rng = np.random.default_rng(4)
    y, r = rng.standard_normal(shape).astype(dtype), rng.standard_normal(shape).astype(dtype)
    y[0, 0, 0] = y[-1, -1, -1] = np.nan
    for residual, relu in ((r, True), (r, False), (None, True)):
        expected = y + (r if residual is not None else 0)
        expected = np.where(expected < 0, 0, expected) if relu else expected
        out = y.copy()
        assert epilogue(out, residual, relu) is out
        np.testing.assert_array_equal(out, expected)


@pytest.mark.cuda
def test_a_plan_on_a_device_without_an_epilogue_kernel_uses_the_layers_kernels(cuda_backend):
    """CUDA (the simulator here) has no ``epilogue`` kernel: add and relu run by their own kernels."""
    cpu = block_network()
    gpu = block_network().to("cuda")
    x = np.random.default_rng(5).standard_normal((2, 4, 6, 6), dtype=np.float32)
    expected = cpu.forward(x)
    assert "epilogue" not in gpu.backend.kernels
    assert gpu.inference().describe() == ["c1 + b1 + r1", "c2 + b2 + add + r2", "global_avgpool_1", "flatten_1"]
    np.testing.assert_allclose(gpu.backend.to_host(gpu.forward(x)), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_shifted_rows_apply_the_epilogue_in_their_output_loop(dtype):
    """1x1 convs on 81 pixels (shifted rows into y's own planes) + batchnorm + residual add + relu
    and + relu: their kernel adds and clips each tile of outputs as it writes it (``ctx.post_applied``:
    the plan's own pass is not run for them; the Winograd conv and the 1x1 conv on 6 channels, not
    a multiple of 4, still get it), NaN and all, equal to the unfused network's output."""
    layers = [{"name": "s", "type": "conv2d", "out_channels": 8, "kernel_size": 1},
              {"name": "sb", "type": "batchnorm"},
              {"name": "a", "type": "add", "inputs": ["sb", "input"]},
              {"name": "r", "type": "relu"},
              {"name": "p", "type": "conv2d", "out_channels": 8, "kernel_size": 1},
              {"name": "pr", "type": "relu"},
              {"name": "w", "type": "conv2d", "out_channels": 8, "kernel_size": 3, "padding": 1,
               "algorithm": "winograd"},
              {"name": "wr", "type": "relu"},
              {"name": "q", "type": "conv2d", "out_channels": 6, "kernel_size": 1},
              {"name": "qr", "type": "relu"}]
    net = with_statistics(Network.from_config(config_of((8, 9, 9), layers), dtype=dtype), 3)
    x = np.random.default_rng(4).standard_normal((3, 8, 9, 9)).astype(dtype)
    x[1, 2, 4, 4] = np.nan  # reaches every output of sample 1 near that pixel
    expected = net.forward(x).copy()
    plan = net.inference()
    passes = []
    own = plan._epilogue
    plan._epilogue = lambda y, residual, relu: passes.append(y.shape) or own(y, residual, relu)
    got = net.forward(x)
    assert plan.describe() == ["s + sb + a + r", "p + pr", "w + wr", "q + qr"]
    assert passes == [(3, 8, 9, 9), (3, 6, 9, 9)]  # Winograd's, and the 6-channel conv's (through rows)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    assert np.isnan(got).any() and (got[~np.isnan(got)] >= 0).all()
    tolerance = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(got, expected, rtol=tolerance, atol=tolerance * np.abs(expected[~np.isnan(expected)]).max())
