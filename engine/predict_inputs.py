"""What ``cnnrun predict`` reads and writes: the inputs (``.npz`` arrays, image files, folders of
images) prepared as in training, and the predictions (``.npz`` or ``.csv``)."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data import apply_normalization, with_channel_axis
from .errors import CnnrunError
from .files import atomic_write, write_text
from .image_files import IMAGE_SUFFIXES, decode_errors, decode_image, image_files, is_image_name
from .npz import read_npz


@dataclass
class Predictions:
    """Class probabilities (N, classes) for the inputs named ``inputs`` (a file, or ``FILE.npz[i]``)."""

    inputs: list[str]
    probabilities: np.ndarray
    class_names: list[str]

    def top(self, k: int) -> list[list[tuple[int, float]]]:
        """The ``k`` most probable ``(label, probability)`` of each input, most probable first."""
        order = np.argsort(-self.probabilities, axis=1, kind="stable")[:, :k]
        return [[(int(c), float(row[c])) for c in ranks] for row, ranks in zip(self.probabilities, order)]


def input_files(inputs) -> list[Path]:
    """The files ``inputs`` (paths) stand for: a folder is its image files (sorted, sub-folders too)."""
    files = []
    for path in map(Path, inputs):
        if path.is_dir():
            found = image_files(path)
            if not found:
                raise CnnrunError(f"{path}: the folder has no images (files ending {', '.join(IMAGE_SUFFIXES)})")
            files += found
        else:
            files.append(path)
    if not files:
        raise CnnrunError("no inputs: give .npz files, image files or folders of images")
    return files


def read_inputs(files: list[Path], input_shape: tuple, normalization: dict | None) -> tuple[list[str], np.ndarray]:
    """``(names, x)``: every example of ``files`` as float32 ``(N, *input_shape)``, normalized as in
    training. An ``.npz`` gives its array ``x`` (as training inputs); an image is decoded, converted
    to the network's channels, resized to its input size (Pillow's bilinear filter, as image_folder's
    ``size``) and scaled to [0, 1] (pixels / 255)."""
    names, arrays = [], []
    for file in files:
        if is_image_name(file):
            arrays.append(_image(file, input_shape))
            names.append(str(file))
        else:
            x = checked_array(read_npz(file, ["x"], what="the inputs")["x"], input_shape, file)
            arrays.append(x)
            names += [f"{file}[{i}]" for i in range(len(x))]
    return names, apply_normalization(np.concatenate(arrays), normalization)


def _image(file: Path, input_shape: tuple) -> np.ndarray:
    if len(input_shape) != 3 or input_shape[0] not in (1, 3):
        raise CnnrunError(f"{file}: the network takes inputs of shape {tuple(input_shape)}; images need a "
                          f"network input of (1 or 3 channels, H, W)")
    try:
        pixels = decode_image(file, input_shape[0], tuple(input_shape[1:]))
    except decode_errors() as exc:
        raise CnnrunError(f"{file}: cannot decode the image: {exc}") from None
    return (pixels[None].astype(np.float32) / np.float32(255))


def checked_array(x: np.ndarray, input_shape: tuple, inputs) -> np.ndarray:
    """``x`` as float32 ``(N, *input_shape)``, or one line saying why it cannot be."""
    expected = f"(N, {', '.join(map(str, input_shape))})"
    if x.dtype.kind not in "biuf":
        raise CnnrunError(f"{inputs}: x must hold real numbers; got dtype {x.dtype}")
    shape = tuple(x.shape)
    x = with_channel_axis(x, input_shape) if x.ndim else x
    if x.ndim != len(input_shape) + 1 or tuple(x.shape[1:]) != tuple(input_shape):
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


def write_predictions(out: Path, predictions: Predictions) -> None:
    """Write ``predictions`` to exactly ``out``, atomically: a ``.csv`` (columns input, label, class,
    then one probability column per class, headed by its name), else an ``.npz`` with
    ``probabilities`` (float32), ``labels``, ``inputs`` and ``class_names`` (strings)."""
    p = predictions.probabilities
    labels = np.argmax(p, axis=1)
    if Path(out).suffix.lower() == ".csv":
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(["input", "label", "class", *predictions.class_names])
        for name, label, row in zip(predictions.inputs, labels, p):
            writer.writerow([name, int(label), predictions.class_names[label], *(f"{v:.6g}" for v in row)])
        write_text(out, text.getvalue())
        return
    atomic_write(out, lambda f: np.savez(f, probabilities=p.astype(np.float32), labels=labels,
                                         inputs=np.array(predictions.inputs, dtype=str),
                                         class_names=np.array(predictions.class_names, dtype=str)))
