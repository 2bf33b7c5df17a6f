"""Data augmentation (``train.augment``): a list of random transformations of training batches.

Each augmentation draws its per-sample parameters for a whole NCHW float32 batch from a NumPy
``Generator`` (:meth:`Augmentation.draw`), then transforms the batch in one Numba kernel call
(:meth:`Augmentation.apply`, :mod:`cnnrun.engine.augment_kernels`): the same generator state gives
the same batch. Parameters follow torchvision's ``transforms`` of the same name.

    augmenter = make_augmenter([{"type": "random_crop", "padding": 4}, {"type": "horizontal_flip"}])
    augmenter.output_shape((3, 32, 32))        # checks the list against the examples' shape
    x = augmenter(x, np.random.default_rng(0))
"""

from __future__ import annotations

import math

import numpy as np

from . import augment_kernels as kernels
from .data import Examples, apply_normalization
from .errors import ConfigError, did_you_mean
from .jit import launch
from .options import Configurable, choice_option, float_option, int_tuple, show


def _pair(value, key: str, *, low: float, low_open: bool = False) -> tuple[float, float]:
    """A list ``[a, b]`` of numbers with ``low <= a <= b``."""
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ConfigError(f"{key} must be a list of 2 numbers [min, max]; got {key}={show(value)}", key=key)
    a, b = (float_option(v, key, low=low, low_open=low_open) for v in value)
    if a > b:
        raise ConfigError(f"{key} must be [min, max] with min <= max; got {key}={show(value)}", key=key)
    return a, b


def _probability(value) -> float:
    return float_option(value, "p", low=0.0, high=1.0)


def _channel_values(value, key: str, *, positive: bool = False) -> np.ndarray:
    """A number or a list of numbers (one per channel), as float32."""
    items = value if isinstance(value, (list, tuple)) else [value]
    if not items:
        raise ConfigError(f"{key} must be a number or a list of numbers; got {key}={show(value)}", key=key)
    numbers = [float_option(v, key, low=0.0 if positive else None, low_open=positive) for v in items]
    return np.asarray(numbers, dtype=np.float32)


def _log_uniform_boxes(rng, n: int, area: int, scale, ratio, attempts: int = 10):
    """``attempts`` candidate boxes per sample as torchvision draws them: area ``area * U(scale)``,
    aspect ratio ``exp(U(log ratio))``; returns the rounded ``(heights, widths)``, ``(n, attempts)``."""
    target = area * rng.uniform(scale[0], scale[1], size=(n, attempts))
    aspect = np.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1]), size=(n, attempts)))
    return np.round(np.sqrt(target / aspect)).astype(np.int64), np.round(np.sqrt(target * aspect)).astype(np.int64)


