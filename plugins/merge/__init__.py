"""Merge layers: add, sub, mul (broadcasting), concat, and scale (:mod:`.layer`; kernels in
:mod:`.cpu`, :mod:`.cuda`)."""

from cnnrun.engine import hookimpl

from .layer import Add, Concat, Mul, Scale, Sub


@hookimpl
def cnnrun_register_layers(register):
    for layer in (Add, Sub, Mul, Concat, Scale):
        register(layer)


@hookimpl
def cnnrun_register_kernels(register):
    register("cpu", "cnnrun.plugins.merge.cpu")
    register("cuda", "cnnrun.plugins.merge.cuda")
