"""Normalizers for layer options (Keras' ``standardize_tuple``): check a JSON value, return a clean one.

Each raises :class:`ConfigError` naming the key and the value it got; the layer name is added by
:meth:`cnnrun.engine.layer.Layer.from_config`.
"""

from __future__ import annotations

import functools
import inspect
import json
import math
from numbers import Real
from typing import Any, ClassVar

from .errors import ConfigError, did_you_mean


def show(value) -> str:
    """A value as the user wrote it in JSON (tuples shown as lists)."""
    try:
        return json.dumps(list(value) if isinstance(value, tuple) else value)
    except (TypeError, ValueError):
        return repr(value)


def json_safe(value):
    """``value`` with every NaN or infinite float replaced by ``None`` (JSON has no NaN: it writes null)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def int_option(value, key: str, *, minimum: int = 1) -> int:
    """An integer >= ``minimum``."""
    if not _is_int(value):
        raise ConfigError(f"{key} must be an integer; got {key}={show(value)}", key=key)
    if value < minimum:
        raise ConfigError(f"{key} must be >= {minimum}; got {key}={show(value)}", key=key)
    return value


def int_tuple(value, n: int, key: str, *, minimum: int = 1) -> tuple[int, ...]:
    """An integer, or a list of ``n`` integers, each >= ``minimum``; returned as an ``n``-tuple."""
    what = "positive" if minimum == 1 else f">= {minimum}"
    items = [value] * n if _is_int(value) else value
    if not isinstance(items, (list, tuple)) or len(items) != n or not all(_is_int(v) for v in items):
        raise ConfigError(f"{key} must be an integer or a list of {n} integers; got {key}={show(value)}",
                          key=key)
    if any(v < minimum for v in items):
        raise ConfigError(f"{key} must be {what}; got {key}={show(value)}", key=key)
    return tuple(items)


def bool_option(value, key: str) -> bool:
    """``true`` or ``false``."""
    if not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false; got {key}={show(value)}", key=key)
    return value


def float_option(value, key: str, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False) -> float:
    """A number inside ``[low, high]`` (ends excluded where ``*_open``)."""
    if not isinstance(value, Real) or isinstance(value, bool) or not math.isfinite(value):
        raise ConfigError(f"{key} must be a finite number; got {key}={show(value)}", key=key)
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        left = "(" if low_open or low is None else "["
        right = ")" if high_open or high is None else "]"
        span = f"{left}{'-inf' if low is None else low}, {'inf' if high is None else high}{right}"
        raise ConfigError(f"{key} must be in {span}; got {key}={show(value)}", key=key)
    return float(value)


def choice_option(value, key: str, choices) -> str:
    """One of ``choices``."""
    if value not in choices:
        listed = ", ".join(f'"{c}"' for c in choices)
        raise ConfigError(f"{key} must be one of {listed}; got {key}={show(value)}", key=key)
    return value


NOT_OPTIONS = ("self", "name")


@functools.lru_cache(maxsize=None)
def _config_keys(init) -> tuple[tuple[str, Any], ...]:
    """``(key, default)`` of an ``__init__`` (inspected once per class: it is slow)."""
    return tuple((p.name, p.default) for p in inspect.signature(init).parameters.values()
                 if p.name not in NOT_OPTIONS and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD))


class Configurable:
    """A class configured from a JSON object whose keys are the keyword arguments of ``__init__``.

    Keys with a default are optional, the rest required; ``type_name`` is the JSON ``"type"``.
    Layers, data sources and optimizers are all Configurable.
    """

    type_name: ClassVar[str] = ""
    reserved_keys: ClassVar[tuple[str, ...]] = ("type",)
    listed_reserved_keys: ClassVar[tuple[str, ...]] = ()
    """Reserved keys that the owner reads itself but that belong to this class's JSON object all the
    same (a data source's ``normalize``): listed with the ``__init__`` keys in an unknown-key error."""

    @classmethod
    def config_keys(cls) -> dict[str, Any]:
        """The accepted keys, each with its default (``inspect.Parameter.empty`` if required)."""
        return dict(_config_keys(cls.__init__))

    @classmethod
    def check_keys(cls, config: dict[str, Any]) -> None:
        """Reject unknown keys (suggesting the nearest) and missing required ones."""
        accepted = cls.config_keys()
        for key in config:
            if key not in accepted:
                hint = did_you_mean(key, list(accepted) + list(cls.reserved_keys))
                keys = ", ".join([*accepted, *cls.listed_reserved_keys]) or "none"
                raise ConfigError(f"unknown key '{key}'{hint}; {cls.type_name} accepts: {keys}", key=key)
        for key, default in accepted.items():
            if default is inspect.Parameter.empty and key not in config:
                raise ConfigError(f"missing required key '{key}'", key=key)

    def resolved_config(self, config: dict[str, Any]) -> dict[str, Any]:
        """``config`` with every accepted key present (defaults filled in)."""
        return {k: config.get(k, d) for k, d in self.config_keys().items()}


def configured(registry, config: dict, section: str):
    """An instance of the :class:`Configurable` class ``registry`` holds for ``config["type"]``,
    built with the other keys of ``config`` as its options (a JSON ``{"type": ..., options}``).
    Errors are :class:`ConfigError` in ``section`` (an unknown type) or ``section (type)`` (an option)."""
    try:
        cls = registry.get(config["type"])
    except ConfigError as err:
        err.section = section
        raise
    options = {k: v for k, v in config.items() if k != "type"}
    try:
        cls.check_keys(options)
        return cls(**options)
    except ConfigError as err:
        err.section = f"{section} ({cls.type_name})"
        raise
