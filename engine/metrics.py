"""Metrics: the plugin protocol, building the ``metrics`` a run asks for, and measuring a network on
examples (its loss, accuracy and metrics).

A metric accumulates over the batches of an epoch (Keras' stateful ``Metric``, torchmetrics'
``update``/``compute``): :meth:`Metric.reset`, then :meth:`Metric.update` once per batch with the
network's outputs (host arrays, ``(N, classes)``: logits, or probabilities after a final softmax)
and the integer labels, then :meth:`Metric.result`. The loss and top-1 accuracy are always
measured (by the loss kernel, on the network's device); ``metrics`` adds others. The built-in ones
(``top_k_accuracy``, ``precision``, ``recall``, ``f1``, ``confusion_matrix``) are in
:mod:`cnnrun.plugins.metrics`; a plugin adds its own with ``cnnrun_register_metrics``.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from .data import Examples, batches
from .errors import ConfigError, did_you_mean
from .options import Configurable, show

SECTION = "train.metrics"
ALWAYS = ("loss", "accuracy")  # measured on every run; listing them adds nothing


class Metric(Configurable):
    """Base class of metrics (``train.metrics`` in a network file, ``metrics=`` of ``fit``).

    Subclasses set ``type_name``, take their JSON keys as keyword arguments of ``__init__`` (calling
    ``super().__init__()`` last: it resets the state) and implement :meth:`reset`, :meth:`update`
    and :meth:`result`. ``name`` is the key in the metrics records (``val_<name>``).
    """

    def __init__(self):
        self.reset()

    @property
    def name(self) -> str:
        return self.type_name

    def reset(self) -> None:
        """Forget every batch seen."""
        raise NotImplementedError

    def update(self, outputs: np.ndarray, labels: np.ndarray) -> None:
        """Count one batch: ``outputs`` (N, classes) float64 and ``labels`` (N,) int64, on the host."""
        raise NotImplementedError

    def result(self):
        """The value over the batches since :meth:`reset`: a float (or a JSON value, e.g. a matrix)."""
        raise NotImplementedError


class MeanMetric(Metric):
    """A plain function ``f(outputs, labels) -> float`` as a metric: its mean over the batches,
    weighted by their sizes (Keras' ``MeanMetricWrapper``); named after the function."""

    type_name = "mean"

    def __init__(self, function: Callable):
        self.function = function
        super().__init__()

    @property
    def name(self) -> str:
        return getattr(self.function, "__name__", type(self.function).__name__)

    def reset(self):
        self.total, self.count = 0.0, 0

    def update(self, outputs, labels):
        self.total += float(self.function(outputs, labels)) * len(labels)
        self.count += len(labels)

    def result(self):
        return self.total / self.count if self.count else None


def make_metrics(specs, registry) -> list[Metric]:
    """The metrics ``specs`` names: each a registered name (``"f1"``), an object ``{"type":
    "top_k_accuracy", "k": 3}``, a :class:`Metric` or a function ``f(outputs, labels) -> float``.
    ``"loss"`` and ``"accuracy"`` are always measured and are left out; two metrics of one name are
    an error."""
    if specs is None:
        return []
    if not isinstance(specs, (list, tuple)):
        raise ConfigError(f"metrics must be a list; got {show(specs)[:60]}", section=SECTION)
    metrics, names = [], set(ALWAYS)
    for index, spec in enumerate(specs):
        if spec in ALWAYS:
            continue
        metric = _make_metric(spec, index, registry)
        if metric.name in names:
            raise ConfigError(f"metrics[{index}]: a metric named '{metric.name}' is listed already (or is "
                              f"always measured: {', '.join(ALWAYS)})", section=SECTION)
        names.add(metric.name)
        metrics.append(metric)
    return metrics


def _make_metric(spec, index: int, registry) -> Metric:
    if isinstance(spec, Metric):
        return spec
    if callable(spec) and not isinstance(spec, type):
        return MeanMetric(spec)
    if isinstance(spec, str):
        spec = {"type": spec}
    if not isinstance(spec, dict) or "type" not in spec:
        raise ConfigError(f"metrics[{index}] must be a metric name, an object with a \"type\", a Metric or a "
                          f"function; got {show(spec)[:60]}", section=SECTION)
    if spec["type"] not in registry:
        hint = did_you_mean(spec["type"], registry.classes)
        raise ConfigError(f"metrics[{index}]: unknown metric {show(spec['type'])}{hint}; "
                          f"known: {', '.join([*ALWAYS, *registry.classes])}", section=SECTION)
    try:
        cls = registry.get(spec["type"])
        options = {k: v for k, v in spec.items() if k != "type"}
        cls.check_keys(options)
        return cls(**options)
    except ConfigError as err:
        err.section = SECTION
        raise


def measure(net, batch_loss, examples: Examples, batch_size: int, metrics: list[Metric] = ()) -> dict:
    """``{"loss", "accuracy", <metric name>: value, ...}`` of ``net`` in evaluation mode over
    ``examples``, on the network's device (outputs come to the host only when there are metrics), by
    its inference plan (:meth:`~cnnrun.engine.network.Network.inference`)."""
    net.inference()
    for metric in metrics:
        metric.reset()
    total = correct = 0.0
    for x, y in batches(examples, batch_size):
        output = net.forward(x, training=False)
        loss, batch_correct, _, _ = batch_loss(output, y, gradient=False)
        total += loss * len(y)
        correct += batch_correct
        update(metrics, net, output, y)
    n = len(examples)
    return {"loss": total / n, "accuracy": correct / n, **{m.name: m.result() for m in metrics}}


def update(metrics: list[Metric], net, output, labels) -> None:
    """Count one batch of ``net``'s ``output`` (on its device) in each metric."""
    if metrics:
        host = np.asarray(net.backend.to_host(output), dtype=np.float64)
        labels = np.asarray(labels)
        for metric in metrics:
            metric.update(host, labels)
