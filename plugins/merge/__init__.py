"""Merge layers: add and concat (:mod:`.layer`; kernels in :mod:`.cpu`, :mod:`.cuda`)."""

from cnnrun.engine import hookimpl

from .layer import Add, Concat


@hookimpl
def cnnrun_register_layers(register):
    for layer in (Add, Concat):
        register(layer)


@hookimpl
def cnnrun_register_kernels(register):
    register("cpu", "cnnrun.plugins.merge.cpu")
    register("cuda", "cnnrun.plugins.merge.cuda")
