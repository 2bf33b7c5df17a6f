"""The training losses on the GPU: loss, gradient and top-1 count of a batch; only the loss sum and
the count of correct rows come back to the host.

The formulas are those of :mod:`cnnrun.engine.losses` (class labels only, one per row of an
(N, classes) output; cross-entropy with its label smoothing and class weights). One thread per row
computes its loss term (in float64), its gradient row and its arg-max; one block then sums the terms
and counts the correct rows.
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda, float64

from .cuda import MAX_BLOCK_SIZE, block_size, block_sum, grid
from .losses import _check_labels, _class_weights

KINDS = ("cross_entropy", "cross_entropy_from_probabilities", "mse")


@cuda.jit(device=True)
def _arg_max(output, n):
    """The first column of row ``n`` holding its largest value (as ``np.argmax``)."""
    best = 0
    for c in range(1, output.shape[1]):
        if output[n, c] > output[n, best]:
            best = c
    return best


@cuda.jit(device=True)
def _target(weight, smoothing, y, c, classes):
    """a[c] = (1 - e) w[y] [c = y] + (e / C) w[c]: the smoothed, weighted target of class c."""
    return smoothing / classes * weight[c] + ((1 - smoothing) * weight[y] if c == y else 0.0)


@cuda.jit
def _cross_entropy(logits, labels, weight, smoothing, weight_sum, inv_total, want_grad, grad, row_loss, predicted):
    """row_loss = sum_c a[c] (logsumexp(z) - z[c]); grad = (softmax(z) sum_c a[c] - a) / W."""
    batch, classes = logits.shape
    for n in range(cuda.grid(1), batch, cuda.gridsize(1)):
        best = _arg_max(logits, n)
        top = logits[n, best]
        total = 0.0
        for c in range(classes):
            total += math.exp(logits[n, c] - top)
        log_sum = math.log(total)
        y = labels[n]
        loss = 0.0
        for c in range(classes):
            loss += _target(weight, smoothing, y, c, classes) * (log_sum - (logits[n, c] - top))
        row_loss[n] = loss
        predicted[n] = best
        if want_grad:
            row_sum = (1 - smoothing) * weight[y] + smoothing / classes * weight_sum
            for c in range(classes):
                p = math.exp(logits[n, c] - top - log_sum)
                grad[n, c] = (p * row_sum - _target(weight, smoothing, y, c, classes)) * inv_total


@cuda.jit
def _cross_entropy_from_probabilities(probs, labels, tiny, weight, smoothing, weight_sum, inv_total, want_grad,
                                      grad, row_loss, predicted):
    """row_loss = -sum_c a[c] log(max(p[c], tiny)); grad (for the softmax input) = (p sum_c a[c] - a) / W."""
    batch, classes = probs.shape
    for n in range(cuda.grid(1), batch, cuda.gridsize(1)):
        y = labels[n]
        loss = 0.0
        for c in range(classes):
            loss -= _target(weight, smoothing, y, c, classes) * math.log(max(probs[n, c], tiny))
        row_loss[n] = loss
        predicted[n] = _arg_max(probs, n)
        if want_grad:
            row_sum = (1 - smoothing) * weight[y] + smoothing / classes * weight_sum
            for c in range(classes):
                grad[n, c] = (probs[n, c] * row_sum - _target(weight, smoothing, y, c, classes)) * inv_total


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

    def __call__(self, output, labels, gradient: bool = True, label_smoothing: float = 0.0, weight=None):
        """``(mean loss, correct rows, gradient or None, predicted labels on the device)`` for the
        device output (N, classes) and the host labels (N,); cross-entropy takes
        ``label_smoothing`` and class ``weight`` as :func:`cnnrun.engine.losses.cross_entropy`. The
        gradient array is reused by the next call with the same shape."""
        labels = _check_labels(output, labels)
        batch, classes = output.shape
        device_labels = self._buffer("labels", (batch,), np.int64)
        device_labels.copy_to_device(np.ascontiguousarray(labels, dtype=np.int64))
        grad = self._buffer("grad", output.shape, output.dtype) if gradient else output  # unused without
        row_loss = self._buffer("row_loss", (batch,), np.float64)
        predicted = self._buffer("predicted", (batch,), np.int64)
        launch = grid(batch)
        if self.kind == "mse":
            _mse[launch](output, device_labels, gradient, grad, row_loss, predicted)
            count = output.size
        else:
            weights = _class_weights(weight, output)
            count = float(weights[labels].sum())  # W: the mean is over the labels' weights
            device_weights = self._buffer("weight", (classes,), np.float64)
            device_weights.copy_to_device(weights)
            options = (device_weights, float(label_smoothing), float(weights.sum()), 1 / count if count else math.inf)
            if self.kind == "cross_entropy":
                _cross_entropy[launch](output, device_labels, *options, gradient, grad, row_loss, predicted)
            else:
                tiny = np.finfo(output.dtype).tiny
                _cross_entropy_from_probabilities[launch](output, device_labels, tiny, *options, gradient, grad,
                                                          row_loss, predicted)
        totals = self._buffer("totals", (2,), np.float64)
        _totals[1, block_size()](row_loss, predicted, device_labels, totals)
        loss_sum, correct = totals.copy_to_host()
        return loss_sum / count, int(correct), (grad if gradient else None), predicted


KERNELS = {kind: DeviceLoss(kind) for kind in KINDS}
