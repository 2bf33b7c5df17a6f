"""Dropout, dropout2d and drop_path (:mod:`.layer`; kernels in :mod:`.cpu`, :mod:`.cuda`)."""

from __future__ import annotations

from cnnrun.engine import hookimpl

from .layer import Dropout, Dropout2d, DropPath


@hookimpl
def cnnrun_register_layers(register):
    for layer in (Dropout, Dropout2d, DropPath):
        register(layer)


@hookimpl
def cnnrun_register_kernels(register):
    register("cpu", "cnnrun.plugins.dropout.cpu")
    register("cuda", "cnnrun.plugins.dropout.cuda")
