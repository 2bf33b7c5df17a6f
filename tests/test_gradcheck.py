"""check_layer_gradients on deliberately broken layers: every bug is an AssertionError naming the
array (wrong values, wrong shapes, a dtype other than the network's)."""

import re

import numpy as np
import pytest

from cnnrun.engine import Layer, LayerRegistry, hookimpl
from cnnrun.engine.gradcheck import check_layer_gradients


class Scale(Layer):
    """y = w * x with a trained (C,) scale, broken as ``bug`` says."""

    type_name = "gc_scale"

    def __init__(self, name, bug="none"):
        super().__init__(name)
        self.bug = bug

    def parameter_shapes(self, input_shape):
        return {"weight": (input_shape[0],)}

    def initialize(self, params, buffers, rng):
        params["weight"][...] = rng.uniform(0.5, 1.5, params["weight"].shape)

    def forward(self, ctx, x):
        ctx.saved.x = x
        w = ctx.params["weight"].reshape(-1, *[1] * (x.ndim - 2))
        if self.bug == "float64":  # computes in float64 whatever the network's dtype
            return np.asarray(x, np.float64) * w
        if self.bug == "output_shape":
            return (x * w)[..., :-1]
        return x * w

    def backward(self, ctx, grad):
        x = ctx.saved.x
        w = ctx.params["weight"].reshape(-1, *[1] * (x.ndim - 2))
        axes = (0, *range(2, x.ndim))
        if self.bug == "weight_grad_shape":
            ctx.grads["weight"] = np.sum(grad * x, axis=axes)[:-1]
        else:
            ctx.grads["weight"][...] = np.sum(grad * x, axis=axes)
        if self.bug == "input_grad_shape":
            return (grad * w)[:1]
        if self.bug == "wrong_value":
            return grad * w * 1.01
        if self.bug == "float64":
            return np.asarray(grad, np.float64) * w
        if self.bug == "cancellation":  # harmless in float64, off by ~4e-3 in float32
            big = grad.dtype.type(1e5)
            return (grad * w + big) - big
        return grad * w


@pytest.fixture
def gc_registry(plugin_manager):
    class Plugin:
        @hookimpl
        def cnnrun_register_layers(self, register):
            register(Scale)

    plugin_manager.register(Plugin(), name="gc-plugin")
    return LayerRegistry.from_plugin_manager(plugin_manager)


def check(registry, bug):
    check_layer_gradients({"name": "s", "type": "gc_scale", "bug": bug}, (3, 4), registry=registry)


def test_a_correct_layer_passes(gc_registry):
    check(gc_registry, "none")


@pytest.mark.parametrize("bug, message", [
    ("wrong_value", "gradient of input.x is off at flat index"),
    ("input_grad_shape", "layer 's' (gc_scale): backward returned an array of shape (1, 3, 4) and dtype "
                         "float64 as the gradient of its input; expected shape (2, 3, 4)"),
    ("weight_grad_shape", "layer 's' (gc_scale): backward left an array of shape (2,) and dtype float64 as "
                          "ctx.grads['weight'] (the gradient of s.weight); expected shape (3,)"),
    ("output_shape", "layer 's' (gc_scale): forward returned an array of shape (2, 3, 3) and dtype float64 as "
                     "its output; expected shape (2, 3, 4)"),
    ("float64", "layer 's' (gc_scale): forward returned an array of shape (2, 3, 4) and dtype float64 as its "
                "output; expected shape (2, 3, 4) (its output_shape) and dtype float32 (the network's)"),
    ("cancellation", "gradient of input in float32 differs from float64 by up to "),
])
def test_each_bug_is_an_assertion_error_naming_the_array(gc_registry, bug, message):
    with pytest.raises(AssertionError, match=re.escape(message)):
        check(gc_registry, bug)


def test_builtin_layers_agree_in_float32_and_float64(registry):
    for layer, shape in [({"type": "conv2d", "out_channels": 2, "kernel_size": 3, "padding": 1}, (2, 5, 5)),
                         ({"type": "batchnorm"}, (3, 4)), ({"type": "softmax"}, (5,)),
                         ({"type": "maxpool2d", "kernel_size": 2}, (1, 4, 4))]:
        check_layer_gradients(layer, shape, registry=registry)