def _first(valid: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Per row, the value at the first ``valid`` column (0 where none is)."""
    index = np.argmax(valid, axis=1)
    return np.where(valid.any(axis=1), values[np.arange(len(values)), index], 0)


class Augmentation(Configurable):
    """Base class: options are the keyword arguments of ``__init__``; subclasses implement
    :meth:`output_shape`, :meth:`draw` and :meth:`apply`."""

    def output_shape(self, shape: tuple) -> tuple:
        """The per-example ``(C, H, W)`` this gives for ``shape`` (ConfigError if it cannot)."""
        return shape

    def draw(self, n: int, shape: tuple, rng: np.random.Generator) -> dict:
        """Per-sample parameters for ``n`` examples of ``shape``, drawn from ``rng``."""
        return {}

    def apply(self, x: np.ndarray, params: dict) -> np.ndarray:
        """The transformed batch (a new array)."""
        raise NotImplementedError


def _run(kernel, x: np.ndarray, out_shape: tuple, *args) -> np.ndarray:
    out = np.empty(out_shape, dtype=np.float32)
    launch(kernel, out.size, np.ascontiguousarray(x, dtype=np.float32), *args, out)
    return out


class RandomCrop(Augmentation):
    """Pad by ``padding`` (rows and columns, each side), then crop ``size`` at a uniformly drawn
    position: torchvision ``RandomCrop(size, padding, padding_mode="constant" | "reflect")``.

    Shape: ``(C, H, W) -> (C, *size)``; ``size`` defaults to ``(H, W)``."""

    type_name = "random_crop"

    def __init__(self, size=None, padding=0, padding_mode="zero"):
        self.size = None if size is None else int_tuple(size, 2, "size")
        self.padding = int_tuple(padding, 2, "padding", minimum=0)
        self.padding_mode = choice_option(padding_mode, "padding_mode", ("zero", "reflect"))

    def output_shape(self, shape):
        (ph, pw), (oh, ow) = self.padding, self.size or shape[1:]
        if oh > shape[1] + 2 * ph or ow > shape[2] + 2 * pw:
            raise ConfigError(f"size {show([oh, ow])} is larger than the padded image "
                              f"{show([shape[1] + 2 * ph, shape[2] + 2 * pw])}", key="size")
        if self.padding_mode == "reflect" and (ph >= shape[1] or pw >= shape[2]):
            raise ConfigError(f"padding_mode \"reflect\" needs padding smaller than the image "
                              f"{show(list(shape[1:]))}; got padding={show(list(self.padding))}", key="padding")
        return (shape[0], oh, ow)

    def draw(self, n, shape, rng):
        _, oh, ow = self.output_shape(shape)
        (ph, pw) = self.padding
        return {"top": rng.integers(0, shape[1] + 2 * ph - oh + 1, size=n),
                "left": rng.integers(0, shape[2] + 2 * pw - ow + 1, size=n)}

    def apply(self, x, params):
        shape = (len(x), *self.output_shape(x.shape[1:]))
        return _run(kernels.crop_kernel, x, shape, params["top"], params["left"], *self.padding,
                    self.padding_mode == "reflect")


class HorizontalFlip(Augmentation):
    """Mirror left-right with probability ``p``: torchvision ``RandomHorizontalFlip(p)``."""

    type_name = "horizontal_flip"
    horizontal = True

    def __init__(self, p=0.5):
        self.p = _probability(p)

    def draw(self, n, shape, rng):
        return {"flip": rng.random(n) < self.p}

    def apply(self, x, params):
        return _run(kernels.flip_kernel, x, x.shape, params["flip"], self.horizontal)


class VerticalFlip(HorizontalFlip):
    """Mirror top-bottom with probability ``p``: torchvision ``RandomVerticalFlip(p)``."""

    type_name = "vertical_flip"
    horizontal = False


class RandomResizedCrop(Augmentation):
    """Crop a box of random area (``scale`` of the image) and aspect ratio (``ratio``, drawn
    log-uniformly; 10 tries, then the whole image clipped to ``ratio``), resized bilinearly to
    ``size``: torchvision ``RandomResizedCrop(size, scale, ratio, antialias=False)`` on tensors.

    Shape: ``(C, H, W) -> (C, *size)``; ``size`` defaults to ``(H, W)``."""

    type_name = "random_resized_crop"

    def __init__(self, size=None, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
        self.size = None if size is None else int_tuple(size, 2, "size")
        self.scale = _pair(scale, "scale", low=0.0, low_open=True)
        self.ratio = _pair(ratio, "ratio", low=0.0, low_open=True)

    def output_shape(self, shape):
        return (shape[0], *(self.size or shape[1:]))

    def draw(self, n, shape, rng):
        height, width = shape[1:]
        h, w = _log_uniform_boxes(rng, n, height * width, self.scale, self.ratio)
        valid = (w > 0) & (w <= width) & (h > 0) & (h <= height)
        found = valid.any(axis=1)
        h, w = _first(valid, h), _first(valid, w)
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            fallback = (int(round(width / self.ratio[0])), width)
        elif in_ratio > self.ratio[1]:
            fallback = (height, int(round(height * self.ratio[1])))
        else:
            fallback = (height, width)
        h, w = np.where(found, h, fallback[0]), np.where(found, w, fallback[1])
        top = rng.integers(0, height - h + 1)
        left = rng.integers(0, width - w + 1)
        centred = ~found
        top[centred], left[centred] = (height - h[centred]) // 2, (width - w[centred]) // 2
        return {"top": top, "left": left, "height": h, "width": w}

    def apply(self, x, params):
        shape = (len(x), *self.output_shape(x.shape[1:]))
        return _run(kernels.resized_crop_kernel, x, shape, params["top"], params["left"], params["height"],
                    params["width"])


class ColorJitter(Augmentation):
    """Brightness, contrast and saturation each scaled by a factor drawn from
    ``U[max(0, 1 - v), 1 + v]`` (``v`` the option; 0 leaves it out), in a random order per sample,
    on images in [0, 1]: torchvision ``ColorJitter(brightness, contrast, saturation)`` (no hue).
    Saturation needs 1 (a no-op) or 3 channels, contrast 1 or 3."""

    type_name = "color_jitter"
    OPS = ("brightness", "contrast", "saturation")

    def __init__(self, brightness=0.0, contrast=0.0, saturation=0.0):
        self.amounts = tuple(float_option(v, key, low=0.0)
                             for v, key in zip((brightness, contrast, saturation), self.OPS))

    def output_shape(self, shape):
        if shape[0] not in (1, 3) and any(self.amounts[1:]):
            raise ConfigError(f"contrast and saturation need images of 1 or 3 channels; the examples "
                              f"have {shape[0]}", key="contrast" if self.amounts[1] else "saturation")
        return shape

    def draw(self, n, shape, rng):
        enabled = np.flatnonzero(np.asarray(self.amounts) > 0)
        factors = np.ones((n, 3))
        for k in enabled:
            factors[:, k] = rng.uniform(max(0.0, 1 - self.amounts[k]), 1 + self.amounts[k], size=n)
        order = enabled[np.argsort(rng.random((n, len(enabled))), axis=1)]
        return {"factors": factors, "order": order.astype(np.int64)}

    def apply(self, x, params):
        return _run(kernels.color_jitter_kernel, x, x.shape, params["factors"], params["order"])


class Normalize(Augmentation):
    """``(x - mean[c]) / std[c]`` per channel (a number applies to every channel): torchvision
    ``Normalize(mean, std)``. Not random: fixed statistics where the ``normalize`` data option
    computes them. It must come last, and the trainer applies it to validation inputs too and saves
    it as the checkpoint's normalization (eval and predict apply it)."""

    type_name = "normalize"

    def __init__(self, mean, std):
        self.mean = _channel_values(mean, "mean")
        self.std = _channel_values(std, "std", positive=True)
        self.statistics = {"mean": mean, "std": std}

    def output_shape(self, shape):
        for key, values in (("mean", self.mean), ("std", self.std)):
            if len(values) not in (1, shape[0]):
                raise ConfigError(f"{key} has {len(values)} values but the examples have {shape[0]} channels; "
                                  f"give one per channel (or one for all)", key=key)
        return shape

    def apply(self, x, params):
        mean, std = (np.broadcast_to(v, x.shape[1]).astype(np.float32) for v in (self.mean, self.std))
        return _run(kernels.normalize_kernel, x, x.shape, mean, std)


class RandomErasing(Augmentation):
    """With probability ``p``, set a box of random area (``scale`` of the image) and aspect ratio
    (``ratio``, log-uniform; 10 tries, else nothing) to ``value`` (cutout): torchvision
    ``RandomErasing(p, scale, ratio, value)``."""

    type_name = "random_erasing"

    def __init__(self, p=0.5, scale=(0.02, 0.33), ratio=(0.3, 3.3), value=0.0):
        self.p = _probability(p)
        self.scale = _pair(scale, "scale", low=0.0, low_open=True)
        self.ratio = _pair(ratio, "ratio", low=0.0, low_open=True)
        self.value = float_option(value, "value")

    def draw(self, n, shape, rng):
        height, width = shape[1:]
        erase = rng.random(n) < self.p
        w, h = _log_uniform_boxes(rng, n, height * width, self.scale, self.ratio)  # torchvision's h, w
        valid = (h < height) & (w < width)
        h, w = _first(valid, h), _first(valid, w)
        h, w = np.where(erase, h, 0), np.where(erase, w, 0)
        top = rng.integers(0, height - h + 1)
        left = rng.integers(0, width - w + 1)
        return {"top": top, "left": left, "height": h, "width": w}

    def apply(self, x, params):
        return _run(kernels.erase_kernel, x, x.shape, params["top"], params["left"], params["height"],
                    params["width"], np.float32(self.value))


AUGMENTATIONS = {cls.type_name: cls for cls in (RandomCrop, HorizontalFlip, VerticalFlip, RandomResizedCrop,
                                                 ColorJitter, Normalize, RandomErasing)}


class Augmenter:
    """The augmentations of ``train.augment`` in order; ``augmenter(x, rng)`` transforms a batch."""

    def __init__(self, steps: list[Augmentation]):
        self.steps = steps

    def __bool__(self) -> bool:
        return bool(self.steps)

    def normalization(self, channels: int) -> dict | None:
        """The final ``normalize`` step's ``{"mean": [...], "std": [...]}`` (one value per channel),
        or None: the normalization that validation, eval and predict inputs need too."""
        if not self.steps or not isinstance(self.steps[-1], Normalize):
            return None
        return {k: [float(v) for v in np.broadcast_to(np.asarray(value, dtype=np.float64), channels)]
                for k, value in self.steps[-1].statistics.items()}

    def output_shape(self, shape: tuple) -> tuple:
        """The per-example shape after every step, for examples of ``shape`` ``(C, H, W)``; a
        ConfigError naming the step if one does not fit."""
        shape = tuple(shape)
        for index, step in enumerate(self.steps):
            if len(shape) != 3:
                raise ConfigError(f"augmentation needs image examples (C, H, W); got shape {show(shape)}",
                                  section=_section(index, step.type_name))
            try:
                shape = step.output_shape(shape)
            except ConfigError as err:
                err.section = _section(index, step.type_name)
                raise
        return shape

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        for step in self.steps:
            x = step.apply(x, step.draw(len(x), x.shape[1:], rng))
        return x


def _section(index: int, type_name: str) -> str:
    return f"train.augment[{index}] ({type_name})"


def make_augmenter(specs) -> Augmenter:
    """The :class:`Augmenter` of a ``train.augment`` list, every key checked (a ConfigError
    names the index, type, key and value)."""
    if not isinstance(specs, list):
        raise ConfigError(f"must be a list of augmentations; got {show(specs)}", section="train.augment")
    steps = []
    for index, spec in enumerate(specs):
        if not isinstance(spec, dict) or "type" not in spec:
            raise ConfigError(f"must be an object with a \"type\"; got {show(spec)}",
                              section=f"train.augment[{index}]")
        kind = spec["type"]
        if kind not in AUGMENTATIONS:
            raise ConfigError(f"unknown augmentation type {show(kind)}{did_you_mean(kind, AUGMENTATIONS)}; "
                              f"known: {', '.join(AUGMENTATIONS)}", section=f"train.augment[{index}]", key="type")
        cls = AUGMENTATIONS[kind]
        options = {k: v for k, v in spec.items() if k != "type"}
        try:
            cls.check_keys(options)
            steps.append(cls(**options))
        except ConfigError as err:
            err.section = _section(index, kind)
            raise
    for index, step in enumerate(steps[:-1]):
        if isinstance(step, Normalize):
            raise ConfigError("must be the last augmentation (its statistics are applied to validation, eval and "
                              "predict inputs too, as the data's normalize)", section=_section(index, "normalize"))
    return Augmenter(steps)


def augment_rng(seed: int) -> np.random.Generator:
    """The generator the augmentations of a run draw from: ``default_rng([seed, 1])``, a stream
    of its own (the run's shuffling uses ``default_rng(seed)``)."""
    return np.random.default_rng([seed, 1])


def checked_augmenter(specs, input_shape: tuple, data_normalized: bool = False) -> Augmenter:
    """:func:`make_augmenter`, checked to give examples of the network's ``input_shape`` from
    training examples of that shape, and to end in ``normalize`` only when the data's
    ``normalize`` (``data_normalized``) is off."""
    augmenter = make_augmenter(specs)
    shape = augmenter.output_shape(input_shape)
    if data_normalized and augmenter.normalization(shape[0]) is not None:
        raise ConfigError("the data is normalized already (train.data has \"normalize\": true); use one of the "
                          "two", section=_section(len(augmenter.steps) - 1, "normalize"))
    if tuple(shape) != tuple(input_shape):
        raise ConfigError(f"the augmentations turn examples of shape {show(list(input_shape))} into "
                          f"{show(list(shape))}, but the network input shape is {show(list(input_shape))}",
                          section="train.augment")
    return augmenter


def training_augmenter(specs, input_shape: tuple, normalization: dict | None,
                       validation: Examples | None) -> tuple[Augmenter, dict | None, Examples | None]:
    """A run's augmenter (:func:`checked_augmenter`; ``normalization`` is the data's, or None), and
    the run's normalization and validation examples: a final ``normalize`` step becomes the
    normalization (saved in checkpoints, applied by eval and predict) and is applied to ``validation``."""
    augmenter = checked_augmenter(specs, input_shape, data_normalized=normalization is not None)
    fixed = augmenter.normalization(input_shape[0])
    if fixed is None:
        return augmenter, normalization, validation
    if validation is not None:
        validation = Examples(apply_normalization(validation.x, fixed), validation.y)
    return augmenter, fixed, validation
