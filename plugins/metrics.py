"""The built-in metrics: top_k_accuracy, and macro precision, recall and F1 and the confusion matrix
of the top-1 predictions (``sklearn.metrics``'s definitions; torchmetrics' ``average="macro"``).

Each counts the batches of an epoch (:class:`cnnrun.engine.metrics.Metric`); the loss and top-1
accuracy are always measured and need no metric.
"""

from __future__ import annotations

import numpy as np

from cnnrun.engine import hookimpl
from cnnrun.engine.eval_report import confusion_matrix, top_k_correct
from cnnrun.engine.metrics import Metric
from cnnrun.engine.options import int_option


class TopKAccuracy(Metric):
    """The share of examples whose true class is among the ``k`` highest outputs (default 5, capped
    at the number of classes); named ``top_<k>_accuracy``. PyTorch: ``(outputs.topk(k).indices ==
    labels[:, None]).any(1).float().mean()``."""

    type_name = "top_k_accuracy"

    def __init__(self, k=5):
        self.k = int_option(k, "k")
        super().__init__()

    @property
    def name(self) -> str:
        return f"top_{self.k}_accuracy"

    def reset(self):
        self.correct, self.count = 0, 0

    def update(self, outputs, labels):
        self.correct += int(np.count_nonzero(top_k_correct(outputs, labels, self.k)))
        self.count += len(labels)

    def result(self):
        return self.correct / self.count if self.count else None


class ConfusionMatrix(Metric):
    """Counts of (true class, predicted class) pairs: a list of ``classes`` rows (row = true class)."""

    type_name = "confusion_matrix"

    def reset(self):
        self.counts: np.ndarray | None = None

    def update(self, outputs, labels):
        batch = confusion_matrix(labels, np.argmax(outputs, axis=1), outputs.shape[1])
        self.counts = batch if self.counts is None else self.counts + batch

    def result(self):
        return None if self.counts is None else self.counts.tolist()

    def per_class(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(true positives, predicted, actual)`` per class, for the classes that occur among the
        labels or the predictions (sklearn's macro average runs over those)."""
        counts = self.counts
        predicted, actual = counts.sum(axis=0), counts.sum(axis=1)
        present = (predicted + actual) > 0
        return np.diag(counts)[present], predicted[present], actual[present]


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is 0 (sklearn's ``zero_division=0``)."""
    return np.divide(numerator, denominator, out=np.zeros(len(numerator)), where=denominator > 0)


class Precision(ConfusionMatrix):
    """Macro precision: mean over classes of tp / (tp + fp). ``sklearn.metrics.precision_score(y, p,
    average="macro", zero_division=0)``."""

    type_name = "precision"

    def result(self):
        if self.counts is None:
            return None
        tp, predicted, _ = self.per_class()
        return float(np.mean(_ratio(tp, predicted)))


class Recall(ConfusionMatrix):
    """Macro recall: mean over classes of tp / (tp + fn). ``sklearn.metrics.recall_score(y, p,
    average="macro", zero_division=0)``."""

    type_name = "recall"

    def result(self):
        if self.counts is None:
            return None
        tp, _, actual = self.per_class()
        return float(np.mean(_ratio(tp, actual)))


class F1(ConfusionMatrix):
    """Macro F1: mean over classes of 2 tp / (2 tp + fp + fn) (each class's harmonic mean of precision
    and recall). ``sklearn.metrics.f1_score(y, p, average="macro", zero_division=0)``."""

    type_name = "f1"

    def result(self):
        if self.counts is None:
            return None
        tp, predicted, actual = self.per_class()
        return float(np.mean(_ratio(2 * tp, predicted + actual)))


@hookimpl
def cnnrun_register_metrics(register):
    for metric in (TopKAccuracy, Precision, Recall, F1, ConfusionMatrix):
        register(metric)
