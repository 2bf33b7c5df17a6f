"""``image_folder``: one sub-folder of image files per class, decoded with Pillow on demand."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from cnnrun.engine import CnnrunError, ConfigError
from cnnrun.engine.data import DataSource, Examples, Splits
from cnnrun.engine.image_files import IMAGE_SUFFIXES, decode_errors, decode_image, image_files
from cnnrun.engine.lazy_inputs import LazyInputs
from cnnrun.engine.options import bool_option, int_option, int_tuple, show


class DecodedCache:
    """Decoded images by file, kept while their bytes stay within ``limit_bytes`` (the first
    ones to arrive stay: with a shuffled order every image is equally likely to be read next)."""

    def __init__(self, limit_bytes: int):
        self.limit_bytes = limit_bytes
        self.used_bytes = 0
        self.images: dict[Path, np.ndarray] = {}

    def keep(self, file: Path, pixels: np.ndarray) -> None:
        if self.used_bytes + pixels.nbytes <= self.limit_bytes:
            self.images[file] = pixels
            self.used_bytes += pixels.nbytes


class ImageStore:
    """The store of :class:`LazyInputs` for a list of image files: ``read`` takes decoded images
    from ``cache`` or decodes them again, and scales them to [0, 1] (``pixels / 255`` in float32,
    torchvision's ``ToTensor``)."""

    def __init__(self, files: list[Path], example_shape: tuple, size, cache: DecodedCache):
        self.files = files
        self.count = len(files)
        self.example_shape = example_shape
        self.size = size
        self.cache = cache

    def read(self, indices: np.ndarray) -> np.ndarray:
        out = np.empty((len(indices), *self.example_shape), dtype=np.float32)
        for k, i in enumerate(indices):
            file = self.files[i]
            pixels = self.cache.images.get(file)
            if pixels is None:
                try:
                    pixels = decode_image(file, self.example_shape[0], self.size)
                except decode_errors() as exc:
                    raise CnnrunError(f"{file}: cannot decode the image: {exc}") from None
                if pixels.shape != self.example_shape:
                    raise CnnrunError(f"{file}: the image is now {pixels.shape[2]}x{pixels.shape[1]}; "
                                      f"it was {self.example_shape[2]}x{self.example_shape[1]} when loaded")
            out[k] = pixels
        return np.divide(out, np.float32(255), out=out)


class ImageFolder(DataSource):
    """A folder with one sub-folder of images per class (torchvision's ``ImageFolder``): classes
    sorted by folder name, label = index; files ending .png, .jpg, .jpeg, .bmp or .webp (any case),
    in sub-folders too, sorted by path; other files are ignored.

    Options:
        path: required; the folder. A relative path is relative to the network file's folder.
        validation_path: null (default: the engine splits by ``validation_split``) or a folder laid
            out the same whose class folders all appear in ``path`` (labels follow ``path``).
        size: null (default: every image must have the same size) or [H, W] (an integer n means
            [n, n]): resize each image with Pillow's bilinear filter (torchvision's ``Resize``).
        channels: 3 (default: RGB; grey and palette images expanded, alpha dropped) or 1 (grey).
        skip_bad: false (default: an image that cannot be decoded is an error) or true: leave such
            images out, with a warning that counts them.
        cache_mb: 1024 (default): megabytes of decoded images kept in memory; the rest are decoded
            again whenever read, so a folder larger than memory works.

    Every image is decoded once when loaded (to check it and its size). Inputs: ``(N, channels,
    H, W)`` in [0, 1] (``pixels / 255``); labels 0..classes-1; ``Splits.class_names``: the folder names.
    """

    type_name = "image_folder"

    def __init__(self, path, validation_path=None, size=None, channels=3, skip_bad=False, cache_mb=1024):
        self.path = _folder_option(path, "path")
        self.validation_path = None if validation_path is None else _folder_option(validation_path,
                                                                                     "validation_path")
        self.size = None if size is None else int_tuple(size, 2, "size")
        if channels not in (1, 3) or isinstance(channels, bool):
            raise ConfigError(f"channels must be 1 (grey) or 3 (RGB); got channels={show(channels)}",
                              key="channels")
        self.channels = int(channels)
        self.skip_bad = bool_option(skip_bad, "skip_bad")
        self.cache_mb = int_option(cache_mb, "cache_mb", minimum=0)

    def load(self, base_dir: Path) -> Splits:
        cache = DecodedCache(self.cache_mb * 2**20)
        root = self._folder(base_dir, self.path, "path")
        class_names = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
        if not class_names:
            raise self.error(f"path: {root} has no class folders (expected one sub-folder of images "
                             f"per class, e.g. {root / 'cat' / '1.png'})", key="path")
        train = self._examples(root, class_names, class_names, cache, "path")
        validation = None
        if self.validation_path is not None:
            folder = self._folder(base_dir, self.validation_path, "validation_path")
            names = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
            unknown = [n for n in names if n not in class_names]
            if unknown or not names:
                raise self.error(f"validation_path: {folder / unknown[0]} is not a class of path ({root} has "
                                 f"{', '.join(class_names)})" if unknown else
                                 f"validation_path: {folder} has no class folders", key="validation_path")
            validation = self._examples(folder, names, class_names, cache, "validation_path")
            if validation.x.shape[1:] != train.x.shape[1:]:
                raise self.error(f"validation_path: the images of {folder} are {_hw(validation.x.shape)} "
                                 f"but those of {root} are {_hw(train.x.shape)}; set \"size\"", key="size")
        return Splits(train, validation, class_names)

    def _folder(self, base_dir: Path, path: str, key: str) -> Path:
        folder = Path(base_dir) / path
        if not folder.is_dir():
            raise self.error(f"{key}: folder not found: {folder}", key=key)
        return folder

    def _examples(self, root: Path, names: list[str], class_names: list[str], cache: DecodedCache,
                  key: str) -> Examples:
        files, labels, skipped, shape = [], [], [], None
        for name in names:
            found = image_files(root / name)
            kept = 0
            for file in found:
                try:
                    pixels = decode_image(file, self.channels, self.size)
                except decode_errors() as exc:
                    if not self.skip_bad:
                        raise self.error(f"{key}: cannot decode the image {file}: {exc} (set \"skip_bad\": "
                                         f"true to leave such images out)", key=key) from None
                    skipped.append(file)
                    continue
                if shape is None:
                    shape, first = pixels.shape, file
                elif pixels.shape != shape:
                    raise self.error(f"{key}: {file} is {_hw(pixels.shape)} but {first} is {_hw(shape)}; "
                                     f"set \"size\": [H, W] to resize every image", key="size")
                cache.keep(file, pixels)
                files.append(file)
                labels.append(class_names.index(name))
                kept += 1
            if not kept:
                what = "no images it can decode" if found else \
                    f"no images (files ending {', '.join(IMAGE_SUFFIXES)})"
                raise self.error(f"{key}: the class folder {root / name} has {what}", key=key)
        if skipped:
            warnings.warn(f"{root}: skipped {len(skipped)} image(s) that cannot be decoded (skip_bad), "
                          f"the first {skipped[0]}", stacklevel=2)
        store = ImageStore(files, shape, self.size, cache)
        return Examples(LazyInputs(store), np.asarray(labels, dtype=np.int64))


def _hw(shape: tuple) -> str:
    """``W x H`` of a ``(..., H, W)`` shape, as image sizes are usually written."""
    return f"{shape[-1]}x{shape[-2]}"


def _folder_option(value, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key} must be a folder path (a non-empty string); got {key}={show(value)}",
                          key=key)
    return value
