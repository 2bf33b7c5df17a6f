"""Using a trained network: evaluation (loss, accuracy, confusion matrix) and prediction."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from .batch_loss import BatchLoss
from .checkpoint import load_checkpoint, restore_network
from .data import Examples, apply_normalization, prepare_data
from .errors import CnnrunError, ConfigError
from .fit import predict as predict_outputs
from .eval_report import class_labels, data_for_path, eval_report, network_scores, relabeled
from .memory import check_batch_fits
from .network import Network, read_network_file
from .plugins import Registries, default_registries
from .predict_inputs import Predictions, input_files, read_inputs, write_predictions
from .provenance import explains_missing_plugins
from .run_folder import inference_checkpoint
from .train_config import resolve_train_config




class Trained(NamedTuple):
    """A trained network ready to run, and what its checkpoint says about its inputs and classes."""

    net: Network
    normalization: dict | None
    config: dict
    base_dir: Path
    checkpoint: Path  # the file used (:func:`inference_checkpoint`)
    meta: dict

    @property
    def class_names(self) -> list[str]:
        """The name of each output class (the training data's, else the class numbers)."""
        return class_labels(self.meta.get("class_names"), self.net.output_shape[0])

    def describe_checkpoint(self) -> str:
        """``runs/x/best.npz (epoch 5)``."""
        epoch = self.meta.get("epoch")
        return f"{self.checkpoint}" + (f" (epoch {epoch})" if isinstance(epoch, int) else "")


@explains_missing_plugins("checkpoint")
def load_for_inference(network, checkpoint, registries: Registries | None = None, device: str = "cpu") -> Trained:
    """The network of a JSON file (or config dict) with the weights of ``checkpoint`` (a file, or a
    run folder: :func:`inference_checkpoint`), on ``device``, its inference plan compiled
    (:meth:`Network.inference`), and the checkpoint's meta."""
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
    path = inference_checkpoint(checkpoint)
    loaded = load_checkpoint(path)
    restore_network(net, loaded, str(path))
    net.inference()
    return Trained(net, loaded.meta.get("normalization"), config, base_dir, path, loaded.meta)


def evaluate_checkpoint(network, checkpoint, *, data: dict | str | Path | None = None, batch_size: int = 256,
                        top_k: int = 5, registries: Registries | None = None, device: str = "cpu") -> dict:
    """Evaluate a checkpoint (a file, or a run folder's best.npz) on ``device`` on ``data`` (a
    ``train.data`` object: all its examples; or a path: :func:`~cnnrun.engine.eval_report.data_for_path`)
    or, by default, on the validation split of the network's own training data. Returns the
    ``cnnrun eval`` report (:func:`~cnnrun.engine.eval_report.eval_report`, with the ``checkpoint``
    used and its ``epoch``)."""
    registries = registries or default_registries()
    trained = load_for_inference(network, checkpoint, registries, device)
    net = trained.net
    train = resolve_train_config(trained.config.get("train"))
    validation_only = data is None
    if isinstance(data, (str, Path)):
        data, validation_only = data_for_path(data, net.input_shape)
    source = {k: v for k, v in (data or train["data"]).items() if k != "normalize"}
    split = 0.0 if data is not None else train["validation_split"]
    try:
        examples, validation, _, data_names = prepare_data(
            source, input_shape=net.input_shape, num_classes=net.output_shape[0], validation_split=split,
            seed=train["seed"], registry=registries.data_sources,
            base_dir=trained.base_dir if data is None else Path("."))
    except ConfigError as err:
        raise (err.in_file(str(network)) if data is None and not isinstance(network, dict) else err) from None
    if validation_only and validation is not None:
        examples = validation
    elif validation is not None:
        examples = Examples(np.concatenate([examples.x, validation.x]), np.concatenate([examples.y, validation.y]))
    examples = relabeled(examples, data_names, trained.meta.get("class_names"), source.get("path", source["type"]))
    examples = Examples(apply_normalization(examples.x, trained.normalization), examples.y)
    check_batch_fits(net, min(batch_size, len(examples)), "eval", training=False)
    loss, outputs = network_scores(net, BatchLoss(net, train["loss"], registries.losses), examples, batch_size)
    names = class_labels(trained.meta.get("class_names") or data_names, net.output_shape[0])
    return {"checkpoint": str(trained.checkpoint), "epoch": trained.meta.get("epoch"),
            **eval_report(outputs, examples.y, loss, names, top_k)}


def predict(network, checkpoint, inputs, *, batch_size: int = 256, registries: Registries | None = None,
            device: str = "cpu", protect=None) -> tuple[Predictions, Trained]:
    """Class probabilities for ``inputs`` (a path or a list of paths: ``.npz`` files with an array
    ``x``, image files, folders of images; :func:`~cnnrun.engine.predict_inputs.read_inputs`) from a
    checkpoint (a file, or a run folder's best.npz), running the network on ``device``. Inputs that
    are empty, not real numbers, NaN/Inf or of the wrong shape are refused, and so is an output that
    is not finite. ``protect(files, trained)`` is called before any input is read."""
    trained = load_for_inference(network, checkpoint, registries, device)
    net = trained.net
    files = input_files([inputs] if isinstance(inputs, (str, Path)) else inputs)
    if protect is not None:
        protect(files, trained)
    names, x = read_inputs(files, net.input_shape, trained.normalization)
    output = predict_outputs(net, x, batch_size=batch_size, probabilities=True)
    if not np.isfinite(output).all():
        i = int(np.argmax(~np.isfinite(output).all(axis=1)))
        raise CnnrunError(f"{names[i]}: the network's output for example {i} is not finite (NaN/Inf): "
                          "are the inputs scaled as in training?")
    return Predictions(names, output, trained.class_names), trained


def predict_file(network, checkpoint, inputs, out, *, batch_size: int = 256,
                 registries: Registries | None = None, device: str = "cpu") -> int:
    """:func:`predict`, written to exactly ``out`` (``.csv``, else ``.npz``:
    :func:`~cnnrun.engine.predict_inputs.write_predictions`), atomically and never onto an input,
    the checkpoint or the network file (refused before any input is read); returns N."""
    out = Path(out)

    def protect(files, trained):
        inputs = [("INPUT.npz" if file.suffix.lower() == ".npz" else f"the input {file}", file) for file in files]
        for what, path in [*inputs, ("the checkpoint", trained.checkpoint), ("the network file", network)]:
            if isinstance(path, (str, Path)) and _same_file(out, Path(path)):
                raise CnnrunError(f"--out {out} is {what}: writing there would destroy it; choose another file")

    predictions, _ = predict(network, checkpoint, inputs, batch_size=batch_size, registries=registries,
                             device=device, protect=protect)
    write_predictions(out, predictions)
    return len(predictions.inputs)


def _same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` name one file (through links, ``..`` or another spelling)."""
    try:
        return a.exists() and b.exists() and a.samefile(b) or a.resolve() == b.resolve()
    except OSError:
        return False
