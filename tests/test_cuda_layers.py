"""CUDA kernels against the CPU ones: every layer (flatten, linear, activations, batchnorm, dropout,
add, concat), the optimizers, the losses and the backend, on tiny shapes in float32 and float64.

Without a GPU they run under Numba's CUDA simulator (tests/conftest.py turns it on); on a GPU run
``NUMBA_ENABLE_CUDASIM=0 python -m pytest -m cuda``. The ``cuda_backend`` fixture launches 32
threads per block and at most 2 blocks, so several blocks and the grid-stride loops run (the
linear layer's products are the conv's tiled product, tested over several tiles in
tests/test_cuda_conv_pool.py; here a long batch splits the weight gradient's inner dimension).
"""

import numpy as np
import pytest

from cnnrun.engine import CnnrunError, Layer, Network
from cnnrun.engine.losses import cross_entropy, cross_entropy_from_probabilities, mse
from cnnrun.engine.optim import make_optimizer

pytestmark = pytest.mark.cuda


DTYPES = ("float32", "float64")


def on_cuda(array) -> bool:
    return not isinstance(array, np.ndarray) and hasattr(array, "copy_to_host")


def to_host(array) -> np.ndarray:
    return array.copy_to_host() if on_cuda(array) else np.array(array)

TOL = {"float32": dict(rtol=2e-5, atol=2e-6), "float64": dict(rtol=1e-12, atol=1e-13)}


def both_devices(registry, layers, input_shape, dtype, seed=0, setup=None):
    """The same network twice, initialized alike (``setup(net)`` may randomize more); the second on CUDA."""
    config = {"input": {"shape": list(input_shape)}, "layers": layers}
    nets = []
    for _ in range(2):
        net = Network.from_config(config, registry=registry, dtype=dtype)
        net.initialize(seed)
        if setup:
            setup(net)
        nets.append(net)
    nets[1].to("cuda")
    return nets


def assert_same_pass(cpu, gpu, x, dtype, training=True, seed=1):
    """Forward and backward on both networks agree: output, input gradient, parameter gradients,
    buffers (running statistics)."""
    tol = TOL[dtype]
    y_cpu = cpu.forward(x, training=training)
    y_gpu = gpu.forward(x, training=training)
    assert on_cuda(y_gpu) and y_gpu.dtype == dtype
    np.testing.assert_allclose(to_host(y_gpu), y_cpu, **tol)
    grad = np.random.default_rng(seed).standard_normal(y_cpu.shape).astype(dtype)
    np.testing.assert_allclose(to_host(gpu.backward(grad)), cpu.backward(grad), **tol)
    for tree in ("grads", "buffers"):
        for layer, arrays in getattr(cpu, tree).items():
            for name, expected in arrays.items():
                np.testing.assert_allclose(to_host(getattr(gpu, tree)[layer][name]), expected, **tol,
                                           err_msg=f"{tree} {layer}.{name}")


# -- layers ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bias, split", [(True, False), (False, False), (True, True)])
def test_flatten_linear(cuda_backend, registry, monkeypatch, dtype, bias, split):
    # 5 x 7 inputs, 6 outputs; with ``split`` every product's inner dimension (7, 5, 6) is split in parts
    if split:
        from cnnrun.plugins.products import cuda

        monkeypatch.setattr(cuda, "SPLIT_MIN_DEPTH", 2)
    layers = [{"type": "flatten"}, {"type": "linear", "out_features": 6, "bias": bias}]
    cpu, gpu = both_devices(registry, layers, (1, 7), dtype)
    x = np.random.default_rng(2).standard_normal((5, 1, 7)).astype(dtype)
    assert_same_pass(cpu, gpu, x, dtype)


ACTIVATIONS = [{"type": "relu"}, {"type": "leaky_relu", "negative_slope": 0.2}, {"type": "sigmoid"},
               {"type": "tanh"}, {"type": "softmax"}]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layer", ACTIVATIONS, ids=lambda layer: layer["type"])
