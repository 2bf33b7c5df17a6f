"""The loss of a network's output for a batch: a registered loss (through the device's loss kernels),
or a Python function."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .errors import CnnrunError, ConfigError
from .losses import Loss
from .options import configured, show

if TYPE_CHECKING:
    from .network import Network

SECTION = "train.loss"


def ends_in_softmax(net: Network) -> bool:
    """Whether the network's output is already probabilities (its last layer fuses cross-entropy)."""
    return "cross_entropy" in net.nodes[-1].layer.fused_loss


class FunctionLoss(Loss):
    """A Python function as a loss: ``loss(outputs, targets) -> (value, grad)`` on host (NumPy)
    arrays, ``value`` the mean loss (a float), ``grad`` its gradient with respect to ``outputs``
    (same shape); ``targets`` are what the data holds (class labels (N,) for the training data)."""

    def __init__(self, function):
        self.function = function
        self.type_name = getattr(function, "__name__", type(function).__name__)

    def __call__(self, output, target):
        return self.function(output, target)


def make_loss(spec, registry=None) -> Loss:
    """The loss ``spec`` names: a registered name, ``{"type": name, options...}`` (the JSON of
    ``train.loss``), a :class:`Loss`, or a Python function (:class:`FunctionLoss`). Errors are
    :class:`ConfigError` with section ``train.loss``."""
    if isinstance(spec, Loss):
        return spec
    if isinstance(spec, type) and issubclass(spec, Loss):
        return spec()
    if callable(spec) and not isinstance(spec, (str, dict)):
        return FunctionLoss(spec)
    if registry is None:
        from .plugins import default_registries
        registry = default_registries().losses
    config = {"type": spec} if isinstance(spec, str) else spec
    if not isinstance(config, dict) or "type" not in config:
        known = ", ".join(sorted(registry.classes))
        raise ConfigError(f"must be a loss name or an object with a \"type\" (one of: {known}); got {show(spec)[:60]}",
                          section=SECTION)
    return configured(registry, config, SECTION)


class BatchLoss:
    """The loss ``loss`` (anything :func:`make_loss` takes) of a network's output for a batch.

    Class labels go through the loss's device kernel where the device has it; a last layer that
    declares a ``fused_loss`` for the loss (softmax: cross-entropy) gets its kernel, whose gradient
    is for that layer's input: :meth:`backward` then starts below it. Other targets, losses without
    a kernel there and Python functions run on host copies of the output (the gradient goes back to
    the device). On CUDA (:mod:`cnnrun.engine.losses_cuda`) only the loss and the count of correct
    rows come back to the host (and the predicted labels, when asked for).
    """

    def __init__(self, net: Network, loss, registry=None):
        self.loss = make_loss(loss, registry)
        try:
            self.loss.check(net.output_shape)
        except ConfigError as err:
            err.section = f"{SECTION} ({self.loss.type_name})"
            raise
        last, kernels = net.nodes[-1], net.backend.kernels
        fused = last.layer.fused_loss.get(self.loss.type_name) if self.loss.kernel else None
        self._start = last.inputs[0] if fused is not None and len(last.inputs) == 1 else None
        name = fused if self._start is not None else self.loss.kernel
        if self._start is not None and name not in kernels:
            raise CnnrunError(f"no kernel '{name}' on device '{net.device}' for the loss after layer '{last.name}'")
        self._kernel = getattr(kernels, name) if name in kernels else None
        self._options = self.loss.options()
        self._backend = net.backend

    def __call__(self, output, targets, *, gradient: bool = True, predictions: bool = False):
        """``(mean loss, correct rows or None, gradient or None, predicted labels (host) or None)``;
        correct rows and predictions need class labels (N,) and an (N, classes) output.

        Overflow is not warned about: a non-finite loss is the caller's to report."""
        targets = np.asarray(targets)
        labels = targets.ndim == 1 and np.issubdtype(targets.dtype, np.integer)
        if self._kernel is not None and (labels or self._start is not None):
            loss, correct, grad, predicted = self._kernel(output, targets, gradient, *self._options)
            return loss, correct, grad, self._backend.to_host(predicted) if predictions else None
        host = self._backend.to_host(output)
        with np.errstate(over="ignore", invalid="ignore"):
            loss, grad = self.loss(host, targets)
        if gradient and np.shape(grad) != host.shape:
            raise CnnrunError(f"loss '{self.loss.type_name}' returned a gradient of shape {np.shape(grad)} for an "
                              f"output of shape {host.shape}; a loss returns (value, d value / d output)")
        predicted = np.argmax(host, axis=1) if labels and host.ndim == 2 else None
        correct = int(np.count_nonzero(predicted == targets)) if predicted is not None else None
        grad = self._backend.asarray(grad, host.dtype) if gradient else None
        return float(loss), correct, grad, predicted if predictions else None

    def backward(self, net: Network, grad, input_gradient: bool = True):
        """Back-propagate the loss gradient ``grad`` through ``net`` (from below a fused last layer);
        returns the input gradient (None without ``input_gradient``: see :meth:`Network.backward`)."""
        return net.backward(grad, start=self._start, input_gradient=input_gradient)
