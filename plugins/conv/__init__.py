"""Convolutions: conv2d, conv1d and conv_transpose2d (:mod:`.layer`; kernels in :mod:`.cpu`, :mod:`.cuda`)."""

from cnnrun.engine import hookimpl

from .layer import Conv1d, Conv2d, ConvTranspose2d


@hookimpl
def cnnrun_register_layers(register):
    for layer in (Conv2d, Conv1d, ConvTranspose2d):
        register(layer)


@hookimpl
def cnnrun_register_kernels(register):
    register("cpu", "cnnrun.plugins.conv.cpu")
    register("cuda", "cnnrun.plugins.conv.cuda")
