"""The layer contract (engine/contract.py): a layer that returns the wrong shape or dtype is stopped,
naming the layer and the array, on the CPU and on CUDA (Numba's simulator here)."""

import re

import numpy as np
import pytest

from cnnrun.engine import CnnrunError, Layer, LayerRegistry, Network, hookimpl
from cnnrun.engine.contract import LayerContractError


class Broken(Layer):
    """y = w * x with one trained scale w (shape (1,)), broken on purpose as ``bug`` says."""

    type_name = "broken"

    def __init__(self, name, bug="none"):
        super().__init__(name)
        self.bug = bug

    def parameter_shapes(self, input_shape):
        return {"weight": (1,)}

    def initialize(self, params, buffers, rng):
        params["weight"][...] = 2.0

    def forward(self, ctx, x):
        ctx.saved.x = x
        y = x * ctx.params["weight"][0]
        if self.bug == "output_shape":
            return y[:, :-1]
        if self.bug == "output_dtype":
            return y.astype(np.float64)
        if self.bug == "output_type":
            return y.tolist()
        return y

    def backward(self, ctx, grad):
        x = ctx.saved.x
        if self.bug == "grads_replaced":
            ctx.grads["weight"] = np.zeros((2,), x.dtype)
        elif self.bug == "grads_dtype":
            ctx.grads["weight"] = np.zeros((1,), np.float64)
        else:
            ctx.grads["weight"][...] = np.sum(grad * x)
        dx = grad * ctx.params["weight"][0]
        if self.bug == "grad_shape":
            return dx.reshape(dx.shape[0], -1)[:, :2]
        if self.bug == "grad_dtype":
            return dx.astype(np.float64)
        if self.bug == "grad_count":
            return dx, dx
        return dx


class TwoInputs(Layer):
    """y = a + b, whose backward forgets the second gradient."""

    type_name = "broken_add"
    min_inputs = max_inputs = 2

    def forward(self, ctx, a, b):
        return a + b

    def backward(self, ctx, grad):
        return (grad,)


class Plugin:
    @hookimpl
    def cnnrun_register_layers(self, register):
        register(Broken)
        register(TwoInputs)


@pytest.fixture
def broken_registry(plugin_manager):
    plugin_manager.register(Plugin(), name="broken-plugin")
    return LayerRegistry.from_plugin_manager(plugin_manager)


def network(registry, bug, dtype="float32"):
    config = {"input": {"shape": [2, 3]}, "layers": [
        {"type": "relu"}, {"name": "b1", "type": "broken", "bug": bug}, {"type": "flatten"}]}
    return Network.from_config(config, registry=registry, dtype=dtype)


X = np.arange(12, dtype=np.float32).reshape(2, 2, 3) - 5


def test_a_correct_layer_passes(broken_registry):
    net = network(broken_registry, "none")
    y = net.forward(X, training=True)
    assert y.shape == (2, 6) and y.dtype == np.float32
    dx = net.backward(np.ones_like(y))
    np.testing.assert_array_equal(dx, 2.0 * (X > 0))


@pytest.mark.parametrize("bug, message", [
    ("output_shape", "layer 'b1' (broken): forward returned an array of shape (2, 1, 3) and dtype float32 as "
                     "its output; expected shape (2, 2, 3) (its output_shape) and dtype float32 (the network's)"),
    ("output_dtype", "layer 'b1' (broken): forward returned an array of shape (2, 2, 3) and dtype float64 as "
                     "its output; expected shape (2, 2, 3) (its output_shape) and dtype float32"),
    ("output_type", "layer 'b1' (broken): forward returned list as its output; expected shape (2, 2, 3)"),
])
@pytest.mark.parametrize("plan", [False, True])
def test_forward_output_is_checked(broken_registry, bug, message, plan):
    net = network(broken_registry, bug)
    if plan:  # an inference plan checks its first pass of each batch size
        net.inference()
    with pytest.raises(LayerContractError, match=re.escape(message)):
        net.forward(X, training=not plan)


