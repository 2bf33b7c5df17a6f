"""Using a trained network: evaluation (loss, accuracy, confusion matrix) and prediction."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .checkpoint import load_checkpoint, restore_network
from .data import Examples, apply_normalization, batches, prepare_data, with_channel_axis
from .errors import CnnrunError, ConfigError
from .network import Network
from .plugins import Registries, default_registries
from .provenance import explains_missing_plugins

LATEST = "latest.npz"


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

    def backward(self, net: Network, grad):
        """Back-propagate the loss gradient ``grad`` through ``net`` (from below a fused last layer)."""
        return net.backward(grad, start=self._start)


def evaluate(net: Network, examples: Examples, loss: str, batch_size: int = 256):
    """``(loss, accuracy, predicted_labels)`` of ``net`` in evaluation mode over ``examples``, on
    the network's device (the predicted labels come back per batch)."""
    batch_loss = BatchLoss(net, loss)
    total, predictions = 0.0, []
    for x, y in batches(examples, batch_size):
        output = net.forward(x, training=False)
        value, _, _, predicted = batch_loss(output, y, gradient=False, predictions=True)
        total += value * len(y)
        predictions.append(predicted)
    predicted = np.concatenate(predictions)
    return total / len(examples), float(np.mean(predicted == examples.y)), predicted


def resolve_checkpoint(path) -> Path:
    """The checkpoint file ``path`` means: the file itself, or ``path/latest.npz`` for a run folder."""
    path = Path(path)
    candidate = path / LATEST if path.is_dir() else path
    if not candidate.is_file():
        raise CnnrunError(f"no checkpoint at {path}: "
                          + (f"no {LATEST} in that folder" if path.is_dir() else "no such file"))
    return candidate


@explains_missing_plugins("checkpoint")
def load_for_inference(network, checkpoint, registries: Registries | None = None, device: str = "cpu"):
    """``(net, normalization, network_config, base_dir)``: the network of a JSON file (or config dict)
    with a checkpoint's weights, on ``device``, and the input normalization it was trained with."""
    registries = registries or default_registries()
    if isinstance(network, dict):
        net, config, base_dir = Network.from_config(network, registry=registries.layers), network, Path(".")
    else:
        net = Network.from_json(network, registry=registries.layers)
        config, base_dir = json.loads(Path(network).read_text(encoding="utf-8")), Path(network).parent
    net.to(device)
    path = resolve_checkpoint(checkpoint)
    loaded = load_checkpoint(path)
    restore_network(net, loaded, str(path))
    return net, loaded.meta.get("normalization"), config, base_dir


def evaluate_checkpoint(network, checkpoint, *, data: dict | None = None, batch_size: int = 256,
                        registries: Registries | None = None, device: str = "cpu") -> dict:
    """Evaluate a checkpoint on ``device`` on ``data`` (a ``train.data`` object: all its examples)
    or, by default, on the validation split of the network's own training data. Returns the
    ``cnnrun eval`` report."""
    from .train import resolve_train_config

    registries = registries or default_registries()
    net, normalization, config, base_dir = load_for_inference(network, checkpoint, registries, device)
    train = resolve_train_config(config.get("train"))
    source = {k: v for k, v in (data or train["data"]).items() if k != "normalize"}
    split = 0.0 if data is not None else train["validation_split"]
    try:
        examples, validation, _ = prepare_data(source, input_shape=net.input_shape,
                                               num_classes=net.output_shape[0], validation_split=split,
                                               seed=train["seed"], registry=registries.data_sources,
                                               base_dir=base_dir if data is None else Path("."))
    except ConfigError as err:
        raise (err.in_file(str(network)) if data is None and not isinstance(network, dict) else err) from None
    if data is None and validation is not None:
        examples = validation
    elif validation is not None:
        examples = Examples(np.concatenate([examples.x, validation.x]), np.concatenate([examples.y, validation.y]))
    examples = Examples(apply_normalization(examples.x, normalization), examples.y)
    loss, accuracy, predicted = evaluate(net, examples, train["loss"], batch_size)
    classes = net.output_shape[0]
    confusion = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(confusion, (examples.y, predicted), 1)
    return {"examples": len(examples), "loss": loss, "accuracy": accuracy,
            "confusion_matrix": confusion.tolist()}


def predict_file(network, checkpoint, inputs, out, *, batch_size: int = 256,
                 registries: Registries | None = None, device: str = "cpu") -> int:
    """Write ``probabilities`` (N, classes) and ``labels`` (N,) for the array ``x`` of ``inputs`` (.npz)
    to ``out`` (.npz), running the network on ``device``; returns N."""
    net, normalization, _, _ = load_for_inference(network, checkpoint, registries, device)
    try:
        with np.load(inputs, allow_pickle=False) as data:
            x = data["x"]
    except KeyError:
        raise CnnrunError(f"{inputs}: no array named 'x'") from None
    except (OSError, ValueError) as exc:
        raise CnnrunError(f"{inputs}: cannot read it as .npz ({exc})") from None
    x = with_channel_axis(x, net.input_shape)
    if tuple(x.shape[1:]) != net.input_shape:
        raise CnnrunError(f"{inputs}: x has examples of shape {tuple(x.shape[1:])}; the network takes "
                          f"{net.input_shape}")
    x = apply_normalization(x.astype(np.float32), normalization)
    outputs = [net.backend.to_host(net.forward(x[i:i + batch_size])) for i in range(0, len(x), batch_size)]
    output = np.concatenate(outputs).astype(np.float64)
    if not ends_in_softmax(net):
        output = np.exp(output - output.max(axis=1, keepdims=True))
        output /= output.sum(axis=1, keepdims=True)
    np.savez(out, probabilities=output.astype(np.float32), labels=np.argmax(output, axis=1))
    return len(x)
