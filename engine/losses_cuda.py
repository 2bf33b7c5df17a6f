"""The training losses on the GPU: loss, gradient and top-1 count of a batch; only the loss sum and
the count of correct rows come back to the host.

The formulas are those of :mod:`cnnrun.engine.losses` (class labels only, one per row of an
(N, classes) output). One thread per row computes its loss term (in float64), its gradient row and
its arg-max; one block then sums the terms and counts the correct rows.
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda, float64

from .cuda import MAX_BLOCK_SIZE, block_size, block_sum, grid
from .losses import _check_labels

KINDS = ("cross_entropy", "cross_entropy_from_probabilities", "mse")


@cuda.jit(device=True)
def _arg_max(output, n):
    """The first column of row ``n`` holding its largest value (as ``np.argmax``)."""
    best = 0
    for c in range(1, output.shape[1]):
        if output[n, c] > output[n, best]:
            best = c
    return best


@cuda.jit
def _cross_entropy(logits, labels, want_grad, grad, row_loss, predicted):
    """row_loss = logsumexp(z) - z[y]; grad = (softmax(z) - onehot(y)) / N."""
    batch, classes = logits.shape
    for n in range(cuda.grid(1), batch, cuda.gridsize(1)):
        best = _arg_max(logits, n)
        top = logits[n, best]
        total = 0.0
        for c in range(classes):
            total += math.exp(logits[n, c] - top)
        log_sum = math.log(total)
        y = labels[n]
        row_loss[n] = log_sum - (logits[n, y] - top)
        predicted[n] = best
        if want_grad:
            for c in range(classes):
                p = math.exp(logits[n, c] - top - log_sum)
                grad[n, c] = ((p - 1) if c == y else p) / batch


@cuda.jit
def _cross_entropy_from_probabilities(probs, labels, tiny, want_grad, grad, row_loss, predicted):
    """row_loss = -log(max(p[y], tiny)); grad (for the softmax input) = (p - onehot(y)) / N."""
    batch, classes = probs.shape
    for n in range(cuda.grid(1), batch, cuda.gridsize(1)):
        y = labels[n]
        row_loss[n] = -math.log(max(probs[n, y], tiny))
        predicted[n] = _arg_max(probs, n)
        if want_grad:
            for c in range(classes):
                p = probs[n, c]
                grad[n, c] = ((p - 1) if c == y else p) / batch


@cuda.jit
def _mse(output, labels, want_grad, grad, row_loss, predicted):
    """row_loss = sum_c (y - onehot)^2; grad = 2 (y - onehot) / (N * classes)."""
    batch, classes = output.shape
    for n in range(cuda.grid(1), batch, cuda.gridsize(1)):
        total = 0.0
        for c in range(classes):
            d = output[n, c] - (1 if c == labels[n] else 0)
            total += d * d
            if want_grad:
                grad[n, c] = 2 * d / (batch * classes)
        row_loss[n] = total
        predicted[n] = _arg_max(output, n)


@cuda.jit
def _totals(row_loss, predicted, labels, totals):
    """totals = [sum of row_loss, number of rows with predicted == label] (one block)."""
    partial = cuda.shared.array(MAX_BLOCK_SIZE, float64)
    loss = 0.0
    correct = 0.0
    for n in range(cuda.threadIdx.x, row_loss.size, cuda.blockDim.x):
        loss += row_loss[n]
        correct += 1 if predicted[n] == labels[n] else 0
    loss = block_sum(partial, loss)
    correct = block_sum(partial, correct)
    if cuda.threadIdx.x == 0:
        totals[0] = loss
        totals[1] = correct


class DeviceLoss:
    """One loss on the GPU, with device buffers kept between batches (one set per batch shape).

    ``kind``: "cross_entropy" (from logits), "cross_entropy_from_probabilities" (a network ending
    in softmax; the gradient is for the softmax input) or "mse" (one-hot targets from the labels).
    """

    def __init__(self, kind: str):
        if kind not in KINDS:
            raise ValueError(f"unknown device loss {kind!r}; expected one of {KINDS}")
        self.kind = kind
        self._buffers: dict[tuple, object] = {}

    def _buffer(self, name: str, shape, dtype):
        key = (name, tuple(shape), np.dtype(dtype).str)
        array = self._buffers.get(key)
        if array is None:
            array = self._buffers[key] = cuda.device_array(shape, np.dtype(dtype))
        return array

    def __call__(self, output, labels, gradient: bool = True):
        """``(mean loss, correct rows, gradient or None, predicted labels on the device)`` for the
        device output (N, classes) and the host labels (N,). The gradient array is reused by the
        next call with the same shape."""
        labels = _check_labels(output, labels)
        batch = output.shape[0]
        device_labels = self._buffer("labels", (batch,), np.int64)
        device_labels.copy_to_device(np.ascontiguousarray(labels, dtype=np.int64))
        grad = self._buffer("grad", output.shape, output.dtype) if gradient else output  # unused without
        row_loss = self._buffer("row_loss", (batch,), np.float64)
        predicted = self._buffer("predicted", (batch,), np.int64)
        launch = grid(batch)
        if self.kind == "cross_entropy":
            _cross_entropy[launch](output, device_labels, gradient, grad, row_loss, predicted)
        elif self.kind == "cross_entropy_from_probabilities":
            tiny = np.finfo(output.dtype).tiny
            _cross_entropy_from_probabilities[launch](output, device_labels, tiny, gradient, grad, row_loss,
                                                      predicted)
        else:
            _mse[launch](output, device_labels, gradient, grad, row_loss, predicted)
        totals = self._buffer("totals", (2,), np.float64)
        _totals[1, block_size()](row_loss, predicted, device_labels, totals)
        loss_sum, correct = totals.copy_to_host()
        count = output.size if self.kind == "mse" else batch
        return loss_sum / count, int(correct), (grad if gradient else None), predicted


KERNELS = {kind: DeviceLoss(kind) for kind in KINDS}
