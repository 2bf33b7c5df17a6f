"""The loss of a network's output for a batch, through the device's loss kernels."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .network import Network


def ends_in_softmax(net: Network) -> bool:
    """Whether the network's output is already probabilities (its last layer fuses cross-entropy)."""
    return "cross_entropy" in net.nodes[-1].layer.fused_loss


class BatchLoss:
    """The loss ``loss`` ("cross_entropy" or "mse") of a network's output for a batch of class
    labels, computed by the device's loss kernel.

    A last layer that declares a ``fused_loss`` for ``loss`` (softmax: cross-entropy) gets its loss
    kernel, whose gradient is for that layer's input: :meth:`backward` then starts below it. On CUDA
    (:mod:`cnnrun.engine.losses_cuda`) only the loss and the count of correct rows come back to the
    host (and the predicted labels, when asked for).
    """

    def __init__(self, net: Network, loss: str):
        last = net.nodes[-1]
        kernel = last.layer.fused_loss.get(loss)
        self._start = last.inputs[0] if kernel is not None and len(last.inputs) == 1 else None
        self._kernel = getattr(net.backend.kernels, kernel if self._start is not None else loss)
        self._to_host = net.backend.to_host

    def __call__(self, output, labels: np.ndarray, *, gradient: bool = True, predictions: bool = False):
        """``(mean loss, correct rows, gradient or None, predicted labels (host) or None)``.

        Overflow is not warned about: a non-finite loss is the caller's to report."""
        loss, correct, grad, predicted = self._kernel(output, labels, gradient)
        return loss, correct, grad, self._to_host(predicted) if predictions else None

    def backward(self, net: Network, grad, input_grad: bool = True):
        """Back-propagate the loss gradient ``grad`` through ``net`` (from below a fused last layer);
        returns the gradient of the input (None, not computed, unless ``input_grad``)."""
        return net.backward(grad, start=self._start, input_grad=input_grad)
