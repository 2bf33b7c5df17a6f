"""Data for training: the data-source protocol, checks against the network, splits, batches."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np

from .errors import ConfigError
from .lazy_inputs import LazyInputs
from .standardize import standardize
from .options import Configurable, bool_option, float_option, show


@dataclass
class Examples:
    """Inputs ``x`` (float32, ``(N, *input_shape)``; an ndarray or :class:`LazyInputs`) and integer
    class labels ``y`` (int64, ``(N,)``)."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)

    def take(self, index: np.ndarray) -> "Examples":
        """The examples at ``index`` (an integer array), in that order."""
        x = self.x.subset(index) if isinstance(self.x, LazyInputs) else self.x[index]
        return Examples(x, self.y[index])


@dataclass
class Splits:
    """What a data source loads: training examples, validation examples if it has its own, and
    the name of each class (label ``i`` is ``class_names[i]``) if it knows them."""

    train: Examples
    validation: Examples | None = None
    class_names: list[str] | None = None


class PreparedData(NamedTuple):
    """What :func:`prepare_data` returns."""

    train: Examples
    validation: Examples | None
    normalization: dict | None  # {"mean": [...], "std": [...]} per channel
    class_names: list[str] | None


class DataSource(Configurable):
    """Base class of data sources (``train.data`` in a network file).

    Subclasses set ``type_name``, take their JSON keys as keyword arguments of ``__init__`` and
    implement :meth:`load`. Paths in options are relative to ``base_dir`` (the network file's folder).
    """

    reserved_keys = ("type", "normalize")
    listed_reserved_keys = ("normalize",)

    def load(self, base_dir: Path) -> Splits:
        raise NotImplementedError

    @classmethod
    def section(cls) -> str:
        """Where errors of this source point in the network file: ``train.data (TYPE)``."""
        return f"train.data ({cls.type_name})"

    def error(self, message: str, key: str | None = None) -> ConfigError:
        """A :class:`ConfigError` naming this source (raise it)."""
        return ConfigError(message, section=self.section(), key=key)


class ArraySource(DataSource):
    """Examples given as arrays (``net.fit(x, y, validation_data=(xv, yv))``): ``x`` of shape
    ``(N, *input_shape)`` (or without the channel axis for one channel), integer labels ``y``; not a
    JSON data source."""

    type_name = "arrays"

    def __init__(self, x, y, validation=None):
        self.x, self.y, self.validation = x, y, validation

    @classmethod
    def section(cls) -> str:
        return "fit(x, y)"

    def load(self, base_dir: Path) -> Splits:
        validation = None
        if self.validation is not None:
            if not (isinstance(self.validation, (tuple, list)) and len(self.validation) == 2):
                raise self.error("validation_data must be a pair (x, y) of arrays")
            validation = Examples(*self.validation)
        return Splits(Examples(self.x, self.y), validation)


def make_source(data_config: dict, registry) -> tuple[DataSource, bool]:
    """The source described by ``data_config`` (``train.data``), and its ``normalize`` flag."""
    if not isinstance(data_config, dict):
        raise ConfigError(f"must be an object with a \"type\"; got {show(data_config)}",
                          section="train.data")
    if "type" not in data_config:
        raise ConfigError("missing required key 'type'", key="type", section="train.data")
    options = {k: v for k, v in data_config.items() if k not in DataSource.reserved_keys}
    cls = None
    try:
        cls = registry.get(data_config["type"])
        cls.check_keys(options)
        normalize = bool_option(data_config.get("normalize", False), "normalize")
        return cls(**options), normalize
    except ConfigError as err:
        err.section = err.section or (cls.section() if cls else "train.data")
        raise


