"""The layer protocol: what every layer type, built-in or from a plugin, implements.

A layer is configured from its JSON keys (``__init__``), infers shapes without touching data
(``output_shape``, ``parameter_shapes``), and computes ``forward`` and ``backward`` on whole batches.
Shapes handed to the shape methods leave out the batch: ``(C, H, W)``, ``(C, L)`` or ``(F,)``.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, ClassVar

import numpy as np

from .device import CPU
from .errors import ConfigError
from .options import Configurable, show

Shape = tuple[int, ...]
RESERVED_KEYS = ("type", "name", "inputs")


class Context:
    """What the engine hands a layer's ``forward`` and ``backward``: one per layer of a network.

    - ``params`` / ``buffers``: this layer's arrays (dicts by name), on ``device`` ("cpu": NumPy
      arrays; "cuda": Numba device arrays); ``backend`` allocates arrays there.
    - ``grads``: arrays shaped like ``params``; ``backward`` overwrites them in place.
    - ``training``: True for training-mode forward passes (dropout, batch statistics).
    - ``saved``: a namespace, emptied before each ``forward``, for what ``backward`` needs.
    - ``rng``: a ``numpy.random.Generator`` for random layers (dropout).
    - ``workspace(key, shape, dtype)``: a scratch array on the device, kept between calls (not zeroed).
    """

    def __init__(self, params=None, grads=None, buffers=None, *, backend=CPU, rng=None):
        self.params: dict[str, np.ndarray] = params if params is not None else {}
        self.grads: dict[str, np.ndarray] = grads if grads is not None else {}
        self.buffers: dict[str, np.ndarray] = buffers if buffers is not None else {}
        self._backend = backend
        self.rng = rng if rng is not None else np.random.default_rng(0)
        self.training = False
        self.saved = SimpleNamespace()
        self._workspaces: dict[str, np.ndarray] = {}

    @property
    def backend(self):
        """The device's backend (:mod:`cnnrun.engine.device`)."""
        return self._backend

    @backend.setter
    def backend(self, backend) -> None:
        self._backend = backend
        self._workspaces.clear()

    @property
    def device(self) -> str:
        return self._backend.name

    def workspace(self, key: str, shape, dtype):
        """A scratch array of ``shape`` and ``dtype`` on the device, reused across calls while those
        stay the same."""
        shape = tuple(int(s) for s in shape)
        array = self._workspaces.get(key)
        if array is None or tuple(array.shape) != shape or array.dtype != np.dtype(dtype):
            array = self._backend.empty(shape, dtype)
            self._workspaces[key] = array
        return array


class Layer(Configurable):
    """Base class of every layer type.

    Subclasses set ``type_name`` (the JSON ``"type"``), take their JSON keys as keyword arguments of
    ``__init__`` (keys with defaults are optional; the rest are required), and override what applies:

    - ``output_shape(*input_shapes)``: the output shape, or ``self.error(...)`` when inputs do not fit;
    - ``parameter_shapes(*input_shapes)`` and ``buffer_shapes(*input_shapes)``: ``{name: shape}``;
    - ``initialize(params, buffers, rng)``: fill freshly allocated arrays (PyTorch's default init);
    - ``macs(*input_shapes)``: multiply-accumulates per sample;
    - ``forward(ctx, *inputs)`` -> output, and ``backward(ctx, grad_output)`` -> the gradient of each
      input (a single array for a one-input layer, else a tuple), writing ``ctx.grads``.

    ``forward``/``backward`` are the CPU implementation. Another device ``D`` is provided by methods
    ``forward_D``/``backward_D``; :meth:`implementation` finds them.
    """

    reserved_keys = RESERVED_KEYS
    min_inputs: ClassVar[int] = 1
    max_inputs: ClassVar[int | None] = 1

    def __init__(self, name: str):
        self.name = name
        self._config: dict[str, Any] = {}

    # -- configuration -------------------------------------------------------------------------
    @classmethod
    def from_config(cls, name: str, config: dict[str, Any]) -> "Layer":
        """Check ``config`` (the layer's JSON object without type/name/inputs) and build the layer."""
        try:
            cls.check_keys(config)
            layer = cls(name, **config)
        except ConfigError as err:
            err.layer, err.layer_type = name, cls.type_name
            raise
        layer._config = layer.resolved_config(config)
        return layer

    def get_config(self) -> dict[str, Any]:
        """Every JSON key this layer accepts with its value (defaults filled in)."""
        return {"type": self.type_name, "name": self.name, **self._config}

    def __repr__(self) -> str:
        defaults = self.config_keys()
        shown = [f"{k}={show(v)}" for k, v in self._config.items() if v != defaults.get(k)]
        return f"{type(self).__name__}({', '.join([repr(self.name)] + shown)})"

    def error(self, message: str, key: str | None = None) -> ConfigError:
        """A :class:`ConfigError` naming this layer (raise it)."""
        return ConfigError(message, layer=self.name, layer_type=self.type_name, key=key)

    # -- shapes and parameters -----------------------------------------------------------------
    def output_shape(self, *input_shapes: Shape) -> Shape:
        """The output shape (no batch) for these input shapes; identity by default."""
        return input_shapes[0]

    def parameter_shapes(self, *input_shapes: Shape) -> dict[str, Shape]:
        """Trained arrays ``{name: shape}``."""
        return {}

    def buffer_shapes(self, *input_shapes: Shape) -> dict[str, Shape]:
        """Non-trained state ``{name: shape}`` (e.g. batchnorm's running statistics)."""
        return {}

    def initialize(self, params: dict[str, np.ndarray], buffers: dict[str, np.ndarray],
                   rng: np.random.Generator) -> None:
        """Fill ``params`` and ``buffers`` in place (they arrive zeroed)."""

    def macs(self, *input_shapes: Shape) -> int:
        """Multiply-accumulates for one sample (0 for layers that are not conv/linear)."""
        return 0

    # -- computation ---------------------------------------------------------------------------
    def forward(self, ctx: Context, *inputs: np.ndarray) -> np.ndarray:
        raise NotImplementedError(f"{self.type_name} has no forward")

    def backward(self, ctx: Context, grad_output: np.ndarray):
        raise NotImplementedError(f"{self.type_name} has no backward")

    def implementation(self, device: str):
        """``(forward, backward)`` for ``device``, or ``None`` if this layer has none there."""
        if device == "cpu":
            return self.forward, self.backward
        forward = getattr(self, f"forward_{device}", None)
        backward = getattr(self, f"backward_{device}", None)
        return (forward, backward) if forward and backward else None


def uniform_fan_in_(array: np.ndarray, fan_in: int, rng: np.random.Generator) -> None:
    """PyTorch's default conv/linear init, for weights and biases alike: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

    (For weights PyTorch writes ``kaiming_uniform_(w, a=sqrt(5))``: bound = sqrt(6 / (6 * fan_in)).)
    """
    bound = 1.0 / np.sqrt(fan_in) if fan_in > 0 else 0.0
    array[...] = rng.uniform(-bound, bound, size=array.shape)
