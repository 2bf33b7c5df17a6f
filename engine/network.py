"""A network: layers wired as a DAG from a JSON description, run forward and backward on batches."""

from __future__ import annotations

import math
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from .blocks import expand_blocks
from .checkpoint import restore_network
from .contract import Contract
from .errors import CnnrunError, ConfigError, ShapeError, did_you_mean
from .layer import Context, Shape
from .memory import check_fits
from .network_file import INPUT, Node, build_nodes, config_input_shape, read_network_file
from .options import show
from .state import (layer_names, load_state_dict, load_weights, read_saved_network, save_network, set_trainable,
                    state_dict, untrained)

TOP_LEVEL_KEYS = ("name", "input", "blocks", "layers", "train")
DTYPES = ("float32", "float64")


class Network:
    """Layers in topological order; the last one is the output.

    ``params``, ``grads`` and ``buffers`` map a layer name to ``{array name: array}`` (only layers
    that have any); arrays are C-contiguous, of the network's dtype, in PyTorch's layouts,
    initialized once from ``seed`` (:meth:`initialize`).
    """

    def __init__(self, name: str, input_shape: Shape, nodes: list[Node], *, dtype="float32",
                 config: dict | None = None, devices=None, seed: int = 0):
        self.name = name
        self.input_shape = tuple(input_shape)
        self.nodes = nodes
        self.dtype = np.dtype(dtype)
        self.config = config
        self.base_dir = Path(".")  # where the train section's relative paths start (the file's folder)
        if devices is None:
            from .plugins import default_registries
            devices = default_registries().devices
        self.devices = devices
        self.backend = devices.open("cpu")
        self.params: dict[str, dict[str, np.ndarray]] = {}
        self.grads: dict[str, dict[str, np.ndarray]] = {}
        self.buffers: dict[str, dict[str, np.ndarray]] = {}
        shapes = [(node.name, node.layer.parameter_shapes(*node.input_shapes),
                   node.layer.buffer_shapes(*node.input_shapes)) for node in nodes]
        self._check_memory(shapes)
        for name, params, buffers in shapes:
            if params:
                self.params[name] = {k: np.zeros(s, self.dtype) for k, s in params.items()}
                self.grads[name] = {k: np.zeros(s, self.dtype) for k, s in params.items()}
            if buffers:
                self.buffers[name] = {k: np.zeros(s, self.dtype) for k, s in buffers.items()}
        unseeded = np.random.default_rng(0)  # one for all until initialize() seeds each layer's own
        self.contexts = {node.name: Context(self.params.get(node.name, {}), self.grads.get(node.name, {}),
                                            self.buffers.get(node.name, {}), backend=self.backend, rng=unseeded)
                         for node in nodes}
        for node in nodes:
            self.contexts[node.name].trainable = node.trainable
        self._contract = Contract(nodes, self.dtype, self.params)
        self._forward_done = False
        self._plan = None
        self.initialize(seed)

    def _check_memory(self, shapes) -> None:
        """Refuse, before allocating, parameters, gradients and buffers that cannot fit in memory."""
        arrays = [(math.prod(shape), f"layer '{name}' {key} of shape {tuple(shape)}")
                  for name, params, buffers in shapes for tree in (params, params, buffers)
                  for key, shape in tree.items()]
        if arrays:
            check_fits(sum(n for n, _ in arrays) * self.dtype.itemsize,
                       f"network '{self.name}': its parameters, gradients and buffers (the largest: "
                       f"{max(arrays)[1]})")

    # -- construction --------------------------------------------------------------------------
    @classmethod
    def from_json(cls, path, registry=None, dtype="float32", seed: int = 0) -> "Network":
        """Build a network from a JSON file, its parameters initialized from ``seed``; every error
        names the file."""
        config = read_network_file(path)
        try:
            net = cls.from_config(config, registry=registry, dtype=dtype, seed=seed)
        except ConfigError as err:
            raise err.in_file(str(path)) from None
        net.base_dir = Path(path).parent
        return net

    @classmethod
    def from_config(cls, config: dict[str, Any], registry=None, dtype="float32", seed: int = 0) -> "Network":
        """Build a network from a parsed JSON description (see docs/format.md), its parameters
        initialized from ``seed``; ``config`` of the network is the description with its blocks
        expanded (:func:`~cnnrun.engine.blocks.expand_blocks`)."""
        if registry is None:
            from .plugins import default_registry
            registry = default_registry()
        if not isinstance(config, dict):
            raise ConfigError(f"the network must be a JSON object; got {show(config)[:60]}")
        for key in config:
            if key not in TOP_LEVEL_KEYS:
                raise ConfigError(f"unknown top-level key '{key}'{did_you_mean(key, TOP_LEVEL_KEYS)}; "
                                  f"expected: {', '.join(TOP_LEVEL_KEYS)}", key=key)
        config = expand_blocks(config)
        if dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}; got {dtype!r}")
        name = config.get("name", "network")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"name must be a non-empty string; got name={show(name)}", key="name")
        input_shape = config_input_shape(config)
        layers = config.get("layers")
        if not isinstance(layers, list) or not layers:
            raise ConfigError(f"'layers' must be a non-empty list of layer objects; got layers={show(layers)[:60]}",
                              key="layers")
        return cls(name, input_shape, build_nodes(layers, input_shape, registry),
                   dtype=dtype, config=config, devices=getattr(registry, "devices", None), seed=seed)

    def initialize(self, seed: int = 0) -> None:
        """(Re)initialize every parameter and buffer with PyTorch's default scheme, from ``seed``."""
        self.params_changed()
        rng = np.random.default_rng(seed)
        for node in self.nodes:
            params = {k: np.zeros(a.shape, self.dtype) for k, a in self.params.get(node.name, {}).items()}
            buffers = {k: np.zeros(a.shape, self.dtype) for k, a in self.buffers.get(node.name, {}).items()}
            node.layer.initialize(params, buffers, rng)
            for tree, fresh in ((self.params, params), (self.buffers, buffers)):
                for key, array in fresh.items():
                    self.backend.copy_into(tree[node.name][key], array)
            self.contexts[node.name].rng = np.random.default_rng(rng.integers(2**63))

    # -- running -------------------------------------------------------------------------------
    @property
    def output_shape(self) -> Shape:
        """The output shape for one sample."""
        return self.nodes[-1].output_shape

    @property
    def device(self) -> str:
        """The name of the device where the arrays live and the layers run ("cpu", "cuda", ...)."""
        return self.backend.name

    def to(self, device) -> "Network":
        """Move parameters, gradients and buffers to ``device`` (a registered device's name, or an
        opened :class:`~cnnrun.engine.device.Device`); returns ``self``.

        Every layer's kernels must exist there: a layer whose kernels do not is a
        :class:`CnnrunError` naming it and them, before anything moves. The device the network is
        on already is a no-op; another instance of the same device keeps the arrays as they are.
        """
        if device is self.backend or device == self.backend.name:
            return self
        backend = self.devices.open(device)
        device = backend.name
        missing = [(n, n.layer.missing_kernels(backend)) for n in self.nodes]
        missing = [(n, ops) for n, ops in missing if ops]
        if missing:
            layers = ", ".join(f"'{n.name}' ({n.layer.type_name})" for n, _ in missing)
            needs = "; ".join(f"'{n.name}' needs {', '.join(ops)}" for n, ops in missing)
            raise CnnrunError(f"{self.name}: no {device} implementation for layer(s) {layers}; {needs}; run them "
                              f"on another device or register {device} kernels for them (cnnrun_register_kernels)")
        if backend.name != self.backend.name:
            for tree in (self.params, self.grads, self.buffers):
                for arrays in tree.values():
                    for key, array in arrays.items():
                        arrays[key] = backend.asarray(self.backend.to_host(array), self.dtype)
        for ctx in self.contexts.values():
            ctx.backend = backend
        self.backend = backend
        self._forward_done = False
        self.params_changed()
        return self

    def forward(self, x, training: bool = False, timer=None, *, outputs=None):
        """Run the batch ``x`` of shape ``(N, *input_shape)``; returns the last layer's output (an
        array on the network's device), or with ``outputs`` (layer names) ``{name: output}`` of
        those layers, running the layers up to the last of them only (a feature extractor).

        ``training=True`` uses batch statistics and dropout and keeps what ``backward`` needs (and
        drops the inference plan); ``training=False`` runs the plan of :meth:`inference` when there
        is one. ``timer(node_name, "forward")``, if given, is a context manager wrapped around each
        layer (each step of a plan).
        """
        x = self._check_input(x)
        wanted = None if outputs is None else layer_names(self, outputs, "forward(outputs=...)")
        last = self.nodes[-1].name if not wanted else max(wanted, key=[n.name for n in self.nodes].index)
        if training:
            self._plan = None
        elif self._plan is not None and wanted is None:
            self._forward_done = False
            return self._plan(x, timer)
        contract = self._contract.for_batch(x.shape[0])
        values = {INPUT: x}
        for node in self.nodes:
            ctx = self.contexts[node.name]
            ctx.training = training
            ctx.saved.__dict__.clear()
            with timer(node.name, "forward") if timer else nullcontext():
                values[node.name] = node.layer.forward(ctx, *(values[i] for i in node.inputs))
            contract.check_output(node, values[node.name])
            if node.name == last:
                break
        self._forward_done = last == self.nodes[-1].name  # backward needs every layer's saved values
        self._batch = x.shape[0]
        return values[last] if wanted is None else {name: values[name] for name in wanted}

    def backward(self, grad_output, timer=None, *, start: str | None = None, input_gradient: bool = True):
        """Back-propagate ``grad_output``, the gradient of the output of layer ``start`` (default: the
        last layer); fills ``grads`` (zero for layers it does not reach), returns the gradient with
        respect to the input. ``input_gradient=False`` (training) skips the layers that neither train
        nor feed one that does (a frozen backbone: :func:`~cnnrun.engine.state.untrained`); returns None, and
        the layers fed by the input alone skip their input gradient (``Context.needs_input_grad``).

        ``timer(node_name, "backward")``, if given, is a context manager wrapped around each layer.
        """
        if not self._forward_done:
            raise CnnrunError("backward() needs a forward() first (an inference plan's pass keeps nothing "
                              "for it)" if self._plan is not None else "backward() needs a forward() first")
        if start is None:
            start, shape = self.nodes[-1].name, self.nodes[-1].output_shape
        else:
            shape = self._output_shape_of(start)
        expected = (self._batch, *shape)
        grad_output = self.backend.asarray(grad_output, self.dtype)
        if tuple(grad_output.shape) != expected:
            raise ShapeError(f"{self.name}: backward expected a gradient of shape {expected}; "
                             f"got {grad_output.shape}")
        grads = {start: grad_output}
        contract = self._contract.for_batch(self._batch)
        skipped = () if input_gradient else untrained(self)
        for node in reversed(self.nodes):
            grad = grads.pop(node.name, None)
            ctx = self.contexts[node.name]
            if grad is None or node.name in skipped:  # the node does not reach the output, or trains nothing
                for array in ctx.grads.values():
                    self.backend.fill(array, 0)
                continue
            ctx.needs_input_grad = input_gradient or any(source != INPUT for source in node.inputs)
            with timer(node.name, "backward") if timer else nullcontext():
                input_grads = node.layer.backward(ctx, grad)
            input_grads = contract.check_backward(node, input_grads, ctx.grads, ctx.needs_input_grad)
            for source, g in zip(node.inputs, input_grads):
                if source == INPUT and not input_gradient:
                    continue
                grads[source] = g if source not in grads else self.backend.add(grads[source], g)
        if not input_gradient:
            return None
        if INPUT in grads:
            return grads[INPUT]
        return self.backend.zeros((self._batch, *self.input_shape), self.dtype)  # input reaches nothing

    def inference(self):
        """Compile (or return the one kept) :class:`~cnnrun.engine.plan.InferencePlan` of the current
        parameters and buffers: batchnorm folded into copies of the conv/linear parameters, add and
        relu fused into their output pass. ``forward(x, training=False)`` runs it until
        :meth:`params_changed` (called by a training pass, :meth:`initialize`, :meth:`to` and when a
        checkpoint is restored); the network's own parameters stay as they are."""
        if self._plan is None:
            from .plan import InferencePlan
            for ctx in self.contexts.values():
                ctx.training = False
            self._plan = InferencePlan(self)
        return self._plan

    def params_changed(self) -> None:
        """Drop the inference plan: parameters or buffers were (or may have been) changed in place."""
        self._plan = None

    def _output_shape_of(self, name: str) -> Shape:
        if name == INPUT:
            return self.input_shape
        for node in self.nodes:
            if node.name == name:
                return node.output_shape
        raise CnnrunError(f"{self.name}: backward(start={name!r}) names no layer")

    def _check_input(self, x):
        if not hasattr(x, "shape"):
            x = np.asarray(x)
        expected = ("N", *self.input_shape)
        if len(x.shape) != len(expected) or tuple(x.shape[1:]) != self.input_shape or x.shape[0] < 1:
            raise ShapeError(f"{self.name}: expected input of shape ({', '.join(map(str, expected))}); "
                             f"got {tuple(x.shape)}")
        return self.backend.asarray(x, self.dtype)

    # -- training and inference (Keras-style; cnnrun.engine.fit) -----------------------------------
    def fit(self, x=None, y=None, **options):
        """Train in place on arrays or a data source, by the train section; returns a History.
        See :func:`cnnrun.engine.fit.fit`."""
        from .fit import fit
        return fit(self, x, y, **options)

    def evaluate(self, x, y, **options) -> dict:
        """Loss, accuracy and metrics over ``x``, ``y``. See :func:`cnnrun.engine.fit.evaluate`."""
        from .fit import evaluate
        return evaluate(self, x, y, **options)

    def predict(self, x, **options):
        """Class probabilities (or raw outputs) for ``x``. See :func:`cnnrun.engine.fit.predict`."""
        from .fit import predict
        return predict(self, x, **options)

    # -- state (:mod:`cnnrun.engine.state`) -------------------------------------------------------
    def save(self, path) -> None:
        """Write the network (its JSON, dtype, parameters, buffers) to one ``.npz`` (atomic, no pickle)."""
        save_network(self, path)

    @classmethod
    def load(cls, path, registry=None) -> "Network":
        """The network :meth:`save` wrote to ``path``, equal in every output."""
        config, dtype, checkpoint = read_saved_network(path)
        try:
            net = cls.from_config(config, registry=registry, dtype=dtype)
        except ConfigError as err:
            raise err.in_file(str(path)) from None
        restore_network(net, checkpoint, str(path))
        return net

    def load_weights(self, checkpoint) -> "Network":
        """Load the parameters and buffers of a checkpoint file or a run folder (its best.npz); returns ``self``."""
        load_weights(self, checkpoint)
        return self

    def state_dict(self) -> dict[str, np.ndarray]:
        """Host copies of the parameters and buffers as ``{"conv1.weight": array, ...}`` (PyTorch's)."""
        return state_dict(self)

    def load_state_dict(self, mapping, strict: bool = True):
        """Copy a PyTorch-style ``{"conv1.weight": array, ...}`` in (names and shapes checked;
        :func:`cnnrun.engine.state.load_state_dict`); returns the missing and unexpected keys."""
        return load_state_dict(self, mapping, strict)

    def freeze(self, names=None) -> "Network":
        """Keep the parameters of layers ``names`` (one name or a list; None: every layer) fixed in
        training: no gradient computed or applied, a batchnorm keeps its running statistics."""
        set_trainable(self, names, False)
        return self

    def unfreeze(self, names=None) -> "Network":
        """Train the layers ``names`` (None: every layer) again."""
        set_trainable(self, names, True)
        return self

    @property
    def trainable_params(self) -> dict[str, dict[str, np.ndarray]]:
        """``params`` of the layers that are not frozen: what an optimizer updates."""
        return {node.name: self.params[node.name] for node in self.nodes if node.trainable and node.name in self.params}

    # -- inspection ----------------------------------------------------------------------------
    def summary(self) -> list[dict[str, Any]]:
        """One row per layer: name, type, inputs (the names it reads; ``"input"`` is the network's
        input), output_shape, params (trained values), non_trainable_params (buffer values, such as
        batchnorm's running statistics), macs (per sample), block and instance (the block the
        layer comes from and its instance, or None), and trainable (False: frozen)."""
        rows = []
        for node in self.nodes:
            layer, shapes = node.layer, node.input_shapes
            rows.append({"name": node.name, "type": layer.type_name, "inputs": list(node.inputs),
                         "output_shape": list(node.output_shape),
                         "params": sum(int(np.prod(s)) for s in layer.parameter_shapes(*shapes).values()),
                         "non_trainable_params": sum(int(np.prod(s)) for s in layer.buffer_shapes(*shapes).values()),
                         "macs": int(layer.macs(*shapes)),
                         "block": node.part_of["block"] if node.part_of else None,
                         "instance": node.part_of["instance"] if node.part_of else None, "trainable": node.trainable})
        return rows

    def parameter_count(self) -> int:
        """The number of trained values."""
        return sum(a.size for p in self.params.values() for a in p.values())

    def __repr__(self) -> str:
        return f"Network({self.name!r}, input_shape={self.input_shape}, layers={len(self.nodes)})"
