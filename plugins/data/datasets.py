"""Built-in data sources: the bundled digits, NumPy ``.npz`` files, and MNIST-style IDX files."""

from __future__ import annotations

import gzip
import importlib.resources
import struct
import zlib
from pathlib import Path

import numpy as np

from cnnrun.engine import ConfigError, hookimpl
from cnnrun.engine.data import DataSource, Examples, Splits
from cnnrun.engine.files import FileProblem, regular_file
from cnnrun.engine.memory import array_bytes, check_fits
from cnnrun.engine.npz import NpzError, read_npz
from cnnrun.engine.options import choice_option, int_option, int_tuple, show


def bilinear_weights(in_size: int, out_size: int) -> np.ndarray:
    """The ``(out_size, in_size)`` matrix of 1-D linear interpolation with PyTorch's
    ``align_corners=False``: ``src = max((i + 0.5) * in_size / out_size - 0.5, 0)``, then
    ``(1 - f) * x[floor(src)] + f * x[min(floor(src) + 1, in_size - 1)]`` with ``f = src - floor(src)``."""
    src = np.maximum((np.arange(out_size) + 0.5) * (in_size / out_size) - 0.5, 0.0)
    low = np.floor(src).astype(np.int64)
    high = np.minimum(low + 1, in_size - 1)
    frac = src - low
    weights = np.zeros((out_size, in_size))
    rows = np.arange(out_size)
    np.add.at(weights, (rows, low), 1.0 - frac)
    np.add.at(weights, (rows, high), frac)
    return weights


