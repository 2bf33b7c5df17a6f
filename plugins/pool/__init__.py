"""Pooling layers: maxpool2d, avgpool2d, maxpool1d, avgpool1d, global_avgpool (:mod:`.layer`;
kernels in :mod:`.cpu`, :mod:`.cuda`)."""

from cnnrun.engine import hookimpl

from .layer import AvgPool1d, AvgPool2d, GlobalAvgPool, MaxPool1d, MaxPool2d


@hookimpl
def cnnrun_register_layers(register):
    for layer in (MaxPool2d, AvgPool2d, MaxPool1d, AvgPool1d, GlobalAvgPool):
        register(layer)


@hookimpl
def cnnrun_register_kernels(register):
    register("cpu", "cnnrun.plugins.pool.cpu")
    register("cuda", "cnnrun.plugins.pool.cuda")
