"""Losses for training: each returns ``(loss, grad)``, the loss a Python float averaged over the
batch and ``grad`` its gradient with respect to the network output (in the output's dtype).

:data:`LOSSES` maps the names a trainer accepts to the functions. A network that ends in a softmax
uses :func:`cross_entropy_from_probabilities` (the softmax's ``fused_loss``), whose gradient is taken
with respect to the softmax's *input* (back-propagation then starts below the softmax).

:data:`KERNELS` are the CPU loss kernels the trainer calls through the device (the CUDA ones are
in :mod:`cnnrun.engine.losses_cuda`): ``kernel(output, labels, gradient)`` ->
``(mean loss, correct rows, gradient or None, predicted labels)``.
"""

from __future__ import annotations

import numpy as np

from .errors import ShapeError


def _check_labels(output: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``labels`` as an int array of shape (N,), N >= 1, each in [0, C), for an output (N, C)."""
    labels = np.asarray(labels)
    if output.ndim != 2:
        raise ShapeError(f"class labels need an output of shape (N, classes); got shape {output.shape}")
    if labels.shape != output.shape[:1] or not np.issubdtype(labels.dtype, np.integer):
        raise ShapeError(f"labels must be {output.shape[0]} integers (one per example); "
                         f"got {labels.dtype} labels of shape {labels.shape}")
    if labels.size == 0:
        raise ShapeError("the batch is empty")
    if (labels.min() < 0 or labels.max() >= output.shape[1]):
        bad = labels[(labels < 0) | (labels >= output.shape[1])][0]
        raise ShapeError(f"label {bad} is out of range for {output.shape[1]} classes (0 .. "
                         f"{output.shape[1] - 1})")
    return labels


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """L = mean_n(logsumexp(z_n) - z_n[y_n]); dL/dz = (softmax(z) - onehot(y)) / N.

    Logits (N, C), integer labels (N,); stable for huge logits. PyTorch: ``nn.CrossEntropyLoss()``.
    """
    labels = _check_labels(logits, labels)
    rows = np.arange(len(labels))
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_sum = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    log_probs = shifted - log_sum
    loss = -float(np.mean(log_probs[rows, labels], dtype=np.float64))
    grad = np.exp(log_probs)
    grad[rows, labels] -= 1
    grad /= len(labels)
    return loss, grad


def cross_entropy_from_probabilities(probs: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """L = -mean_n(log p_n[y_n]) for probabilities p = softmax(z) (a network ending in softmax).

    The gradient is dL/dz = (p - onehot(y)) / N, with respect to the softmax INPUT z (the chain
    rule through the softmax, in closed form). p_y is clipped at the dtype's smallest normal
    number so the loss stays finite. PyTorch: ``nn.NLLLoss()(log(p), y)``.
    """
    labels = _check_labels(probs, labels)
    rows = np.arange(len(labels))
    picked = np.maximum(probs[rows, labels], np.finfo(probs.dtype).tiny)
    loss = -float(np.mean(np.log(picked), dtype=np.float64))
    grad = probs.copy()
    grad[rows, labels] -= 1
    grad /= len(labels)
    return loss, grad


def mse(output: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray]:
    """L = mean((y - t)^2) over all elements; dL/dy = 2 (y - t) / y.size. PyTorch: ``nn.MSELoss()``.

    ``target`` is shaped like ``output``, or integer class labels (N,) taken as one-hot rows of an
    (N, C) output.
    """
    target = np.asarray(target)
    if np.issubdtype(target.dtype, np.integer) and target.ndim == 1:
        labels = _check_labels(output, target)
        target = np.zeros_like(output)
        target[np.arange(len(labels)), labels] = 1
    elif target.shape != output.shape:
        raise ShapeError(f"mse target must have the output's shape {output.shape} or be integer "
                         f"labels; got shape {target.shape}")
    diff = output - target.astype(output.dtype, copy=False)
    loss = float(np.mean(np.square(diff), dtype=np.float64))
    diff *= 2 / diff.size
    return loss, diff


LOSSES = {"cross_entropy": cross_entropy, "mse": mse}


def _batch_loss(function):
    """The loss kernel of ``function``: loss, gradient (when asked for), top-1 count and predictions."""
    def kernel(output, labels, gradient=True):
        with np.errstate(over="ignore", invalid="ignore"):  # a non-finite loss is the caller's to report
            loss, grad = function(output, labels)
        predicted = np.argmax(output, axis=1)
        return loss, int(np.count_nonzero(predicted == labels)), grad if gradient else None, predicted

    kernel.__doc__ = f"{function.__name__} as a loss kernel."
    return kernel


KERNELS = {name: _batch_loss(function) for name, function in
           (("cross_entropy", cross_entropy), ("cross_entropy_from_probabilities", cross_entropy_from_probabilities),
            ("mse", mse))}
