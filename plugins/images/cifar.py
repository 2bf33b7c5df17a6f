"""``cifar10`` and ``cifar100``: the binary version of the CIFAR files (never the pickled one)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cnnrun.engine import ConfigError
from cnnrun.engine.data import DataSource, Examples, Splits
from cnnrun.engine.lazy_inputs import LazyInputs
from cnnrun.engine.options import choice_option, show
from cnnrun.plugins.data.datasets import resize_bilinear, resize_option

CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"
IMAGE_SHAPE = (3, 32, 32)
IMAGE_BYTES = 3 * 32 * 32


class PixelStore:
    """The store of :class:`LazyInputs` for uint8 images held in memory (``(N, C, H, W)``, a
    quarter of their float32 size): ``read`` scales them to [0, 1] (``pixels / 255`` in float32),
    then resizes them to ``size`` (``resize_bilinear``, as the ``digits`` source) when given."""

    def __init__(self, pixels: np.ndarray, size: tuple[int, int] | None = None):
        self.pixels = pixels
        self.size = size
        self.count = len(pixels)
        self.example_shape = pixels.shape[1:2] + (tuple(size) if size else pixels.shape[2:])

    def read(self, indices: np.ndarray) -> np.ndarray:
        out = self.pixels[indices].astype(np.float32)
        out = np.divide(out, np.float32(255), out=out)
        return out if self.size is None else resize_bilinear(out, self.size).astype(np.float32)


class CifarBinary(DataSource):
    """Shared reading of the CIFAR binary files: records of ``label_bytes`` label bytes then 3072
    pixel bytes (1024 red, 1024 green, 1024 blue, each 32 rows of 32)."""

    title = ""
    archive = ""          # the download that holds the binary version
    extracted = ""        # the folder that download extracts to
    train_files: tuple[str, ...] = ()
    test_file = ""
    pickled = ()          # files of the python version, recognized to refuse it
    listed = ""           # the files, for messages
    label_bytes = 1
    label_offset = 0      # which label byte is the label
    names_file = ""       # one class name a line

    def __init__(self, path, validation="split", resize=None):
        if not isinstance(path, str) or not path:
            raise ConfigError(f"path must be a folder path (a non-empty string); got path={show(path)}",
                              key="path")
        self.path = path
        self.validation = choice_option(validation, "validation", ("split", "test"))
        self.resize = resize_option(resize)

    def load(self, base_dir: Path) -> Splits:
        folder = Path(base_dir) / self.path
        self._check_folder(folder)
        train = self._read(folder, self.train_files)
        validation = self._read(folder, (self.test_file,)) if self.validation == "test" else None
        return Splits(train, validation, self._class_names(folder / self.names_file))

    def _where(self, folder: Path) -> str:
        return (f"put the {self.title} binary version's files ({self.listed}) in {folder}: "
                f"they are the folder {self.extracted} of {self.archive} from {CIFAR_URL}")

    def _check_folder(self, folder: Path) -> None:
        if not folder.is_dir():
            raise self.error(f"path: folder not found: {folder}; {self._where(folder)}", key="path")
        if not (folder / self.train_files[0]).is_file():
            if any((folder / name).exists() for name in self.pickled):
                raise self.error(f"path: {folder} holds the python (pickle) version of {self.title}, which "
                                 f"cnnrun does not read (unpickling runs code); use the binary version "
                                 f"instead: {self.archive} from {CIFAR_URL}", key="path")
            inside = folder / self.extracted
            hint = f" (did you mean {inside}?)" if inside.is_dir() else ""
            raise self.error(f"path: {folder} has no {self.train_files[0]}{hint}; {self._where(folder)}",
                             key="path")

    def _read(self, folder: Path, names: tuple[str, ...]) -> Examples:
        record = self.label_bytes + IMAGE_BYTES
        pixels, labels = [], []
        for name in names:
            file = folder / name
            if not file.is_file():
                raise self.error(f"path: file not found: {file}; {self._where(folder)}", key="path")
            data = np.fromfile(file, dtype=np.uint8)
            if data.size == 0 or data.size % record:
                raise self.error(f"path: {file} has {data.size} bytes, not a positive multiple of {record} "
                                 f"({self.label_bytes} label byte(s) and {IMAGE_BYTES} pixel bytes per image): "
                                 f"not a {self.title} binary file", key="path")
            rows = data.reshape(-1, record)
            labels.append(rows[:, self.label_offset].astype(np.int64))
            pixels.append(rows[:, self.label_bytes:].reshape(-1, *IMAGE_SHAPE))
        return Examples(LazyInputs(PixelStore(np.concatenate(pixels), self.resize)), np.concatenate(labels))

    def _class_names(self, file: Path) -> list[str]:
        if not file.is_file():
            raise self.error(f"path: file not found: {file}; {self._where(file.parent)}", key="path")
        return [line.strip() for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]


class Cifar10(CifarBinary):
    """CIFAR-10, binary version (``cifar-10-binary.tar.gz``, extracted: ``cifar-10-batches-bin``):
    ``data_batch_1.bin`` … ``data_batch_5.bin`` (training), ``test_batch.bin``, ``batches.meta.txt``
    (the 10 class names). Records: 1 label byte, 3072 pixel bytes.

    Options:
        path: required; the folder. A relative path is relative to the network file's folder.
        validation: "split" (default: the engine splits the training files by ``validation_split``)
            or "test" (test_batch.bin is the validation set).
        resize: null (default) or [H, W] (an integer n means [n, n]): resize the images bilinearly
            as each batch is read, as the ``digits`` source does.

    Inputs: ``(N, 3, 32, 32)`` in [0, 1] (``pixels / 255``; ``(N, 3, H, W)`` with ``resize``); labels 0..9;
    ``Splits.class_names`` from batches.meta.txt.
    """

    type_name = "cifar10"
    title = "CIFAR-10"
    archive = "cifar-10-binary.tar.gz"
    extracted = "cifar-10-batches-bin"
    train_files = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
    test_file = "test_batch.bin"
    names_file = "batches.meta.txt"
    listed = "data_batch_1.bin … data_batch_5.bin, test_batch.bin, batches.meta.txt"
    pickled = ("data_batch_1", "batches.meta", "cifar-10-batches-py")


class Cifar100(CifarBinary):
    """CIFAR-100, binary version (``cifar-100-binary.tar.gz``, extracted: ``cifar-100-binary``):
    ``train.bin``, ``test.bin``, ``fine_label_names.txt`` (100 names), ``coarse_label_names.txt``
    (20). Records: 1 coarse label byte, 1 fine label byte, 3072 pixel bytes.

    Options:
        path, validation, resize: as for ``cifar10`` (``validation: "test"`` uses test.bin).
        label: "fine" (default: 100 classes) or "coarse" (the 20 superclasses).

    Inputs: ``(N, 3, 32, 32)`` in [0, 1]; labels 0..99 or 0..19; ``Splits.class_names`` from the
    label's names file.
    """

    type_name = "cifar100"
    title = "CIFAR-100"
    archive = "cifar-100-binary.tar.gz"
    extracted = "cifar-100-binary"
    train_files = ("train.bin",)
    test_file = "test.bin"
    pickled = ("train", "meta", "cifar-100-python")
    label_bytes = 2
    listed = "train.bin, test.bin, fine_label_names.txt, coarse_label_names.txt"

    def __init__(self, path, validation="split", label="fine", resize=None):
        super().__init__(path, validation, resize)
        self.label = choice_option(label, "label", ("fine", "coarse"))
        self.label_offset = 1 if self.label == "fine" else 0
        self.names_file = f"{self.label}_label_names.txt"
