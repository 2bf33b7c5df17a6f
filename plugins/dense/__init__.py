"""The fully connected layer, linear (:mod:`.layer`; kernels in :mod:`.cpu`, :mod:`.cuda`)."""

from cnnrun.engine import hookimpl

from .layer import Linear


@hookimpl
def cnnrun_register_layers(register):
    register(Linear)


@hookimpl
def cnnrun_register_kernels(register):
    register("cpu", "cnnrun.plugins.dense.cpu")
    register("cuda", "cnnrun.plugins.dense.cuda")
