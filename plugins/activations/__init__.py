"""Activations: relu, leaky_relu, sigmoid, tanh, softmax (:mod:`.layer`; kernels in :mod:`.cpu`, :mod:`.cuda`)."""

from cnnrun.engine import hookimpl

from .layer import LeakyReLU, ReLU, Sigmoid, Softmax, Tanh


@hookimpl
def cnnrun_register_layers(register):
    for layer in (ReLU, LeakyReLU, Sigmoid, Tanh, Softmax):
        register(layer)


@hookimpl
def cnnrun_register_kernels(register):
    register("cpu", "cnnrun.plugins.activations.cpu")
    register("cuda", "cnnrun.plugins.activations.cuda")
