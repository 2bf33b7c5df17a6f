"""Losses for training: the :class:`Loss` protocol, and the built-in losses' functions and CPU kernels.

Each function returns ``(loss, grad)``, the loss a Python float averaged over the batch (as PyTorch's
``reduction="mean"``) and ``grad`` its gradient with respect to the network output (in the output's
dtype). A network that ends in a softmax uses :func:`cross_entropy_from_probabilities` (the
softmax's ``fused_loss``), whose gradient is taken with respect to the softmax's *input*
(back-propagation then starts below the softmax).

:data:`KERNELS` are the CPU loss kernels the trainer calls through the device (the CUDA ones are
in :mod:`cnnrun.engine.losses_cuda`): ``kernel(output, labels, gradient, *options)`` ->
``(mean loss, correct rows, gradient or None, predicted labels)``. The built-in :class:`Loss`
classes that name them are registered by :mod:`cnnrun.plugins.losses`.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from .errors import ShapeError
from .options import Configurable


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


class Loss(Configurable):
    """Base class of losses (``train.loss``: a name, or ``{"type": name, options...}``).

    Subclasses set ``type_name``, take their JSON options as keyword arguments of ``__init__`` and
    implement :meth:`__call__` on host (NumPy) arrays. ``kernel`` names the device loss kernel that
    computes the same loss from class labels, ``kernel(output, labels, gradient, *self.options())``
    -> ``(loss, correct rows, gradient or None, predicted labels)``; a device without it, or targets
    that are not class labels, run :meth:`__call__` on host copies instead. A last layer whose
    ``fused_loss`` names this loss's ``type_name`` (softmax: cross_entropy) gets that kernel instead.
    """

    kernel: ClassVar[str | None] = None

    def __call__(self, output: np.ndarray, target) -> tuple[float, np.ndarray]:
        """``(mean loss, d loss / d output)`` for ``target``: class labels (N,) or an array like ``output``."""
        raise NotImplementedError

    def options(self) -> tuple:
        """The kernel's arguments after ``gradient``: the loss's options, in the order it takes them."""
        return ()

    def check(self, output_shape) -> None:
        """Raise a :class:`~cnnrun.engine.errors.ConfigError` if the loss cannot score an output of
        ``output_shape`` (no batch)."""


def _class_weights(weight, logits: np.ndarray) -> np.ndarray:
    """One weight per class (ones without ``weight``), in float64."""
    if weight is None:
        return np.ones(logits.shape[1])
    weight = np.asarray(weight, np.float64)
    if weight.shape != logits.shape[1:]:
        raise ShapeError(f"weight must hold one number per class ({logits.shape[1]}); got {weight.size}")
    return weight


def _smoothed(log_probs: np.ndarray, probs: np.ndarray, labels, label_smoothing: float, weight):
    """Loss and gradient (for the logits) of cross-entropy against smoothed, weighted targets:
    a[n, c] = (1 - e) w[y_n] [c = y_n] + (e / C) w[c], W = sum_n w[y_n];
    L = sum_{n,c} a[n, c] (-log p[n, c]) / W, dL/dz[n, c] = (p[n, c] sum_c' a[n, c'] - a[n, c]) / W."""
    rows, classes = np.arange(len(labels)), probs.shape[1]
    w = _class_weights(weight, probs)
    picked = w[labels]
    total = picked.sum()  # a NumPy float: W = 0 gives NaN, as PyTorch, not an exception
    loss = (1 - label_smoothing) * float(np.sum(picked * -log_probs[rows, labels], dtype=np.float64))
    if label_smoothing:
        loss += label_smoothing / classes * float(np.sum(-log_probs * w, dtype=np.float64))
    grad = probs
    if weight is not None or label_smoothing:
        row_sum = (1 - label_smoothing) * picked + label_smoothing / classes * w.sum()
        grad *= row_sum[:, None].astype(probs.dtype)
        grad[rows, labels] -= ((1 - label_smoothing) * picked).astype(probs.dtype)
        grad -= (label_smoothing / classes * w).astype(probs.dtype)
    else:
        grad[rows, labels] -= 1
    grad /= total
    return float(loss / total), grad


def cross_entropy(logits: np.ndarray, labels: np.ndarray, label_smoothing: float = 0.0,
                  weight=None) -> tuple[float, np.ndarray]:
    """L = mean_n(logsumexp(z_n) - z_n[y_n]); dL/dz = (softmax(z) - onehot(y)) / N.

    Logits (N, C), integer labels (N,); stable for huge logits. ``label_smoothing`` e and class
    ``weight`` w as PyTorch's (see :func:`_smoothed`: the mean is over sum_n w[y_n]).
    PyTorch: ``nn.CrossEntropyLoss(weight, label_smoothing=e)``.
    """
    labels = _check_labels(logits, labels)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_sum = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    log_probs = shifted - log_sum
    return _smoothed(log_probs, np.exp(log_probs), labels, label_smoothing, weight)


def cross_entropy_from_probabilities(probs: np.ndarray, labels: np.ndarray, label_smoothing: float = 0.0,
                                     weight=None) -> tuple[float, np.ndarray]:
    """L = -mean_n(log p_n[y_n]) for probabilities p = softmax(z) (a network ending in softmax).

    The gradient is dL/dz = (p - onehot(y)) / N, with respect to the softmax INPUT z (the chain
    rule through the softmax, in closed form; with ``label_smoothing`` and ``weight`` as
    :func:`cross_entropy`). p is clipped at the dtype's smallest normal number so the loss stays
    finite. PyTorch: ``nn.NLLLoss()(log(p), y)``.
    """
    labels = _check_labels(probs, labels)
    log_probs = np.log(np.maximum(probs, np.finfo(probs.dtype).tiny))
    return _smoothed(log_probs, probs.copy(), labels, label_smoothing, weight)


def dense_target(output: np.ndarray, target, name: str) -> np.ndarray:
    """``target`` shaped like ``output``, in its dtype; integer class labels (N,) of an (N, C)
    output become one-hot rows."""
    target = np.asarray(target)
    if np.issubdtype(target.dtype, np.integer) and target.ndim == 1:
        labels = _check_labels(output, target)
        target = np.zeros_like(output)
        target[np.arange(len(labels)), labels] = 1
    elif target.shape != output.shape:
        raise ShapeError(f"{name} target must have the output's shape {output.shape} or be integer "
                         f"labels; got shape {target.shape}")
    return target.astype(output.dtype, copy=False)


def mse(output: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray]:
    """L = mean((y - t)^2) over all elements; dL/dy = 2 (y - t) / y.size. PyTorch: ``nn.MSELoss()``.

    ``target`` is shaped like ``output``, or integer class labels (N,) taken as one-hot rows of an
    (N, C) output.
    """
    diff = output - dense_target(output, target, "mse")
    loss = float(np.mean(np.square(diff), dtype=np.float64))
    diff *= 2 / diff.size
    return loss, diff


def l1(output: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray]:
    """L = mean|y - t|; dL/dy = sign(y - t) / y.size (0 where y = t). PyTorch: ``nn.L1Loss()``;
    ``target`` as :func:`mse`'s."""
    diff = output - dense_target(output, target, "l1")
    loss = float(np.mean(np.abs(diff), dtype=np.float64))
    return loss, (np.sign(diff) / diff.size).astype(output.dtype, copy=False)


