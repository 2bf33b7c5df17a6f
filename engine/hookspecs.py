"""The hooks a cnnrun plugin can implement (pluggy, project name ``cnnrun``)."""

from __future__ import annotations

from typing import Callable

import pluggy

hookspec = pluggy.HookspecMarker("cnnrun")
hookimpl = pluggy.HookimplMarker("cnnrun")


@hookspec
def cnnrun_register_layers(register: Callable[[type], None]) -> None:
    """Register layer types.

    :param register: call ``register(LayerClass)`` once per layer type; the class subclasses
        :class:`cnnrun.engine.Layer` and its ``type_name`` is the JSON ``"type"``.
    :return: nothing.
    """


@hookspec
def cnnrun_register_data_sources(register: Callable[[type], None]) -> None:
    """Register data sources (the ``train.data.type`` of a network file).

    :param register: call ``register(SourceClass)`` once per source; the class subclasses
        :class:`cnnrun.engine.data.DataSource`.
    :return: nothing.
    """


@hookspec
def cnnrun_register_optimizers(register: Callable[[type], None]) -> None:
    """Register optimizers (the ``train.optimizer.type`` of a network file).

    :param register: call ``register(OptimizerClass)`` once per optimizer; the class subclasses
        :class:`cnnrun.engine.optim.Optimizer`.
    :return: nothing.
    """