def prepare_data(data_config: dict, *, input_shape, num_classes: int, validation_split: float,
                 seed: int, registry, base_dir) -> PreparedData:
    """Load ``train.data`` and check it against the network before any training.

    Builds the source through ``registry`` (``data_config`` may also be a :class:`DataSource`
    itself, such as :class:`ArraySource`), loads it (paths relative to ``base_dir``), gives a
    missing channel axis to inputs of a one-channel network (``(N, H, W)`` for ``[1, H, W]``), and
    checks each split: per-example shape == ``input_shape``, labels in ``[0, num_classes)``, no
    NaN/Inf, at least one example. A source without its own validation set is split here when
    ``validation_split > 0`` (:func:`stratified_split` with ``seed``); a source with one ignores
    ``validation_split``. With ``normalize``, both splits
    are standardized per channel with the training split's statistics.

    :return: ``(train, validation or None, {"mean": [...], "std": [...]} or None, class names or
        None)``; the source's class names (:attr:`Splits.class_names`) must be strings, at most one
        per network output.
    """
    try:
        validation_split = float_option(validation_split, "validation_split", low=0, high=1,
                                        high_open=True)
    except ConfigError as err:
        err.section = "train"
        raise
    source, normalize = ((data_config, False) if isinstance(data_config, DataSource)
                         else make_source(data_config, registry))
    try:
        splits = source.load(Path(base_dir))
        input_shape = tuple(input_shape)
        train = _checked(splits.train, "training", input_shape, num_classes, source)
        validation = splits.validation
        if validation is not None:
            validation = _checked(validation, "validation", input_shape, num_classes, source)
        elif validation_split > 0:
            train, validation = stratified_split(train, validation_split, seed)
            for split, what in ((train, "training"), (validation, "validation")):
                if len(split) == 0:
                    raise source.error(f"validation_split={show(validation_split)} of "
                                       f"{len(train) + len(validation)} examples leaves no {what} "
                                       "examples (each split needs at least one)")
        class_names = _checked_names(splits.class_names, num_classes, source)
    except ConfigError as err:
        err.section = err.section or source.section()
        raise
    if not normalize:
        return PreparedData(train, validation, None, class_names)
    normalization = channel_statistics(train.x)
    train = Examples(apply_normalization(train.x, normalization), train.y)
    if validation is not None:
        validation = Examples(apply_normalization(validation.x, normalization), validation.y)
    return PreparedData(train, validation, normalization, class_names)


def _checked_names(names, num_classes: int, source: DataSource) -> list[str] | None:
    """The source's class names as a list of strings, or None; more names than classes is an error."""
    if names is None:
        return None
    names = list(names)
    if not all(isinstance(n, str) for n in names):
        raise source.error(f"class names must be strings; got {show(names)[:60]}")
    if len(names) > num_classes:
        raise source.error(f"the data has {len(names)} classes ({', '.join(names[:5])}"
                           f"{', ...' if len(names) > 5 else ''}) but the network has {num_classes} outputs")
    return names


def with_channel_axis(x: np.ndarray, input_shape: tuple) -> np.ndarray:
    """``x`` with the channel axis added when it is missing for a one-channel input:
    ``(N, H, W)`` for an input ``[1, H, W]``, ``(N, L)`` for ``[1, L]``."""
    return x[:, None] if x.ndim == len(input_shape) and input_shape[0] == 1 else x


