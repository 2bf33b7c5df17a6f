"""Using a trained network: evaluation (loss, accuracy, confusion matrix) and prediction."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .checkpoint import load_checkpoint, restore_network
from .data import Examples, apply_normalization, batches, prepare_data, with_channel_axis
from .errors import CnnrunError, ConfigError
from .losses import LOSSES, cross_entropy_from_probabilities
from .network import Network
from .plugins import Registries, default_registries
from .provenance import explains_missing_plugins

LATEST = "latest.npz"


def ends_in_softmax(net: Network) -> bool:
    return net.nodes[-1].layer.type_name == "softmax"


class BatchLoss:
    """The loss ``loss`` ("cross_entropy" or "mse") of a network's output for a batch of class
    labels, computed on the network's device.

    A network ending in softmax trained with cross-entropy gets the combined gradient
    (p - onehot) / N for the softmax input (``skip_last``: back-propagation starts below it).
    On CUDA (:mod:`cnnrun.engine.losses_cuda`) only the loss and the count of correct rows come
    back to the host (and the predicted labels, when asked for).
    """

    def __init__(self, net: Network, loss: str):
        self.skip_last = loss == "cross_entropy" and ends_in_softmax(net)
        if net.device == "cpu":
            self._device_loss = None
            self._function = cross_entropy_from_probabilities if self.skip_last else LOSSES[loss]
        else:
            from .losses_cuda import DeviceLoss

            self._device_loss = DeviceLoss("cross_entropy_from_probabilities" if self.skip_last else loss,
                                           net.backend)

    def __call__(self, output, labels: np.ndarray, *, gradient: bool = True, predictions: bool = False):
        """``(mean loss, correct rows, gradient or None, predicted labels (host) or None)``.

        Overflow is not warned about: a non-finite loss is the caller's to report."""
        if self._device_loss is not None:
            loss, correct, grad, predicted = self._device_loss(output, labels, gradient=gradient)
            return loss, correct, grad, predicted.copy_to_host() if predictions else None
        with np.errstate(over="ignore", invalid="ignore"):
            loss, grad = self._function(output, labels)
        predicted = np.argmax(output, axis=1)
        return loss, int(np.count_nonzero(predicted == labels)), grad if gradient else None, \
            predicted if predictions else None


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