def resize_bilinear(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize the last two axes of ``x`` to ``size`` (float64 result).

    PyTorch: ``F.interpolate(x, size=size, mode="bilinear", align_corners=False)`` (no antialias).
    """
    rows = bilinear_weights(x.shape[-2], size[0])
    cols = bilinear_weights(x.shape[-1], size[1])
    return rows @ np.asarray(x, dtype=np.float64) @ cols.T


def resize_option(resize) -> tuple[int, int] | None:
    """The ``resize`` option every array source takes: null, ``[H, W]`` or an integer ``n`` for ``[n, n]``."""
    return None if resize is None else int_tuple(resize, 2, "resize")


def resized(x: np.ndarray, size: tuple[int, int] | None, where: str) -> np.ndarray:
    """Images ``x`` (``(N, C, H, W)`` or ``(N, H, W)``) resized by :func:`resize_bilinear` to float32,
    after checking that the float64 result and its float32 copy fit in memory; ``x`` as is for None."""
    if size is None:
        return x
    planes = int(np.prod(x.shape[:-2]))  # the float64 result, then its float32 copy
    check_fits(array_bytes((planes, *size), 8 + 4), f"{where}: resize {show(size)} of {len(x)} images")
    return resize_bilinear(x, size).astype(np.float32)


def _path_option(value, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key} must be a file path (a non-empty string); got {key}={show(value)}",
                          key=key)
    return value


class Digits(DataSource):
    """The UCI handwritten digits bundled with cnnrun (as scikit-learn ships them): 1797 grey 8x8
    images of the digits 0-9, pixels scaled from 0..16 to [0, 1]. No validation set of its own.

    Options:
        resize: null (default: keep 8x8) or [H, W] (an integer n means [n, n]): resize the images
            bilinearly, as PyTorch's ``F.interpolate(mode="bilinear", align_corners=False)``.

    Inputs: ``(1797, 1, 8, 8)``, or ``(1797, 1, H, W)`` with ``resize``; labels 0..9.
    """

    type_name = "digits"

    def __init__(self, resize=None):
        self.resize = resize_option(resize)

    def load(self, base_dir: Path) -> Splits:
        with importlib.resources.files(__package__).joinpath("digits.npz").open("rb") as f:
            with np.load(f, allow_pickle=False) as data:
                x, y = data["x"], data["y"]
        x = resized(x[:, None].astype(np.float32) / np.float32(16), self.resize, self.section())
        return Splits(Examples(x, y.astype(np.int64)))


class Npz(DataSource):
    """Arrays ``x`` (inputs) and ``y`` (labels) from NumPy ``.npz`` files (``np.savez``).

    Options:
        path: required; the training file. A relative path is relative to the network file's folder.
        validation_path: null (default: the engine splits the training file by ``validation_split``)
            or a second ``.npz`` file with the same arrays, used as the validation set.
        resize: null (default) or [H, W] (an integer n means [n, n]): resize images ``(N, C, H, W)``
            or ``(N, H, W)`` bilinearly, as the ``digits`` source does.

    ``x``: ``(N, C, H, W)`` images, ``(N, H, W)`` one-channel images (the channel axis is added for
    a network input ``[1, H, W]``), ``(N, C, L)`` signals or ``(N, F)`` feature vectors; any real
    dtype, converted to float32 as is (no scaling). ``y``: ``(N,)`` integer class labels (an
    integer-valued float array is accepted). Files are read with ``allow_pickle=False``.
    """

    type_name = "npz"

    def __init__(self, path, validation_path=None, resize=None):
        self.path = _path_option(path, "path")
        self.validation_path = (None if validation_path is None
                                else _path_option(validation_path, "validation_path"))
        self.resize = resize_option(resize)

    def load(self, base_dir: Path) -> Splits:
        train = self._read(Path(base_dir) / self.path, "path")
        if self.validation_path is None:
            return Splits(train)
        return Splits(train, self._read(Path(base_dir) / self.validation_path, "validation_path"))

    def _read(self, file: Path, key: str) -> Examples:
        if not file.exists():
            raise self.error(f"{key}: file not found: {file}", key=key)
        try:
            arrays = read_npz(file, ["x", "y"], what="the data")
        except NpzError as exc:
            raise self.error(str(exc), key=key) from None
        x, y = arrays["x"], arrays["y"]
        if not 2 <= x.ndim <= 4:
            raise self.error(f"{file}: x must be (N, C, H, W), (N, H, W), (N, C, L) or (N, F); "
                             f"got shape {x.shape}", key=key)
        if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
            raise self.error(f"{file}: x must hold real numbers; got dtype {x.dtype}", key=key)
        if y.ndim != 1 or len(y) != len(x):
            raise self.error(f"{file}: x has {len(x)} examples but y has shape {y.shape}; "
                             f"expected ({len(x)},)", key=key)
        if self.resize is not None and x.ndim not in (3, 4):
            raise self.error(f"{file}: resize {show(self.resize)} needs images (N, C, H, W) or (N, H, W); "
                             f"x has shape {x.shape}", key="resize")
        with np.errstate(over="ignore"):  # values beyond float32 become inf: the engine reports them
            x = x.astype(np.float32)
        return Examples(resized(x, self.resize, str(file)), self._labels(y, file, key))

    def _labels(self, y: np.ndarray, file: Path, key: str) -> np.ndarray:
        if np.issubdtype(y.dtype, np.integer):
            return y.astype(np.int64)
        if np.issubdtype(y.dtype, np.floating):
            bad = ~np.isfinite(y) | (y != np.round(y))
            if not bad.any():
                return y.astype(np.int64)
            i = int(np.argmax(bad))
            raise self.error(f"{file}: y must hold integer class labels; got {y[i]} (example {i})",
                             key=key)
        raise self.error(f"{file}: y must hold integer class labels; got dtype {y.dtype}", key=key)


IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


class Idx(DataSource):
    """MNIST / Fashion-MNIST from a folder of IDX files: ``train-images-idx3-ubyte``,
    ``train-labels-idx1-ubyte`` and, for ``validation="test"``, ``t10k-images-idx3-ubyte`` and
    ``t10k-labels-idx1-ubyte``; each may be gzipped with ``.gz`` added to its name (gzip is
    recognized by content). Pixels (unsigned bytes) are divided by 255.

    Options:
        path: required; the folder. A relative path is relative to the network file's folder.
        validation: "split" (default: the engine splits the training files by ``validation_split``)
            or "test" (the t10k files are the validation set).
        limit: null (default: all) or n >= 1: use only the first n training examples.
        resize: null (default) or [H, W] (an integer n means [n, n]): resize the images bilinearly,
            as the ``digits`` source does.

    Inputs: ``(N, 1, 28, 28)`` for MNIST (``(N, 1, H, W)`` in general, ``(N, 1, *resize)`` with
    ``resize``); labels as stored (0..9).
    """

    type_name = "idx"

    def __init__(self, path, validation="split", limit=None, resize=None):
        self.path = _path_option(path, "path")
        self.validation = choice_option(validation, "validation", ("split", "test"))
        self.limit = None if limit is None else int_option(limit, "limit")
        self.resize = resize_option(resize)

    def load(self, base_dir: Path) -> Splits:
        folder = Path(base_dir) / self.path
        if not folder.is_dir():
            found = "is not a folder" if folder.exists() else "folder not found"
            raise self.error(f"path: {found}: {folder}", key="path")
        train = self._read_pair(folder, "train", self.limit)
        validation = self._read_pair(folder, "test", None) if self.validation == "test" else None
        return Splits(train, validation)

    def _read_pair(self, folder: Path, split: str, limit: int | None) -> Examples:
        """The first ``limit`` (all for None) images and labels of a split; only those are read."""
        image_name, label_name = IDX_FILES[split]
        images, image_file, n_images = self._read(folder, image_name, 3, limit, "unsigned-byte images (N, H, W)")
        labels, label_file, n_labels = self._read(folder, label_name, 1, limit, "integer labels (N,)")
        if images.dtype != np.uint8:
            raise self.error(f"{image_file}: expected unsigned-byte images (N, H, W); got {images.dtype}")
        if not np.issubdtype(labels.dtype, np.integer):
            raise self.error(f"{label_file}: expected integer labels (N,); got {labels.dtype}")
        if n_images != n_labels:
            raise self.error(f"{image_file} has {n_images} images but {label_file.name} has "
                             f"{n_labels} labels")
        check_fits(images.size * 4, f"{image_file}: converting {len(images)} images to float32")
        x = images[:, None].astype(np.float32) / np.float32(255)
        return Examples(resized(x, self.resize, str(image_file)), labels.astype(np.int64))

    def _read(self, folder: Path, name: str, ndim: int, limit: int | None,
              expected: str) -> tuple[np.ndarray, Path, int]:
        """``(the first limit items, file, the number of items the header claims)`` of an IDX file:
        magic (0, 0, dtype code, ndim), ndim big-endian uint32 sizes, the data."""
        candidates = [folder / name, folder / f"{name}.gz"]
        file = next((f for f in candidates if f.exists()), None)
        if file is None:
            raise self.error(f"file not found: {candidates[0]} (or {candidates[1].name})", key="path")
        compressed = False
        try:
            regular_file(file)
            with open(file, "rb") as raw:
                compressed = raw.read(2) == b"\x1f\x8b"
            with (gzip.open(file, "rb") if compressed else open(file, "rb")) as f:
                return self._parse(f, file, ndim, limit, expected, compressed)
        except FileProblem as exc:
            raise self.error(str(exc), key="path") from None
        except (OSError, EOFError, zlib.error) as exc:
            if compressed:
                raise self.error(f"{file}: cannot decompress it: {exc}") from None
            raise self.error(f"{file}: cannot read it: {getattr(exc, 'strerror', None) or exc}") from None

    def _parse(self, f, file: Path, ndim: int, limit, expected: str, compressed: bool):
        magic = f.read(4)
        if len(magic) < 4 or magic[:2] != b"\0\0" or magic[2] not in IDX_DTYPES or magic[3] == 0:
            raise self.error(f"{file}: not an IDX file (bad magic number 0x{magic.hex()})"
                             if magic else f"{file}: empty file, expected an IDX file")
        if magic[3] != ndim:
            raise self.error(f"{file}: the IDX header says {magic[3]} dimensions; expected {expected}")
        header = 4 + 4 * ndim
        sizes = f.read(4 * ndim)
        if len(sizes) < 4 * ndim:
            raise self.error(f"{file}: truncated IDX header ({4 + len(sizes)} bytes)")
        shape = struct.unpack(f">{ndim}I", sizes)
        dtype = np.dtype(IDX_DTYPES[magic[2]])
        whole = header + array_bytes(shape, dtype.itemsize)
        if not compressed and file.stat().st_size != whole:
            raise self.error(f"{file}: the header says shape {show(shape)} ({whole} bytes) but the file has "
                             f"{file.stat().st_size} bytes")
        count = shape[0] if limit is None else min(limit, shape[0])
        n_bytes = array_bytes((count, *shape[1:]), dtype.itemsize)
        check_fits(n_bytes, f"{file}: reading {count} of the {shape[0]} items of shape {show(shape[1:])}")
        data = f.read(n_bytes)
        if len(data) < n_bytes:
            raise self.error(f"{file}: the header says shape {show(shape)} ({whole} bytes) but the "
                             f"decompressed file has {header + len(data)} bytes")
        if limit is None and f.read(1):
            raise self.error(f"{file}: the header says shape {show(shape)} ({whole} bytes) but the "
                             "decompressed file is longer")
        array = np.frombuffer(data, dtype).reshape((count, *shape[1:]))
        return array.astype(dtype.newbyteorder("=")), file, shape[0]


@hookimpl
def cnnrun_register_data_sources(register):
    for source in (Digits, Npz, Idx):
        register(source)
