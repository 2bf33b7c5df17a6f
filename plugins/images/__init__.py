"""Built-in image data sources: folders of image files (``image_folder``) and the binary CIFAR-10 /
CIFAR-100 files (``cifar10``, ``cifar100``), decoded on demand (:mod:`cnnrun.engine.lazy_inputs`)."""

from __future__ import annotations

from cnnrun.engine import hookimpl

from .cifar import Cifar10, Cifar100
from .folder import ImageFolder


@hookimpl
def cnnrun_register_data_sources(register):
    for source in (ImageFolder, Cifar10, Cifar100):
        register(source)
