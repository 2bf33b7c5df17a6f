"""Layers that move values without arithmetic: identity, flatten, reshape, slice, permute
(:mod:`.layer`; kernels in :mod:`.cpu`, :mod:`.cuda`)."""

from cnnrun.engine import hookimpl

from .layer import Flatten, Identity, Permute, Reshape, Slice


@hookimpl
def cnnrun_register_layers(register):
    for layer in (Identity, Flatten, Reshape, Slice, Permute):
        register(layer)


@hookimpl
def cnnrun_register_kernels(register):
    register("cpu", "cnnrun.plugins.reshape.cpu")
    register("cuda", "cnnrun.plugins.reshape.cuda")
