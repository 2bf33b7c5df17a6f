"""What ``cnnrun eval`` reports: loss, top-1 and top-k accuracy, per-class accuracy and the confusion
matrix, with class names; and which data ``eval --data PATH`` means."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .data import Examples, batches
from .errors import CnnrunError
from .image_files import is_image_name


def class_labels(names: list[str] | None, classes: int) -> list[str]:
    """The name of each of ``classes`` classes: ``names[i]``, or ``str(i)`` where there is none."""
    names = list(names or [])
    return [names[i] if i < len(names) else str(i) for i in range(classes)]


def data_for_path(path, input_shape: tuple) -> tuple[dict, bool]:
    """``(train.data object, evaluate the validation split only)`` for ``eval --data PATH``: a CIFAR-10
    or CIFAR-100 binary folder (its test file), another folder (``image_folder``, resized to the
    network's input and converted to its channels), or an ``.npz`` file."""
    path = Path(path)
    if path.is_dir():
        if (path / "data_batch_1.bin").is_file() or (path / "test_batch.bin").is_file():
            return {"type": "cifar10", "path": str(path), "validation": "test"}, True
        if (path / "test.bin").is_file():
            return {"type": "cifar100", "path": str(path), "validation": "test"}, True
        return {"type": "image_folder", "path": str(path), "size": list(input_shape[1:]),
                "channels": input_shape[0]}, False
    if is_image_name(path):
        raise CnnrunError(f"--data {path} is one image: eval takes a folder with one sub-folder of images per "
                          f"class, a CIFAR binary folder, an .npz file with x and y, or a train.data JSON object "
                          f"(cnnrun predict takes image files)")
    return {"type": "npz", "path": str(path)}, False


def relabeled(examples: Examples, data_names: list[str] | None, names: list[str] | None,
              source: str) -> Examples:
    """``examples`` with labels of the network's classes ``names`` where the data names its own
    classes differently (an image folder with some of the classes): matched by name."""
    if not data_names or not names or data_names == names[:len(data_names)]:
        return examples
    unknown = [n for n in data_names if n not in names]
    if unknown:
        raise CnnrunError(f"{source}: class '{unknown[0]}' is not a class of the network (its classes: "
                          f"{', '.join(names[:10])}{', ...' if len(names) > 10 else ''})")
    mapping = np.array([names.index(n) for n in data_names], dtype=np.int64)
    return Examples(examples.x, mapping[examples.y])


def network_scores(net, batch_loss, examples: Examples, batch_size: int) -> tuple[float, np.ndarray]:
    """``(mean loss, outputs (N, classes) on the host)`` of ``net`` in evaluation mode."""
    total, outputs = 0.0, []
    for x, y in batches(examples, batch_size):
        output = net.forward(x, training=False)
        total += batch_loss(output, y, gradient=False)[0] * len(y)
        outputs.append(np.asarray(net.backend.to_host(output), dtype=np.float64))
    return total / len(examples), np.concatenate(outputs)


def top_k_correct(outputs: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Whether each row's true class is among its ``k`` highest outputs (fewer than ``k`` outputs
    higher than the true one's; ``torch.topk(outputs, k).indices == labels``, ties aside)."""
    true = outputs[np.arange(len(labels)), labels]
    return (outputs > true[:, None]).sum(axis=1) < k


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray:
    """``(classes, classes)`` int64 counts: row = true class, column = predicted class
    (``sklearn.metrics.confusion_matrix``)."""
    confusion = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    return confusion


def eval_report(outputs: np.ndarray, labels: np.ndarray, loss: float, names: list[str], top_k: int) -> dict:
    """The report of outputs for ``labels``: ``examples``, ``loss``, ``accuracy``, ``top_k`` (capped
    at the number of classes), ``top_k_accuracy``, ``class_names``, ``per_class`` (label, class,
    examples, accuracy or None without examples) and ``confusion_matrix`` (rows: true class)."""
    classes = outputs.shape[1]
    predicted = np.argmax(outputs, axis=1)
    confusion = confusion_matrix(labels, predicted, classes)
    counts = confusion.sum(axis=1)
    k = min(top_k, classes)
    per_class = [{"label": c, "class": names[c], "examples": int(counts[c]),
                  "accuracy": float(confusion[c, c] / counts[c]) if counts[c] else None} for c in range(classes)]
    return {"examples": len(labels), "loss": loss, "accuracy": float(np.mean(predicted == labels)),
            "top_k": k, "top_k_accuracy": float(np.mean(top_k_correct(outputs, labels, k))),
            "class_names": names, "per_class": per_class, "confusion_matrix": confusion.tolist()}
