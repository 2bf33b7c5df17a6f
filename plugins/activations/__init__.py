"""Activations: relu, leaky_relu, sigmoid, tanh, softmax, log_softmax, prelu (:mod:`.layer`) and the
element-wise ones of :mod:`.elementwise` (elu, selu, celu, gelu, silu, mish, hardswish, hardsigmoid,
hardtanh, relu6, clip, softplus, softsign); kernels in :mod:`.cpu`, :mod:`.cuda`."""

from cnnrun.engine import hookimpl

from .elementwise import LAYERS as ELEMENTWISE
from .layer import LeakyReLU, LogSoftmax, PReLU, ReLU, Sigmoid, Softmax, Tanh


@hookimpl
def cnnrun_register_layers(register):
    for layer in (ReLU, LeakyReLU, Sigmoid, Tanh, Softmax, LogSoftmax, PReLU, *ELEMENTWISE):
        register(layer)


@hookimpl
def cnnrun_register_kernels(register):
    register("cpu", "cnnrun.plugins.activations.cpu")
    register("cuda", "cnnrun.plugins.activations.cuda")
