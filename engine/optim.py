"""Optimizers: the plugin protocol, the update loop over a network's parameters, checkpoint state.

The built-in optimizers (``sgd``, ``adam``, ``adamw``) live in :mod:`cnnrun.plugins.optimizers`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .device import backend_of
from .errors import CnnrunError, ConfigError
from .options import Configurable, float_option, show

SECTION = "train.optimizer"


class Optimizer(Configurable):
    """Base class of optimizers (``train.optimizer`` in a network file).

    Subclasses set ``type_name``, take their JSON keys (``lr`` first) as keyword arguments of
    ``__init__``, name their per-parameter state arrays in ``slots`` and implement :meth:`update`
    (NumPy arrays) and, to train on a GPU, ``update_cuda`` (the same step on device arrays).
    ``step`` counts the updates done (1 during the first ``update``). The state lives on the
    device of the parameters.
    """

    slots: tuple[str, ...] = ()

    def __init__(self, lr: float):
        self.lr = float_option(lr, "lr", low=0, low_open=True)
        self.step = 0
        self.state: dict[str, dict[str, dict[str, np.ndarray]]] = {}  # layer -> param -> slot -> array
        self._scratch: dict[tuple[str, int], np.ndarray] = {}
        self._unchecked = False  # state loaded without the parameters to check it against

    def apply(self, params, grads, lr: float) -> None:
        """One update of every parameter, in place, with learning rate ``lr``."""
        if self._unchecked:
            self.check_state(params)
        self.step += 1
        for layer, arrays in params.items():
            for name, p in arrays.items():
                backend = backend_of(p)
                layer_state = self.state.setdefault(layer, {})
                state = layer_state.get(name)
                if state is None:  # first step: zeroed slots
                    state = layer_state[name] = {slot: backend.zeros(p.shape, p.dtype) for slot in self.slots}
                elif any(isinstance(a, np.ndarray) != isinstance(p, np.ndarray) for a in state.values()):
                    state.update((slot, _like(a, p)) for slot, a in state.items())  # the network moved
                self.implementation(backend.name)(p, grads[layer][name], state, lr)

    def update(self, param: np.ndarray, grad: np.ndarray, state: dict[str, np.ndarray], lr: float) -> None:
        """Update ``param`` in place from ``grad`` (left unchanged) and ``state`` (its slots)."""
        raise NotImplementedError

    def implementation(self, device: str):
        """The update method for ``device`` (``update`` on the CPU, else ``update_<device>``); a
        :class:`CnnrunError` if this optimizer has none."""
        method = self.update if device == "cpu" else getattr(self, f"update_{device}", None)
        if method is None:
            raise CnnrunError(f"optimizer '{self.type_name}' has no {device} implementation; add "
                              f"update_{device} to it or train on another device")
        return method

    def scratch(self, like: np.ndarray, index: int = 0) -> np.ndarray:
        """Scratch array number ``index``, shaped like ``like`` (not zeroed).

        One flat buffer per dtype and index, grown to the largest parameter and then reused, so
        updates allocate nothing after the first step.
        """
        key = (like.dtype.str, index)
        flat = self._scratch.get(key)
        if flat is None or flat.size < like.size:
            flat = self._scratch[key] = np.empty(like.size, like.dtype)
        return flat[:like.size].reshape(like.shape)

    # -- checkpoints -----------------------------------------------------------------------------
    def state_arrays(self) -> dict[str, np.ndarray]:
        """The state as flat ``{"layer/param/slot": array}``: on the CPU the arrays themselves, not
        copies; device arrays as host copies."""
        return {f"{layer}/{name}/{slot}": array if isinstance(array, np.ndarray) else array.copy_to_host()
                for layer, params in self.state.items()
                for name, slots in params.items()
                for slot, array in slots.items()}

    def load_state_arrays(self, arrays: dict[str, np.ndarray], step: int, params=None) -> None:
        """Restore what :meth:`state_arrays` gave (copied) and the step count saved beside it.

        Keys must name one of this optimizer's ``slots``. With ``params`` (the network's, layer ->
        name -> array) the state is checked against them now, else on the next :meth:`apply`.
        """
        if not isinstance(step, (int, np.integer)) or isinstance(step, bool) or step < 0:
            raise CnnrunError(f"optimizer state: step must be an integer >= 0; got step={show(step)}")
        state: dict[str, dict[str, dict[str, np.ndarray]]] = {}
        for key, array in arrays.items():
            parts = key.rsplit("/", 2)
            if len(parts) != 3 or parts[2] not in self.slots:
                slots = ", ".join(self.slots) or "none"
                raise CnnrunError(f"optimizer state: unknown key '{key}'; {self.type_name} keeps "
                                  f"'layer/param/slot' with slots: {slots}")
            layer, name, slot = parts
            state.setdefault(layer, {}).setdefault(name, {})[slot] = np.array(array)
        self.state, self.step = state, int(step)
        self._unchecked = True
        if params is not None:
            self.check_state(params)

    def check_state(self, params) -> None:
        """Check loaded state against the parameters: same names and shapes, every slot after step 0.

        Casts the state to each parameter's dtype and moves it to the parameter's device.
        """
        for layer, names in self.state.items():
            for name, slots in names.items():
                p = params.get(layer, {}).get(name)
                if p is None:
                    raise CnnrunError(f"optimizer state: '{layer}/{name}' is not a parameter of the network")
                for slot, array in slots.items():
                    if array.shape != p.shape:
                        raise CnnrunError(f"optimizer state: '{layer}/{name}/{slot}' has shape "
                                          f"{show(array.shape)}, the parameter {show(p.shape)}")
                    slots[slot] = _like(array, p)
        if self.step > 0:
            for layer, names in params.items():
                for name in names:
                    missing = [s for s in self.slots if s not in self.state.get(layer, {}).get(name, {})]
                    if missing:
                        raise CnnrunError(f"optimizer state: '{layer}/{name}/{missing[0]}' is missing "
                                          f"(state saved at step {self.step})")
        self._unchecked = False


def _like(array, param):
    """``array`` in ``param``'s dtype, on ``param``'s device (unchanged if it already is)."""
    if isinstance(param, np.ndarray) and not isinstance(array, np.ndarray):
        array = array.copy_to_host()
    return backend_of(param).asarray(array, param.dtype)


def make_optimizer(config: dict[str, Any], registry) -> Optimizer:
    """Build the optimizer that ``config`` (``train.optimizer``: ``{"type": ..., options}``) names.

    Errors are :class:`ConfigError` with section ``train.optimizer (TYPE)``.
    """
    if not isinstance(config, dict) or "type" not in config:
        known = ", ".join(sorted(registry.classes))
        raise ConfigError(f"must be an object with a \"type\" (one of: {known}); got {show(config)}",
                          key="type", section=SECTION)
    try:
        cls = registry.get(config["type"])
    except ConfigError as err:
        err.section = SECTION
        raise
    options = {k: v for k, v in config.items() if k != "type"}
    try:
        cls.check_keys(options)
        return cls(**options)
    except ConfigError as err:
        err.section = f"{SECTION} ({cls.type_name})"
        raise
