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


# -- losses (issue 15) ---------------------------------------------------------------------------
@hookspec
def cnnrun_register_losses(register: Callable[[type], None]) -> None:
    """Register losses (the ``train.loss`` of a network file: a name or ``{"type": name, ...}``).

    :param register: call ``register(LossClass)`` once per loss; the class subclasses
        :class:`cnnrun.engine.losses.Loss`.
    :return: nothing.
    """


@hookspec
def cnnrun_register_devices(register: Callable[[type], None]) -> None:
    """Register devices (the values of ``--device`` and of :meth:`Network.to`).

    :param register: call ``register(DeviceClass)`` once per device; the class subclasses
        :class:`cnnrun.engine.device.Device`, its ``name`` is the ``--device`` value, its
        ``open()`` returns a working instance or raises :class:`cnnrun.engine.CnnrunError`.
    :return: nothing.
    """


@hookspec
def cnnrun_register_kernels(register: Callable[[str, str], None]) -> None:
    """Register kernels: the functions that layers, optimizers and losses call on a device.

    :param register: call ``register(device, module)``: ``device`` is a device name ("cpu",
        "cuda", or one a plugin registers), ``module`` the dotted name of a module whose ``KERNELS``
        dict maps operation names (``"swish_forward"``) to functions. The module is imported only
        when a network moves to that device, so it may import GPU libraries at its top.
    :return: nothing.
    """


# -- metrics -------------------------------------------------------------------------------------

@hookspec
def cnnrun_register_metrics(register: Callable[[type], None]) -> None:
    """Register metrics (the names in ``train.metrics`` of a network file and ``metrics=`` of ``fit``).

    :param register: call ``register(MetricClass)`` once per metric; the class subclasses
        :class:`cnnrun.engine.metrics.Metric`, its ``type_name`` is the name used in JSON.
    :return: nothing.
    """