def test_activations(cuda_backend, registry, dtype, layer):
    cpu, gpu = both_devices(registry, [layer], (3, 5, 7), dtype)  # 210 values per batch of 2
    x = np.random.default_rng(3).standard_normal((2, 3, 5, 7)) * 4
    x[0, 0, 0, :3] = [0.0, 80.0, -80.0]  # relu's kink; sigmoid/softmax far out (no overflow)
    assert_same_pass(cpu, gpu, x.astype(dtype), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_over_features(cuda_backend, registry, dtype):
    cpu, gpu = both_devices(registry, [{"type": "softmax"}], (6,), dtype)
    assert_same_pass(cpu, gpu, np.random.default_rng(4).standard_normal((3, 6)).astype(dtype), dtype)


def randomize_batchnorm(net):
    rng = np.random.default_rng(5)
    c = net.params["bn"]["weight"].shape[0]
    net.params["bn"]["weight"][...] = rng.uniform(0.5, 2, c)
    net.params["bn"]["bias"][...] = rng.standard_normal(c)
    net.buffers["bn"]["running_mean"][...] = rng.standard_normal(c)
    net.buffers["bn"]["running_var"][...] = rng.uniform(0.5, 2, c)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("training", [True, False], ids=["training", "eval"])
@pytest.mark.parametrize("shape", [(3, 4, 5), (4,)], ids=["3x4x5", "4"])
def test_batchnorm(cuda_backend, registry, dtype, training, shape):
    # (3, 4, 5) with a batch of 3: 60 values per channel over 32 threads, 3 channels over 2 blocks
    layers = [{"type": "batchnorm", "name": "bn", "eps": 1e-3, "momentum": 0.3}]
    cpu, gpu = both_devices(registry, layers, shape, dtype, setup=randomize_batchnorm)
    x = np.random.default_rng(6).standard_normal((3, *shape)) * 2 + 1
    for step in range(2):  # the running statistics move twice
        assert_same_pass(cpu, gpu, x.astype(dtype) + step, dtype, training=training, seed=step)


def test_batchnorm_needs_two_values_per_channel(cuda_backend, registry):
    _, gpu = both_devices(registry, [{"type": "batchnorm"}], (4,), "float32")
    with pytest.raises(CnnrunError, match="expected more than 1 value per channel"):
        gpu.forward(np.ones((1, 4), np.float32), training=True)


@pytest.mark.parametrize("dtype", DTYPES)
def test_add_and_concat(cuda_backend, registry, dtype):
    layers = [{"type": "tanh", "name": "a"}, {"type": "sigmoid", "name": "b", "inputs": ["input"]},
              {"type": "concat", "name": "cat", "inputs": ["a", "b", "a"]},
              {"type": "relu", "name": "r"},
              {"type": "add", "inputs": ["cat", "r", "cat"]}]
    cpu, gpu = both_devices(registry, layers, (2, 3, 4), dtype)
    assert_same_pass(cpu, gpu, np.random.default_rng(7).standard_normal((2, 2, 3, 4)).astype(dtype), dtype)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # uint64 wrap-around, simulated
@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout(cuda_backend, registry, dtype):
    p = 0.25
    _, gpu = both_devices(registry, [{"type": "dropout", "p": p, "name": "drop"}], (4, 8, 8), dtype)
    x = np.random.default_rng(8).uniform(1, 2, (4, 4, 8, 8)).astype(dtype)  # 1024 values, no zeros
    y = to_host(gpu.forward(x, training=True))
    scale = np.dtype(dtype).type(1) / np.dtype(dtype).type(1 - p)
    kept = y != 0
    np.testing.assert_array_equal(y[kept], x[kept] * scale)
    assert 0.70 < kept.mean() < 0.80  # 1 - p = 0.75; a binomial's sd here is 0.014
    grad = np.random.default_rng(9).standard_normal(x.shape).astype(dtype)
    np.testing.assert_array_equal(to_host(gpu.backward(grad)), np.where(kept, grad * scale, 0))
    # the next batch gets a fresh mask; a network seeded alike draws the same masks
    assert (to_host(gpu.forward(x, training=True)) != 0).tolist() != kept.tolist()
    _, twin = both_devices(registry, [{"type": "dropout", "p": p, "name": "drop"}], (4, 8, 8), dtype)
    np.testing.assert_array_equal(to_host(twin.forward(x, training=True)) != 0, kept)
    np.testing.assert_array_equal(to_host(gpu.forward(x, training=False)), x)  # eval: identity


# -- optimizers ------------------------------------------------------------------------------------
OPTIMIZERS = [
    {"type": "sgd", "lr": 0.1},
    {"type": "sgd", "lr": 0.1, "momentum": 0.9, "dampening": 0.2, "weight_decay": 0.01},
    {"type": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True},
    {"type": "adam", "lr": 0.01, "weight_decay": 0.05},
    {"type": "adamw", "lr": 0.01, "betas": [0.8, 0.99]},
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("config", OPTIMIZERS, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_optimizers(cuda_backend, registries, dtype, config):
    rng = np.random.default_rng(10)
    shapes = {"weight": (3, 37), "bias": (3,)}  # 111 values: grid-stride over 64 threads
    params = {"fc": {k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()}}
    on_gpu = {"fc": {k: cuda_backend.asarray(a, dtype) for k, a in params["fc"].items()}}
    cpu, gpu = (make_optimizer(config, registries.optimizers) for _ in range(2))
    gpu.to(cuda_backend)
    for step, lr in enumerate((0.1, 0.05, 0.02)):
        grads = {"fc": {k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()}}
        cpu.apply(params, grads, lr)
        gpu.apply(on_gpu, {"fc": {k: cuda_backend.asarray(g, dtype) for k, g in grads["fc"].items()}}, lr)
    for name, expected in params["fc"].items():
        np.testing.assert_allclose(to_host(on_gpu["fc"][name]), expected, **TOL[dtype])
    states = gpu.state_arrays()
    assert sorted(states) == sorted(cpu.state_arrays())
    for key, expected in cpu.state_arrays().items():
        assert isinstance(states[key], np.ndarray)  # checkpoints get host copies
        np.testing.assert_allclose(states[key], expected, **TOL[dtype])


def test_optimizer_state_follows_the_parameters(cuda_backend, registries):
    """State loaded from a checkpoint lands on the optimizer's device; an optimizer moved to the GPU
    after some steps (as its network) takes its state along, and back."""
    config = {"type": "sgd", "lr": 0.1, "momentum": 0.9}
    grad = np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)

    def step(optimizer, weight):
        grads = {"fc": {"weight": optimizer.device.asarray(grad, np.float32)}}
        optimizer.apply({"fc": {"weight": weight}}, grads, 0.1)

    reference, carried = (make_optimizer(config, registries.optimizers) for _ in range(2))
    on_host, carried_weight = np.ones((2, 3), np.float32), np.ones((2, 3), np.float32)
    step(reference, on_host)
    step(carried, carried_weight)
    loaded_weight = cuda_backend.asarray(on_host, np.float32)
    carried_weight = cuda_backend.asarray(carried_weight, np.float32)
    carried.to(cuda_backend)
    loaded = make_optimizer(config, registries.optimizers).to(cuda_backend)
    loaded.load_state_arrays(reference.state_arrays(), reference.step, {"fc": {"weight": loaded_weight}})
    for optimizer, weight in ((reference, on_host), (loaded, loaded_weight), (carried, carried_weight)):
        step(optimizer, weight)
    for optimizer, weight in ((loaded, loaded_weight), (carried, carried_weight)):
        assert on_cuda(optimizer.state["fc"]["weight"]["momentum_buffer"])
        np.testing.assert_allclose(to_host(weight), on_host, rtol=1e-6)
    carried.to(registries.devices.open("cpu"))
    assert isinstance(carried.state["fc"]["weight"]["momentum_buffer"], np.ndarray)
    np.testing.assert_allclose(carried.state["fc"]["weight"]["momentum_buffer"],
                               reference.state["fc"]["weight"]["momentum_buffer"], rtol=1e-6)


def test_optimizer_refuses_parameters_of_another_device(cuda_backend, registries):
    """A cheap check per step: the first parameter must be an array of the optimizer's device."""
    on_host = {"fc": {"weight": np.ones(4, np.float32)}}
    on_gpu = {"fc": {"weight": cuda_backend.asarray(on_host["fc"]["weight"], np.float32)}}
    cpu = make_optimizer({"type": "sgd", "lr": 0.1}, registries.optimizers)
    gpu = make_optimizer({"type": "sgd", "lr": 0.1}, registries.optimizers).to(cuda_backend)
    for optimizer, params, device in ((cpu, on_gpu, "cpu"), (gpu, on_host, "cuda")):
        with pytest.raises(CnnrunError, match=rf"optimizer 'sgd' updates on device '{device}', but parameter "
                                              r"'fc/weight' is not there .*to\(net.backend\)"):
            optimizer.apply(params, params, 0.1)
    assert optimizer.step == 0 and cpu.step == 0


def test_optimizer_without_cuda_is_a_clear_error(cuda_backend, registries):
    from cnnrun.engine.optim import Optimizer

    class Lion(Optimizer):  # as a plugin optimizer with CPU kernels only
        type_name = "lion"
        kernels = ("lion_update",)

    with pytest.raises(CnnrunError, match=r"optimizer 'lion' has no cuda implementation \(no kernel lion_update\); "
                                          r"register cuda kernels for it or train on another device"):
        Lion(0.1).to(cuda_backend)


# -- losses ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["cross_entropy", "cross_entropy_from_probabilities", "mse"])
def test_losses(cuda_backend, dtype, kind):
    from cnnrun.engine.losses_cuda import DeviceLoss

    rng = np.random.default_rng(11)
    output = rng.standard_normal((70, 4)) * 3  # 70 rows: grid-stride over 64 threads
    output[0] = [1000, -1000, 0, 5]  # huge logits stay finite
    if kind == "cross_entropy_from_probabilities":
        output = np.exp(output - output.max(axis=1, keepdims=True))
        output /= output.sum(axis=1, keepdims=True)
        output[1] = [0, 0, 1, 0]  # p[y] = 0: clipped at the smallest normal number
    output = output.astype(dtype)
    labels = rng.integers(0, 4, 70)
    labels[1] = 0
    function = {"cross_entropy": cross_entropy, "mse": mse,
                "cross_entropy_from_probabilities": cross_entropy_from_probabilities}[kind]
    loss, grad = function(output, labels)
    device_loss = DeviceLoss(kind)
    value, correct, device_grad, predicted = device_loss(cuda_backend.asarray(output, dtype), labels)
    np.testing.assert_allclose(value, loss, rtol=1e-12 if dtype == "float64" else 1e-6)
    np.testing.assert_allclose(to_host(device_grad), grad, **TOL[dtype])
    assert correct == np.count_nonzero(np.argmax(output, axis=1) == labels)
    np.testing.assert_array_equal(to_host(predicted), np.argmax(output, axis=1))
    value, _, none, _ = device_loss(cuda_backend.asarray(output[:5], dtype), labels[:5], gradient=False)
    assert none is None and np.isclose(value, function(output[:5], labels[:5])[0], rtol=1e-6)


def test_loss_checks_labels_on_the_host(cuda_backend):
    from cnnrun.engine.losses_cuda import DeviceLoss

    with pytest.raises(CnnrunError, match="label 7 is out of range for 4 classes"):
        DeviceLoss("cross_entropy")(cuda_backend.zeros((2, 4), np.float32), np.array([0, 7]))


# -- the backend and the network -------------------------------------------------------------------
def test_backend(cuda_backend):
    host = np.arange(130, dtype=np.float64).reshape(2, 65)
    a = cuda_backend.asarray(host, np.float32)
    assert a.dtype == np.float32 and cuda_backend.asarray(a, np.float32) is a
    assert cuda_backend.asarray(a, np.float64).dtype == np.float64
    np.testing.assert_array_equal(cuda_backend.to_host(cuda_backend.add(a, a)), 2 * host)
    z = cuda_backend.zeros((2, 65), np.float64)
    np.testing.assert_array_equal(cuda_backend.to_host(z), 0)
    cuda_backend.fill(z, 3)
    cuda_backend.copy_into(a, host[::-1])
    cuda_backend.synchronize()
    np.testing.assert_array_equal(cuda_backend.to_host(z), 3)
    np.testing.assert_array_equal(cuda_backend.to_host(a), host[::-1])
    assert cuda_backend.empty((0, 3), np.float32).size == 0


def test_launch_sizes(monkeypatch):
    from cnnrun.engine import cuda

    monkeypatch.delenv("CNNRUN_CUDA_BLOCK_SIZE", raising=False)
    monkeypatch.delenv("CNNRUN_CUDA_MAX_BLOCKS", raising=False)
    assert cuda.grid(1000) == (4, 256) and cuda.grid(1) == (1, 256) and cuda.grid(0) == (1, 256)
    monkeypatch.setenv("CNNRUN_CUDA_BLOCK_SIZE", "32")
    monkeypatch.setenv("CNNRUN_CUDA_MAX_BLOCKS", "2")
    assert cuda.grid(1000) == (2, 32) and cuda.blocks_for(5) == 2
    monkeypatch.setenv("CNNRUN_CUDA_BLOCK_SIZE", "2048")
    with pytest.raises(CnnrunError, match=r"CNNRUN_CUDA_BLOCK_SIZE must be an integer from 1 to 1024; "
                                          r"got CNNRUN_CUDA_BLOCK_SIZE='2048'"):
        cuda.grid(10)


def test_missing_numba_cuda_is_one_line(monkeypatch):
    from cnnrun.engine import cuda
    from cnnrun.engine.plugins import get_backend

    monkeypatch.setattr(cuda, "_CHECKED", False)
    monkeypatch.setattr(cuda.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(CnnrunError, match=r"^--device cuda needs numba-cuda, which is not installed; "
                                          r"`pip install 'cnnrun\[cuda\]'` \(and an NVIDIA driver\), or use --device cpu$"):
        get_backend("cuda")


class Scale(Layer):
    """A throwaway layer with a CPU implementation only."""

    type_name = "test_scale"

    def forward(self, ctx, x):
        return 2 * x

    def backward(self, ctx, grad):
        return 2 * grad


def test_layer_without_cuda_is_named(cuda_backend, registry):
    registry.register(Scale, "tests")
    net = Network.from_config({"name": "net", "input": {"shape": [3]},
                               "layers": [{"type": "relu"}, {"type": "test_scale", "name": "double"}]},
                              registry=registry)
    with pytest.raises(CnnrunError, match=r"^net: no cuda implementation for layer\(s\) 'double' \(test_scale\); "):
        net.to("cuda")
    assert net.device == "cpu"


def test_network_moves_back_and_forth(cuda_backend, registry):
    layers = [{"type": "linear", "out_features": 3, "name": "fc"}, {"type": "batchnorm", "name": "bn"}]
    cpu, gpu = both_devices(registry, layers, (4,), "float32")
    x = np.random.default_rng(12).standard_normal((3, 4)).astype(np.float32)
    gpu.forward(x, training=True)
    cpu.forward(x, training=True)
    gpu.to("cpu")
    assert gpu.device == "cpu" and isinstance(gpu.params["fc"]["weight"], np.ndarray)
    np.testing.assert_allclose(gpu.buffers["bn"]["running_var"], cpu.buffers["bn"]["running_var"], rtol=1e-6)
    np.testing.assert_allclose(gpu.forward(x), cpu.forward(x), rtol=1e-5, atol=1e-6)