def smooth_l1(output: np.ndarray, target: np.ndarray, beta: float = 1.0) -> tuple[float, np.ndarray]:
    """d = y - t; L = mean(0.5 d^2 / beta if |d| < beta else |d| - 0.5 beta); dL/dy = (d / beta if
    |d| < beta else sign(d)) / y.size (beta = 0: :func:`l1`). PyTorch: ``nn.SmoothL1Loss(beta=beta)``;
    ``target`` as :func:`mse`'s."""
    diff = output - dense_target(output, target, "smooth_l1")
    magnitude = np.abs(diff)
    inside = magnitude < beta  # never with beta = 0
    scale = 1 / beta if beta > 0 else 0.0
    loss = float(np.mean(np.where(inside, 0.5 * np.square(diff) * scale, magnitude - 0.5 * beta), dtype=np.float64))
    grad = np.where(inside, diff * scale, np.sign(diff)) / diff.size
    return loss, grad.astype(output.dtype, copy=False)


def binary_cross_entropy(logits: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray]:
    """L = mean(max(x, 0) - x t + log(1 + exp(-|x|))) = mean(-t log s(x) - (1 - t) log(1 - s(x))),
    s the sigmoid, stable for huge logits; dL/dx = (s(x) - t) / x.size. Targets in [0, 1] shaped like
    the logits, or class labels (one-hot rows). PyTorch: ``nn.BCEWithLogitsLoss()``."""
    target = dense_target(logits, target, "binary_cross_entropy")
    e = np.exp(-np.abs(logits))
    loss = float(np.mean(np.maximum(logits, 0) - logits * target + np.log1p(e), dtype=np.float64))
    sigmoid = np.where(logits >= 0, 1, e) / (1 + e)
    return loss, ((sigmoid - target) / logits.size).astype(logits.dtype, copy=False)


LOSSES = {"cross_entropy": cross_entropy, "mse": mse, "l1": l1, "smooth_l1": smooth_l1,
          "binary_cross_entropy": binary_cross_entropy}


def _batch_loss(function):
    """The loss kernel of ``function``: loss, gradient (when asked for), top-1 count and predictions."""
    def kernel(output, labels, gradient=True, *options):
        with np.errstate(over="ignore", invalid="ignore"):  # a non-finite loss is the caller's to report
            loss, grad = function(output, labels, *options)
        predicted = np.argmax(output, axis=1)
        return loss, int(np.count_nonzero(predicted == labels)), grad if gradient else None, predicted

    kernel.__doc__ = f"{function.__name__} as a loss kernel."
    return kernel


KERNELS = {name: _batch_loss(function) for name, function in
           [*LOSSES.items(), ("cross_entropy_from_probabilities", cross_entropy_from_probabilities)]}
