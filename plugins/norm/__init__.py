"""Normalization: batchnorm (:mod:`.layer`; kernels in :mod:`.cpu`, :mod:`.cuda`)."""

from cnnrun.engine import hookimpl

from .layer import BatchNorm


@hookimpl
def cnnrun_register_layers(register):
    register(BatchNorm)


@hookimpl
def cnnrun_register_kernels(register):
    register("cpu", "cnnrun.plugins.norm.cpu")
    register("cuda", "cnnrun.plugins.norm.cuda")
