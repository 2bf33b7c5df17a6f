"""Resizing layers: upsample, pad (:mod:`.layer`), pixel_shuffle, pixel_unshuffle, channel_shuffle
(:mod:`.shuffle`); kernels in :mod:`.cpu`, :mod:`.cuda`."""

from cnnrun.engine import hookimpl

from .layer import Pad, Upsample
from .shuffle import ChannelShuffle, PixelShuffle, PixelUnshuffle


@hookimpl
def cnnrun_register_layers(register):
    for layer in (Upsample, Pad, PixelShuffle, PixelUnshuffle, ChannelShuffle):
        register(layer)


@hookimpl
def cnnrun_register_kernels(register):
    register("cpu", "cnnrun.plugins.resize.cpu")
    register("cuda", "cnnrun.plugins.resize.cuda")
