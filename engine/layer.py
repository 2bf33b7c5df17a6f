"""The layer protocol: what every layer type, built-in or from a plugin, implements.

A layer is configured from its JSON keys (``__init__``), infers shapes without touching data
(``output_shape``, ``parameter_shapes``), and computes ``forward`` and ``backward`` on whole batches.
Shapes handed to the shape methods leave out the batch: ``(C, H, W)``, ``(C, L)`` or ``(F,)``.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, ClassVar, NamedTuple

import numpy as np

from .errors import ConfigError
from .options import Configurable, show

Shape = tuple[int, ...]
RESERVED_KEYS = ("type", "name", "inputs", "trainable")


class Post(NamedTuple):
    """An inference plan's epilogue of one layer call (:mod:`.plan`): ``y = relu(y + residual)``,
    ``residual`` None for no sum, ``relu`` False for no relu."""

    residual: Any
    relu: bool


class Context:
    """What the engine hands a layer's ``forward`` and ``backward``: one per layer of a network.

    - ``params`` / ``buffers``: this layer's arrays (dicts by name), on ``device`` ("cpu": NumPy
      arrays; "cuda": Numba device arrays); ``backend`` (the opened
      :class:`~cnnrun.engine.device.Device`, e.g. ``cnnrun.engine.plugins.get_backend("cpu")``)
      allocates arrays there.
    - ``kernels``: the device's kernel table: ``ctx.kernels.relu_forward(x)``.
    - ``grads``: arrays shaped like ``params``; ``backward`` overwrites them in place.
    - ``training``: True for training-mode forward passes (dropout, batch statistics).
    - ``trainable``: False for a frozen layer: its parameters stay fixed, so ``backward`` may leave
      ``grads`` alone (skip the weight-gradient kernels); a batchnorm keeps its running statistics.
    - ``saved``: a namespace, emptied before each ``forward``, for what ``backward`` needs.
    - ``rng``: a ``numpy.random.Generator`` for random layers (dropout).
    - ``needs_input_grad``: False when ``backward``'s caller discards the gradient of this layer's
      input (a layer fed by the network input, in training): a layer may then return None for it
      and skip computing it (PyTorch's ``ctx.needs_input_grad``).
    - ``workspace(key, shape, dtype)``: a scratch array on the device, kept between calls (not zeroed).
    - ``frozen``: True when ``params`` never change (an inference plan's copies, :mod:`.plan`);
      ``derived(key, make)`` then keeps what a kernel derives from them (a transformed filter).
    - ``per_shape(key, signature, make)``: ``make()`` kept while ``signature`` (the shapes and
      settings it was made from) is the last call's: a kernel's per-shape set-up, made once.
    - ``post``: an inference plan's epilogue for this call (:class:`Post`: a residual to add, a
      relu), or None; a kernel that applies it to the outputs it writes sets ``post_applied``
      (the plan then makes no pass of its own; kernels that do not know it leave it alone).
    - ``comm``: the ranks of a data-parallel run (:class:`cnnrun.engine.distributed.MpiComm`; its
      ``sum(array)`` sums a float64 array over them), or None in one process.
    """

    def __init__(self, params=None, grads=None, buffers=None, *, backend, rng=None):
        self.params: dict[str, np.ndarray] = params if params is not None else {}
        self.grads: dict[str, np.ndarray] = grads if grads is not None else {}
        self.buffers: dict[str, np.ndarray] = buffers if buffers is not None else {}
        self._backend = backend
        self.kernels = backend.kernels
        self.rng = rng if rng is not None else np.random.default_rng(0)
        self.training = False
        self.trainable = True
        self.saved = SimpleNamespace()
        self.needs_input_grad = True
        self._workspaces: dict[str, np.ndarray] = {}
        self.frozen = False
        self._derived: dict[str, Any] = {}
        self._per_shape: dict[str, tuple] = {}
        self.post: Post | None = None
        self.post_applied = False
        self.comm = None

    @property
    def backend(self):
        """The device (:class:`cnnrun.engine.device.Device`)."""
        return self._backend

    @backend.setter
    def backend(self, backend) -> None:
        self._backend = backend
        self.kernels = backend.kernels
        self._workspaces.clear()
        self._derived.clear()
        self._per_shape.clear()

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

    def derived(self, key: str, make):
        """``make()``, computed once and kept when the context is ``frozen``, else each call."""
        if not self.frozen:
            return make()
        value = self._derived.get(key)
        if value is None:
            value = self._derived[key] = make()
        return value

    def per_shape(self, key: str, signature, make):
        """``make()``, kept while ``signature`` equals the last call's (only the last is kept, so what
        ``make`` lays out in a workspace stays valid: every other layout of it replaces this one)."""
        last = self._per_shape.get(key)
        if last is None or last[0] != signature:
            last = self._per_shape[key] = (signature, make())
        return last[1]


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

    ``forward``/``backward`` are written once for every device: they decide shapes and what to save,
    and compute through the device's kernels, ``ctx.kernels.OPERATION(...)``. ``kernels`` names the
    operations they call, so :meth:`Network.to` can refuse a device that lacks one before anything
    runs. A layer that leaves ``kernels`` at ``None`` computes with NumPy itself and runs on devices
    whose arrays are NumPy arrays ("cpu") only; ``()`` says it needs no kernel (reshapes only).

    Capabilities a layer can declare:

    - ``fused_loss``: ``{loss: kernel}``: as the last layer, a training ``loss`` is computed by the
      loss kernel ``kernel`` from this layer's output, whose gradient is the one of this layer's
      *input* (softmax + cross-entropy), so back-propagation starts below this layer;
    - ``affine_output_channels``: the output is ``weight[c] . x + bias[c]`` per output channel ``c``
      (weight axis 0), with a ``bias`` option: a following layer can be folded into it (its output
      must be a fresh array: an inference plan's epilogue writes into it);
    - :meth:`folds_into` / :meth:`fold_parameters`: this layer folds into the layer before it
      (``cnnrun fuse``), e.g. batchnorm into a conv;
    - ``epilogue``: ``"relu"`` (y = max(x, 0)) or ``"add"`` (the sum of its inputs): in inference the
      layer may run inside the output pass of the ``affine_output_channels`` layer that feeds it
      (:mod:`cnnrun.engine.plan`), so it must compute exactly that.
    - :meth:`to_onnx`: the layer's ONNX nodes (``cnnrun export``).
    """

    reserved_keys = RESERVED_KEYS
    min_inputs: ClassVar[int] = 1
    max_inputs: ClassVar[int | None] = 1
    kernels: ClassVar[tuple[str, ...] | None] = None
    fused_loss: ClassVar[dict[str, str]] = {}
    affine_output_channels: ClassVar[bool] = False
    epilogue: ClassVar[str | None] = None

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

    def missing_kernels(self, device) -> list[str]:
        """The kernels this layer needs that ``device`` lacks (``["NumPy arrays"]`` for a layer that
        computes with NumPy, on a device whose arrays are not)."""
        if self.kernels is None:
            return [] if device.host_arrays else ["NumPy arrays"]
        return [op for op in self.kernels if op not in device.kernels]

    # -- capabilities --------------------------------------------------------------------------
    def folds_into(self, producer: "Layer") -> bool:
        """Whether this layer can be folded into ``producer``, the layer before it (``cnnrun fuse``)."""
        return False

    def fold_parameters(self, producer_params: dict, params: dict, buffers: dict) -> dict[str, np.ndarray]:
        """The producer's new parameters with this layer folded in (host arrays)."""
        raise NotImplementedError(f"{self.type_name} does not fold into other layers")

    def to_onnx(self, graph, *inputs: str) -> str:
        """Write this layer, in evaluation mode, into ``graph`` (an
        :class:`~cnnrun.engine.onnx.export_graph.OnnxGraph`): ``inputs`` are the names of the input values
        (batch axis first); returns the name of the output value. A layer type without it cannot be
        exported (``cnnrun export`` names it)."""
        raise NotImplementedError(f"{self.type_name} has no ONNX export")


def uniform_fan_in_(array: np.ndarray, fan_in: int, rng: np.random.Generator) -> None:
    """PyTorch's default conv/linear init, for weights and biases alike: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

    (For weights PyTorch writes ``kaiming_uniform_(w, a=sqrt(5))``: bound = sqrt(6 / (6 * fan_in)).)
    """
    bound = 1.0 / np.sqrt(fan_in) if fan_in > 0 else 0.0
    array[...] = rng.uniform(-bound, bound, size=array.shape)
