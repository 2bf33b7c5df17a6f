"""Pooling layers: maxpool2d, avgpool2d, maxpool1d, avgpool1d, global_avgpool, global_maxpool
(:mod:`.layer`), adaptive_avgpool2d, adaptive_maxpool2d (:mod:`.adaptive`); kernels in :mod:`.cpu`,
:mod:`.cuda`."""

from cnnrun.engine import hookimpl

from .adaptive import AdaptiveAvgPool2d, AdaptiveMaxPool2d
from .layer import AvgPool1d, AvgPool2d, GlobalAvgPool, GlobalMaxPool, MaxPool1d, MaxPool2d


@hookimpl
def cnnrun_register_layers(register):
    for layer in (MaxPool2d, AvgPool2d, MaxPool1d, AvgPool1d, GlobalAvgPool, GlobalMaxPool, AdaptiveAvgPool2d,
                  AdaptiveMaxPool2d):
        register(layer)


@hookimpl
def cnnrun_register_kernels(register):
    register("cpu", "cnnrun.plugins.pool.cpu")
    register("cuda", "cnnrun.plugins.pool.cuda")
