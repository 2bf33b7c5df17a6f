"""The built-in losses: cross_entropy, mse, l1, smooth_l1, binary_cross_entropy (PyTorch's
``nn.CrossEntropyLoss``, ``MSELoss``, ``L1Loss``, ``SmoothL1Loss``, ``BCEWithLogitsLoss``, mean over
the batch).

Their math is in :mod:`cnnrun.engine.losses` (the CPU kernels) and :mod:`cnnrun.engine.losses_cuda`
(cross_entropy and mse on the GPU), registered as the engine's own kernels by
:mod:`cnnrun.plugins.devices`; here each is a :class:`~cnnrun.engine.losses.Loss` with its options.
"""

from __future__ import annotations

import math
from numbers import Real

from cnnrun.engine import ConfigError, hookimpl
from cnnrun.engine import losses
from cnnrun.engine.losses import Loss
from cnnrun.engine.options import float_option, show


class CrossEntropy(Loss):
    """Softmax cross-entropy of logits against class labels, with ``label_smoothing`` in [0, 1] and
    class ``weight`` (one number >= 0 per class; the mean is over the labels' weights).
    PyTorch: ``nn.CrossEntropyLoss(weight, label_smoothing=...)``."""

    type_name = "cross_entropy"
    kernel = "cross_entropy"

    def __init__(self, label_smoothing=0.0, weight=None):
        self.label_smoothing = float_option(label_smoothing, "label_smoothing", low=0, high=1)
        if weight is not None and not (isinstance(weight, (list, tuple)) and weight and all(
                isinstance(w, Real) and not isinstance(w, bool) and math.isfinite(w) and w >= 0 for w in weight)):
            raise ConfigError(f"weight must be a list of numbers >= 0, one per class; got weight={show(weight)[:60]}",
                              key="weight")
        self.weight = None if weight is None else [float(w) for w in weight]

    def __call__(self, output, target):
        return losses.cross_entropy(output, target, self.label_smoothing, self.weight)

    def options(self):
        return self.label_smoothing, self.weight

    def check(self, output_shape):
        if self.weight is not None and (len(output_shape) != 1 or len(self.weight) != output_shape[0]):
            raise ConfigError(f"weight has {len(self.weight)} numbers; the network has {output_shape} outputs, "
                              f"one per class", key="weight")


class MSE(Loss):
    """Mean squared error; targets shaped like the output, or class labels as one-hot rows.
    PyTorch: ``nn.MSELoss()``."""

    type_name = "mse"
    kernel = "mse"

    def __call__(self, output, target):
        return losses.mse(output, target)


class L1(Loss):
    """Mean absolute error; targets as mse's. PyTorch: ``nn.L1Loss()``."""

    type_name = "l1"
    kernel = "l1"

    def __call__(self, output, target):
        return losses.l1(output, target)


class SmoothL1(Loss):
    """Huber-like: quadratic below ``beta`` (>= 0), linear above; targets as mse's.
    PyTorch: ``nn.SmoothL1Loss(beta=...)``."""

    type_name = "smooth_l1"
    kernel = "smooth_l1"

    def __init__(self, beta=1.0):
        self.beta = float_option(beta, "beta", low=0)

    def __call__(self, output, target):
        return losses.smooth_l1(output, target, self.beta)

    def options(self):
        return (self.beta,)


class BinaryCrossEntropy(Loss):
    """Sigmoid binary cross-entropy of logits, per output; targets in [0, 1] shaped like the output,
    or class labels as one-hot rows. PyTorch: ``nn.BCEWithLogitsLoss()``."""

    type_name = "binary_cross_entropy"
    kernel = "binary_cross_entropy"

    def __call__(self, output, target):
        return losses.binary_cross_entropy(output, target)


@hookimpl
def cnnrun_register_losses(register):
    for loss in (CrossEntropy, MSE, L1, SmoothL1, BinaryCrossEntropy):
        register(loss)
