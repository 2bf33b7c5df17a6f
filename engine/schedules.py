"""Learning-rate schedules (``train.schedule``), one learning rate per epoch, epochs counted from 1.

Every schedule takes ``warmup_epochs`` (W, default 0): epoch e <= W uses ``base_lr * e / W`` (so
the first epoch uses base_lr / W, never 0, and epoch W the full base_lr). The schedule proper then
runs on t = e - W - 1 = 0, 1, ... over the T = total_epochs - W epochs left:

- ``constant``: base_lr.
- ``step``: base_lr * gamma ** (t // step_size). PyTorch: ``StepLR``.
- ``cosine``: min_lr + (base_lr - min_lr) * (1 + cos(pi * t / T)) / 2. PyTorch: ``CosineAnnealingLR``
  with ``T_max = T``, stepped once per epoch (so the last epoch is one step short of min_lr).
"""

from __future__ import annotations

import math
from typing import Any

from .errors import ConfigError, did_you_mean
from .options import Configurable, float_option, int_option, show

SECTION = "train.schedule"


class Schedule(Configurable):
    """A schedule type: its JSON keys are the keyword arguments of ``__init__``."""

    def __init__(self, warmup_epochs=0):
        self.warmup_epochs = int_option(warmup_epochs, "warmup_epochs", minimum=0)

    def check(self, base_lr: float | None, total_epochs: int) -> None:
        """Checks that need the base learning rate (when known) or the number of epochs."""
        if self.warmup_epochs > total_epochs:
            raise ConfigError(f"warmup_epochs ({self.warmup_epochs}) must be <= the number of epochs "
                              f"({total_epochs})", key="warmup_epochs")

    def lr_after_warmup(self, t: int, base_lr: float, total: int) -> float:
        """The learning rate ``t`` epochs (from 0) after warmup, of ``total`` such epochs."""
        raise NotImplementedError

    def lr(self, epoch: int, base_lr: float, total_epochs: int) -> float:
        """The learning rate of ``epoch`` (1 .. total_epochs) for ``base_lr`` (the optimizer's lr)."""
        if not 1 <= epoch <= total_epochs:
            raise ValueError(f"epoch must be in [1, {total_epochs}]; got {epoch}")
        warmup = self.warmup_epochs
        if epoch <= warmup:
            return float(base_lr * epoch / warmup)
        return float(self.lr_after_warmup(epoch - warmup - 1, base_lr, total_epochs - warmup))


class Constant(Schedule):
    """base_lr after warmup."""

    type_name = "constant"

    def lr_after_warmup(self, t, base_lr, total):
        return base_lr


class Step(Schedule):
    """base_lr * gamma ** (t // step_size). PyTorch: ``StepLR``."""

    type_name = "step"

    def __init__(self, step_size, gamma=0.1, warmup_epochs=0):
        super().__init__(warmup_epochs)
        self.step_size = int_option(step_size, "step_size")
        self.gamma = float_option(gamma, "gamma", low=0, low_open=True)

    def lr_after_warmup(self, t, base_lr, total):
        return base_lr * self.gamma ** (t // self.step_size)


class Cosine(Schedule):
    """min_lr + (base_lr - min_lr) * (1 + cos(pi * t / T)) / 2. PyTorch: ``CosineAnnealingLR``."""

    type_name = "cosine"

    def __init__(self, min_lr=0.0, warmup_epochs=0):
        super().__init__(warmup_epochs)
        self.min_lr = float_option(min_lr, "min_lr", low=0)

    def check(self, base_lr, total_epochs):
        super().check(base_lr, total_epochs)
        if base_lr is not None and self.min_lr > base_lr:
            raise ConfigError(f"min_lr ({show(self.min_lr)}) must be <= the optimizer's lr "
                              f"({show(base_lr)})", key="min_lr")

    def lr_after_warmup(self, t, base_lr, total):
        return self.min_lr + (base_lr - self.min_lr) * (1 + math.cos(math.pi * t / total)) / 2


SCHEDULES: dict[str, type[Schedule]] = {s.type_name: s for s in (Constant, Step, Cosine)}


def check_schedule(schedule: dict[str, Any] | None, total_epochs: int,
                   base_lr: float | None = None) -> Schedule:
    """Validate ``schedule`` (``None`` or ``{}`` is constant) for ``total_epochs``; return it built.

    ``min_lr`` is checked against ``base_lr`` when that is given. Errors are :class:`ConfigError`
    with section ``train.schedule``.
    """
    schedule = {} if schedule is None else schedule
    try:
        if not isinstance(schedule, dict):
            raise ConfigError(f"must be an object; got {show(schedule)}")
        type_name = schedule.get("type", "constant")
        cls = SCHEDULES.get(type_name) if isinstance(type_name, str) else None
        if cls is None:
            known = ", ".join(f'"{t}"' for t in SCHEDULES)
            raise ConfigError(f"unknown schedule type {show(type_name)}{did_you_mean(type_name, SCHEDULES)}; "
                              f"known: {known}", key="type")
        options = {k: v for k, v in schedule.items() if k != "type"}
        cls.check_keys(options)
        built = cls(**options)
        built.check(base_lr, total_epochs)
    except ConfigError as err:
        err.section = SECTION
        raise
    return built


def lr_at(epoch: int, base_lr: float, schedule: dict[str, Any] | None, total_epochs: int) -> float:
    """The learning rate of ``epoch`` (1 .. total_epochs) for ``base_lr``: :meth:`Schedule.lr` of
    ``schedule`` built (a training run builds its schedule once and asks it every epoch)."""
    return check_schedule(schedule, total_epochs, base_lr).lr(epoch, base_lr, total_epochs)