def _checked(examples: Examples, what: str, input_shape: tuple, num_classes: int,
             source: DataSource) -> Examples:
    """``examples`` as float32/int64 arrays, or a ConfigError saying what does not fit the network."""
    lazy = isinstance(examples.x, LazyInputs)
    x, y = examples.x if lazy else np.asarray(examples.x), np.asarray(examples.y)
    if y.ndim != 1 or len(y) != len(x):
        raise source.error(f"the {what} set has {len(x)} inputs but labels of shape {y.shape}; "
                           f"expected ({len(x)},)")
    if len(y) == 0:
        raise source.error(f"the {what} set is empty (each split needs at least one example)")
    if not np.issubdtype(y.dtype, np.integer):
        raise source.error(f"the {what} labels must be integers; got dtype {y.dtype}")
    if x.dtype.kind not in "biuf":
        raise source.error(f"the {what} inputs must be real numbers; got dtype {x.dtype}")
    x = with_channel_axis(x, input_shape)
    if x.shape[1:] != input_shape:
        hint = ""
        if "resize" in source.config_keys() and x.ndim == 4 and x.shape[1] == input_shape[0]:
            hint = f" (set \"resize\": {show(input_shape[1:])})"
        raise source.error(f"the {what} inputs have shape {show(x.shape[1:])} per example but the "
                           f"network input shape is {show(input_shape)}{hint}")
    bad = (y < 0) | (y >= num_classes)
    if bad.any():
        i = int(np.argmax(bad))
        raise source.error(f"{what} label {int(y[i])} (example {i}) is out of range for a network "
                           f"with {num_classes} classes; labels must be in [0, {num_classes})")
    if lazy:  # decoded from bytes: finite float32 by construction
        return Examples(x, y.astype(np.int64))
    x = np.ascontiguousarray(x, dtype=np.float32)
    nonfinite = np.count_nonzero(~np.isfinite(x))
    if nonfinite:
        i = int(np.argmax(~np.isfinite(x).reshape(len(x), -1).all(axis=1)))
        raise source.error(f"the {what} inputs have {nonfinite} NaN/Inf values "
                           f"(the first in example {i})")
    return Examples(x, y.astype(np.int64))


def stratified_split(examples: Examples, validation_split: float,
                     seed: int) -> tuple[Examples, Examples]:
    """Split off ``round(N * validation_split)`` examples for validation, stratified by class.

    Class ``c`` (``n_c`` examples) gives ``floor(n_c * validation_split)`` of them, plus one for the
    classes with the largest remainders until the total is reached (ties and the examples taken are
    drawn with ``np.random.default_rng(seed)``, so a seed always gives the same split). Both parts
    keep the original order. Returns ``(train, validation)``.
    """
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(examples.y, return_counts=True)
    quota = counts * validation_split
    take = np.floor(quota).astype(np.int64)
    extra = int(np.floor(len(examples) * validation_split + 0.5)) - int(take.sum())
    order = rng.permutation(len(classes))
    order = order[np.argsort(take[order] - quota[order], kind="stable")]  # largest remainder first
    take[order[:extra]] += 1
    taken = np.zeros(len(examples), dtype=bool)
    for c, k in zip(classes, take):
        taken[rng.permutation(np.flatnonzero(examples.y == c))[:k]] = True
    return examples.take(np.flatnonzero(~taken)), examples.take(np.flatnonzero(taken))


def channel_statistics(x: np.ndarray) -> dict[str, list[float]]:
    """Per-channel (axis 1) mean and standard deviation of ``x``; a std of 0 is stored as 1."""
    if isinstance(x, LazyInputs):
        return x.channel_statistics()
    axes = (0, *range(2, x.ndim))
    mean = x.mean(axis=axes, dtype=np.float64)
    std = x.std(axis=axes, dtype=np.float64)
    return {"mean": mean.tolist(), "std": np.where(std > 0, std, 1.0).tolist()}


def apply_normalization(x: np.ndarray, normalization: dict | None) -> np.ndarray:
    """``(x - mean[c]) / std[c]`` per channel (axis 1), as float32 (the statistics of
    :func:`channel_statistics`, saved with a trained network); ``x`` as float32 for ``None``. Lazy
    inputs stay lazy (standardized when decoded)."""
    if isinstance(x, LazyInputs):
        return x.normalized(normalization)
    return standardize(x, normalization)


def batches(examples: Examples, batch_size: int, rng: np.random.Generator | None = None,
            shard=None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(x, y)`` batches of ``batch_size`` covering every example once (the last may be
    smaller): in order, or in a fresh permutation drawn from ``rng`` at each call; with ``rng``,
    ``shard(index)`` picks the part of each batch's indices to yield (a rank's share)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    n = len(examples)
    if rng is None:
        for start in range(0, n, batch_size):
            yield examples.x[start:start + batch_size], examples.y[start:start + batch_size]
        return
    order = rng.permutation(n)
    for start in range(0, n, batch_size):
        index = order[start:start + batch_size]
        if shard is not None:
            index = shard(index)
        yield examples.x[index], examples.y[index]
