"""Using a trained network: evaluation (loss, accuracy, confusion matrix) and prediction."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .batch_loss import BatchLoss, ends_in_softmax
from .checkpoint import load_checkpoint, restore_network
from .data import Examples, apply_normalization, batches, prepare_data, with_channel_axis
from .errors import CnnrunError, ConfigError
from .files import atomic_write
from .memory import check_batch_fits
from .network import Network, read_network_file
from .npz import read_npz
from .plugins import Registries, default_registries
from .provenance import explains_missing_plugins
from .run_folder import resolve_checkpoint
from .train_config import resolve_train_config


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


@explains_missing_plugins("checkpoint")
def load_for_inference(network, checkpoint, registries: Registries | None = None, device: str = "cpu"):
    """``(net, normalization, network_config, base_dir)``: the network of a JSON file (or config dict)
    with a checkpoint's weights, on ``device``, and the input normalization it was trained with."""
    registries = registries or default_registries()
    if isinstance(network, dict):
        net, config, base_dir = Network.from_config(network, registry=registries.layers), network, Path(".")
    else:
        config, base_dir = read_network_file(network), Path(network).parent
        try:
            net = Network.from_config(config, registry=registries.layers)
        except ConfigError as err:
            raise err.in_file(str(network)) from None
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
    check_batch_fits(net, min(batch_size, len(examples)), "eval", training=False)
    loss, accuracy, predicted = evaluate(net, examples, train["loss"], batch_size)
    classes = net.output_shape[0]
    confusion = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(confusion, (examples.y, predicted), 1)
    return {"examples": len(examples), "loss": loss, "accuracy": accuracy,
            "confusion_matrix": confusion.tolist()}


def predict_file(network, checkpoint, inputs, out, *, batch_size: int = 256,
                 registries: Registries | None = None, device: str = "cpu") -> int:
    """Write ``probabilities`` (N, classes) and ``labels`` (N,) for the array ``x`` of ``inputs`` (.npz)
    to exactly ``out`` (atomically; never onto ``inputs`` or the checkpoint), running the network on
    ``device``; returns N. Inputs that are empty, not real numbers, NaN/Inf or of the wrong shape are
    refused, and so is an output that is not finite."""
    out = Path(out)
    net, normalization, _, _ = load_for_inference(network, checkpoint, registries, device)
    for what, path in (("INPUT.npz", inputs), ("the checkpoint", resolve_checkpoint(checkpoint)),
                       ("the network file", network)):
        if isinstance(path, (str, Path)) and _same_file(out, Path(path)):
            raise CnnrunError(f"--out {out} is {what}: writing there would destroy it; choose another file")
    x = _checked_inputs(read_npz(inputs, ["x"], what="the inputs")["x"], net, inputs)
    check_batch_fits(net, min(batch_size, len(x)), "predict", training=False)
    x = apply_normalization(x, normalization)
    with np.errstate(over="ignore", invalid="ignore"):  # a non-finite output is reported below
        outputs = [net.backend.to_host(net.forward(x[i:i + batch_size])) for i in range(0, len(x), batch_size)]
    output = np.concatenate(outputs).astype(np.float64)
    if not np.isfinite(output).all():
        i = int(np.argmax(~np.isfinite(output).all(axis=1)))
        raise CnnrunError(f"{inputs}: the network's output for example {i} is not finite (NaN/Inf): "
                          "are the inputs scaled as in training?")
    if not ends_in_softmax(net):
        output = np.exp(output - output.max(axis=1, keepdims=True))
        output /= output.sum(axis=1, keepdims=True)
    atomic_write(out, lambda f: np.savez(f, probabilities=output.astype(np.float32),
                                         labels=np.argmax(output, axis=1)))
    return len(x)


def _same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` name one file (through links, ``..`` or another spelling)."""
    try:
        return a.exists() and b.exists() and a.samefile(b) or a.resolve() == b.resolve()
    except OSError:
        return False


def _checked_inputs(x: np.ndarray, net: Network, inputs) -> np.ndarray:
    """``x`` as float32 ``(N, *input_shape)``, or one line saying why it cannot be."""
    expected = f"(N, {', '.join(map(str, net.input_shape))})"
    if x.dtype.kind not in "biuf":
        raise CnnrunError(f"{inputs}: x must hold real numbers; got dtype {x.dtype}")
    shape = tuple(x.shape)
    x = with_channel_axis(x, net.input_shape) if x.ndim else x
    if x.ndim != len(net.input_shape) + 1 or tuple(x.shape[1:]) != net.input_shape:
        raise CnnrunError(f"{inputs}: x has shape {shape}; the network takes {expected}")
    if len(x) == 0:
        raise CnnrunError(f"{inputs}: x holds no examples (shape {tuple(x.shape)})")
    with np.errstate(over="ignore"):
        x = x.astype(np.float32)
    bad = ~np.isfinite(x).reshape(len(x), -1).all(axis=1)
    if bad.any():
        raise CnnrunError(f"{inputs}: x has NaN/Inf values (or values beyond float32) in "
                          f"{int(bad.sum())} examples, the first in example {int(np.argmax(bad))}")
    return x