@pytest.mark.parametrize("bug, message", [
    ("grad_shape", "layer 'b1' (broken): backward returned an array of shape (2, 2) and dtype float32 as the "
                   "gradient of its input; expected shape (2, 2, 3) (its input shape) and dtype float32"),
    ("grad_dtype", "layer 'b1' (broken): backward returned an array of shape (2, 2, 3) and dtype float64 as the "
                   "gradient of its input; expected shape (2, 2, 3)"),
    ("grad_count", "layer 'b1' (broken): backward must return 1 input gradient(s), one per input; got 2"),
    ("grads_replaced", "layer 'b1' (broken): backward left an array of shape (2,) and dtype float32 as "
                       "ctx.grads['weight'] (the gradient of b1.weight); expected shape (1,) (its parameter shape)"),
    ("grads_dtype", "layer 'b1' (broken): backward left an array of shape (1,) and dtype float64 as "
                    "ctx.grads['weight'] (the gradient of b1.weight); expected shape (1,) (its parameter shape) "
                    "and dtype float32"),
])
def test_backward_gradients_are_checked(broken_registry, bug, message):
    net = network(broken_registry, bug)
    y = net.forward(X, training=True)
    with pytest.raises(LayerContractError, match=re.escape(message)):
        net.backward(np.ones_like(y))


def test_a_multi_input_layer_must_return_a_gradient_per_input(broken_registry):
    config = {"input": {"shape": [3]}, "layers": [
        {"name": "a", "type": "relu"}, {"name": "sum", "type": "broken_add", "inputs": ["a", "input"]}]}
    net = Network.from_config(config, registry=broken_registry)
    y = net.forward(np.ones((2, 3)))
    with pytest.raises(LayerContractError, match=re.escape("layer 'sum' (broken_add): backward must return "
                                                           "2 input gradient(s), one per input; got 1")):
        net.backward(np.ones_like(y))


def test_the_check_follows_the_batch_size(broken_registry):
    net = network(broken_registry, "none")
    for batch in (1, 3, 2, 1):
        x = np.ones((batch, 2, 3), np.float32)
        assert net.backward(net.forward(x, training=True)).shape == x.shape
    assert issubclass(LayerContractError, CnnrunError)  # the CLI prints it as one line


class BrokenOnCuda(Broken):
    """Its CUDA kernels return float64 for a float32 network (or, with bug="grad_shape", a
    wrong-shaped input gradient)."""

    type_name = "broken_cuda"
    kernels = ("broken_forward", "broken_backward")

    def forward(self, ctx, x):
        return ctx.kernels.broken_forward(x, self.bug)

    def backward(self, ctx, grad):
        return ctx.kernels.broken_backward(grad, ctx.grads["weight"], self.bug)


def broken_forward(x, bug):
    from numba import cuda

    host = x.copy_to_host() * 2
    return cuda.to_device(host.astype(np.float64) if bug == "output_dtype" else host)


def broken_backward(grad, weight_grad, bug):
    from numba import cuda

    host = grad.copy_to_host() * 2
    weight_grad.copy_to_device(np.zeros(1, np.float32))
    return cuda.to_device(np.ascontiguousarray(host[:, :1]) if bug == "grad_shape" else host)


KERNELS = {"broken_forward": broken_forward, "broken_backward": broken_backward}  # this module: cuda kernels


@pytest.mark.cuda
@pytest.mark.parametrize("bug, message", [
    ("output_dtype", "forward returned an array of shape (2, 2, 3) and dtype float64 as its output"),
    ("grad_shape", "backward returned an array of shape (2, 1, 3) and dtype float32 as the gradient of its input"),
])
def test_cuda_device_arrays_are_checked(plugin_manager, cuda_backend, bug, message):
    plugin_manager.register(type("P", (), {
        "cnnrun_register_layers": hookimpl(lambda self, register: register(BrokenOnCuda)),
        "cnnrun_register_kernels": hookimpl(lambda self, register: register("cuda", __name__))})(),
        name="broken-cuda")
    registry = LayerRegistry.from_plugin_manager(plugin_manager)
    net = Network.from_config({"input": {"shape": [2, 3]}, "layers": [{"name": "g", "type": "broken_cuda",
                                                                        "bug": bug}]}, registry=registry)
    net.to("cuda")
    with pytest.raises(LayerContractError, match=re.escape(f"layer 'g' (broken_cuda): {message}")):
        net.forward(X, training=True)
        net.backward(np.ones((2, 2, 3), np.float32))
