"""Optimizers: the plugin protocol, the update loop over a network's parameters, checkpoint state.

The built-in optimizers (``sgd``, ``adam``, ``adamw``) live in :mod:`cnnrun.plugins.optimizers`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import CnnrunError, ConfigError
from .options import Configurable, configured, float_option, show

SECTION = "train.optimizer"


class Optimizer(Configurable):
    """Base class of optimizers (``train.optimizer`` in a network file).

    Subclasses set ``type_name``, take their JSON keys (``lr`` first) as keyword arguments of
    ``__init__``, name their per-parameter state arrays in ``slots`` and the kernels they call in
    ``kernels``, and implement :meth:`update` once for every device, through ``kernels`` (the
    device's table). ``step`` counts the updates done (1 during the first ``update``). The state
    lives on the optimizer's device (:meth:`to`; :func:`make_optimizer` starts on the CPU).
    """

    slots: tuple[str, ...] = ()
    kernels: tuple[str, ...] = ()

    def __init__(self, lr: float):
        self.lr = float_option(lr, "lr", low=0, low_open=True)
        self.step = 0
        self.state: dict[str, dict[str, dict[str, np.ndarray]]] = {}  # layer -> param -> slot -> array
        self._device = None
        self._scratch: dict[tuple[str, int], np.ndarray] = {}
        self._unchecked = False  # state loaded without the parameters to check it against

    @property
    def device(self):
        """The device whose kernels update the parameters (set by :meth:`to`)."""
        if self._device is None:
            raise CnnrunError(f"optimizer '{self.type_name}' has no device yet: call to(device) first")
        return self._device

    def to(self, device) -> "Optimizer":
        """Update parameters on ``device`` (an opened device: the network's ``backend``) from now on,
        moving the state there; a :class:`CnnrunError` if a kernel is missing there."""
        missing = [op for op in self.kernels if op not in device.kernels]
        if missing:
            raise CnnrunError(f"optimizer '{self.type_name}' has no {device.name} implementation (no kernel "
                              f"{', '.join(missing)}); register {device.name} kernels for it or train on "
                              f"another device")
        previous, self._device = self._device, device
        if previous is not None and previous is not device:
            for slots in (s for names in self.state.values() for s in names.values()):
                slots.update((k, device.asarray(previous.to_host(a), a.dtype)) for k, a in slots.items())
        return self

    def apply(self, params, grads, lr: float) -> None:
        """One update of every parameter (arrays on the optimizer's device, checked on the first
        one), in place, with learning rate ``lr``."""
        device = self.device
        first = next(((layer, name, p) for layer, arrays in params.items() for name, p in arrays.items()), None)
        if first is not None and not device.holds(first[2]):
            raise CnnrunError(f"optimizer '{self.type_name}' updates on device '{device.name}', but parameter "
                              f"'{first[0]}/{first[1]}' is not there ({type(first[2]).__name__}): move the "
                              f"optimizer with to(net.backend) after moving the network")
        if self._unchecked:
            self.check_state(params)
        self.step += 1
        kernels, update = device.kernels, self.update
        with np.errstate(over="ignore", invalid="ignore"):  # a diverging step is the trainer's to report
            for layer, arrays in params.items():
                layer_state = self.state.setdefault(layer, {})
                layer_grads = grads[layer]
                for name, p in arrays.items():
                    state = layer_state.get(name)
                    if state is None:  # first step: zeroed slots
                        state = layer_state[name] = {slot: device.zeros(p.shape, p.dtype) for slot in self.slots}
                    update(kernels, p, layer_grads[name], state, lr)

    def update(self, kernels, param, grad, state: dict, lr: float) -> None:
        """Update ``param`` in place from ``grad`` (left unchanged) and ``state`` (its slots), calling
        the device's ``kernels``."""
        raise NotImplementedError

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
        device = self._device
        host = device is None or device.host_arrays
        return {f"{layer}/{name}/{slot}": array if host else device.to_host(array)
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

        Casts the state (host arrays, as loaded) to each parameter's dtype on the optimizer's device.
        """
        for layer, names in self.state.items():
            for name, slots in names.items():
                p = params.get(layer, {}).get(name)
                if p is None:
                    raise CnnrunError(f"optimizer state: '{layer}/{name}' is not a trainable parameter of the "
                                      f"network (a layer frozen since the state was saved?)")
                for slot, array in slots.items():
                    if array.shape != p.shape:
                        raise CnnrunError(f"optimizer state: '{layer}/{name}/{slot}' has shape "
                                          f"{show(array.shape)}, the parameter {show(p.shape)}")
                    slots[slot] = self.device.asarray(array, p.dtype)
        if self.step > 0:
            for layer, names in params.items():
                for name in names:
                    missing = [s for s in self.slots if s not in self.state.get(layer, {}).get(name, {})]
                    if missing:
                        raise CnnrunError(f"optimizer state: '{layer}/{name}/{missing[0]}' is missing "
                                          f"(state saved at step {self.step})")
        self._unchecked = False


def make_optimizer(config: dict[str, Any], registry) -> Optimizer:
    """Build the optimizer that ``config`` (``train.optimizer``: ``{"type": ..., options}``) names,
    on the CPU of ``registry.devices`` (move it with :meth:`Optimizer.to`).

    Errors are :class:`ConfigError` with section ``train.optimizer (TYPE)``.
    """
    if not isinstance(config, dict) or "type" not in config:
        known = ", ".join(sorted(registry.classes))
        raise ConfigError(f"must be an object with a \"type\" (one of: {known}); got {show(config)}",
                          key="type", section=SECTION)
    optimizer = configured(registry, config, SECTION)
    devices = getattr(registry, "devices", None)
    return optimizer.to(devices.open("cpu")) if devices is not None else optimizer
