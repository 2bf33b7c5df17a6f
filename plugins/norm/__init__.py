"""Normalization: batchnorm (:mod:`.layer`), layer_norm, group_norm, instance_norm (:mod:`.groups`),
lrn (:mod:`.lrn`); their CPU and CUDA kernels in :mod:`.cpu`, :mod:`.cpu_groups`, :mod:`.cpu_lrn`
and :mod:`.cuda`, :mod:`.cuda_groups`, :mod:`.cuda_lrn`."""

from cnnrun.engine import hookimpl

from .groups import GroupNorm, InstanceNorm, LayerNorm
from .layer import BatchNorm
from .lrn import LocalResponseNorm


@hookimpl
def cnnrun_register_layers(register):
    for layer in (BatchNorm, LayerNorm, GroupNorm, InstanceNorm, LocalResponseNorm):
        register(layer)


@hookimpl
def cnnrun_register_kernels(register):
    register("cpu", "cnnrun.plugins.norm.cpu")
    register("cuda", "cnnrun.plugins.norm.cuda")
