"""Inference plans: a network's evaluation-mode forward pass as fewer, fused steps (onnxruntime's and
oneDNN's graph rewrites, "post-ops").

:meth:`Network.inference` builds one from the network's current parameters and keeps it; until the
parameters may have changed (a training pass, :meth:`~Network.initialize`, :meth:`~Network.to`, a
checkpoint restored, :meth:`~Network.params_changed`), ``forward(x, training=False)`` runs it:

- **fold**: a batchnorm that folds into the layer before it (:func:`foldable_pairs`, the rewrite of
  ``cnnrun fuse``) is gone; its producer runs with folded copies of its parameters
  (``w' = w * s``, ``b' = (b - mean) * s + beta``, ``s = gamma / sqrt(var + eps)``); the network's own
  parameters are never changed;
- **epilogue**: the output of a layer declaring ``affine_output_channels`` (conv, linear), when its
  only reader is an ``add`` of two inputs of one shape (the residual sum) and/or a ``relu``, gets them
  in place, in one pass (the device's ``epilogue`` kernel): ``y = relu(conv(x) + b + residual)``.
  The add is fused into the producer of one of its inputs that nothing else reads; that step runs
  at the add's place in the order, so the other input (the residual) is ready. The step's context
  carries the epilogue (``ctx.post``): a kernel that applies it to each block of outputs it has
  just written (the CPU's shifted-rows convs into their own planes) saves the pass over memory.

The result equals the unfused pass up to float32 rounding (folding reorders two multiplications).
Each layer's output contract (:mod:`.contract`) is checked on the first pass of each batch size
only; the steps' inputs, outputs and parameters are resolved once, so a pass is one loop over the
steps.
"""

from __future__ import annotations

from collections import Counter
from contextlib import nullcontext
from dataclasses import dataclass

from .contract import MAX_BATCH_SIZES
from .layer import Context, Post

INPUT = "input"


def foldable_pairs(net) -> list[tuple[str, str]]:
    """``(layer, folded layer)`` for every one-input layer of ``net`` that :meth:`~Layer.folds_into`
    its input layer, when nothing else reads that layer."""
    readers = Counter(source for node in net.nodes for source in node.inputs)
    by_name = {node.name: node for node in net.nodes}
    pairs = []
    for node in net.nodes:
        source = by_name.get(node.inputs[0]) if len(node.inputs) == 1 else None  # None: the network input
        if source is not None and readers[source.name] == 1 and node.layer.folds_into(source.layer):
            pairs.append((source.name, node.name))
    return pairs


@dataclass
class Step:
    """One layer run by a plan: ``node`` with ``ctx``, reading ``inputs``, its output stored as
    ``output`` (the last node it stands for), plus ``residual`` (a value added) and ``relu``."""

    node: object
    ctx: Context
    inputs: tuple[str, ...]
    output: str
    residual: str | None = None
    relu: bool = False
    covers: tuple[str, ...] = ()  # the names of the nodes this step computes, its own first


class InferencePlan:
    """The evaluation-mode forward pass of ``net`` as :class:`Step` s (see the module docstring)."""

    def __init__(self, net):
        self.net = net
        self.steps = _steps(net)
        self.output = net.nodes[-1].name
        self._checked: set[int] = set()
        kernels = net.backend.kernels
        self._epilogue = kernels.epilogue if "epilogue" in kernels else None

    def __call__(self, x, timer=None):
        """The network's output for the batch ``x`` (already checked and on the device)."""
        batch = x.shape[0]
        contract = None if batch in self._checked else self.net._contract.for_batch(batch)
        values = {INPUT: x}
        for step in self.steps:
            with timer(step.node.name, "forward") if timer else nullcontext():
                fused = step.residual is not None or step.relu
                residual = values[step.residual] if step.residual is not None else None
                if fused:
                    step.ctx.post = Post(residual, step.relu)
                y = step.node.layer.forward(step.ctx, *(values[i] for i in step.inputs))
                applied, step.ctx.post, step.ctx.post_applied = step.ctx.post_applied, None, False
                if contract is not None:
                    contract.check_output(step.node, y)
                if fused and not applied:
                    y = self._finish(step, y, residual)
            values[step.output] = y
        if contract is not None:
            if len(self._checked) >= MAX_BATCH_SIZES:
                self._checked.clear()
            self._checked.add(batch)
        return values[self.output]

    def _finish(self, step, y, residual):
        """The step's epilogue: the device's kernel, or the layers' own kernels on a device without one."""
        if self._epilogue is not None:
            return self._epilogue(y, residual, step.relu)
        if residual is not None:
            y = step.ctx.kernels.add_forward((y, residual))
        return step.ctx.kernels.relu_forward(y) if step.relu else y

    def describe(self) -> list[str]:
        """One line per step: ``conv1 + bn1 + relu1`` (what it computes)."""
        return [" + ".join(step.covers) for step in self.steps]


def _steps(net) -> list[Step]:
    nodes = {node.name: node for node in net.nodes}
    readers: dict[str, list] = {name: [] for name in [INPUT, *nodes]}
    for node in net.nodes:
        for source in node.inputs:
            readers[source].append(node)
    folded = dict(foldable_pairs(net))  # producer -> batchnorm
    steps: list[Step] = []
    absorbed: set[str] = set(folded.values())
    for node in net.nodes:
        if node.name in absorbed:
            continue
        step = Step(node, net.contexts[node.name], node.inputs, node.name, covers=(node.name,))
        if node.layer.affine_output_channels:
            step.ctx = _frozen_context(net, node, nodes.get(folded.get(node.name)))
        if node.name in folded:
            step.output, step.covers = folded[node.name], (node.name, folded[node.name])
        if node.layer.affine_output_channels:
            _fuse_epilogue(step, readers, absorbed, net)
        steps.append(step)
    order = {node.name: index for index, node in enumerate(net.nodes)}
    return sorted(steps, key=lambda s: order[s.output])  # each at the place of the last node it computes


def _fuse_epilogue(step: Step, readers, absorbed: set, net) -> None:
    """Absorb into ``step`` the add and the relu that only its output feeds."""
    reader = _only_reader(step.output, readers, absorbed, net)
    if (reader is not None and reader.layer.epilogue == "add" and len(reader.inputs) == 2
            and reader.input_shapes[0] == reader.input_shapes[1]):
        step.residual = reader.inputs[1] if reader.inputs[0] == step.output else reader.inputs[0]
        if step.residual != step.output:
            absorbed.add(reader.name)
            step.output, step.covers = reader.name, step.covers + (reader.name,)
            reader = _only_reader(step.output, readers, absorbed, net)
        else:
            step.residual, reader = None, None  # x + x: left as it is
    if reader is not None and reader.layer.epilogue == "relu":
        absorbed.add(reader.name)
        step.output, step.covers = reader.name, step.covers + (reader.name,)
        step.relu = True


def _only_reader(name: str, readers, absorbed: set, net):
    """The one node that reads ``name`` and no other step computes yet, or None (several readers,
    none, or ``name`` is the network's output)."""
    found = readers.get(name, [])
    if len(found) != 1 or name == net.nodes[-1].name or found[0].name in absorbed:
        return None
    return found[0]


def _frozen_context(net, producer, batchnorm=None) -> Context:
    """A frozen context (kernels may keep what they derive from its parameters) for ``producer``,
    holding copies of its parameters, with ``batchnorm`` folded in when given, on the network's
    device."""
    backend = net.backend
    params = {key: backend.to_host(a) for key, a in net.params.get(producer.name, {}).items()}
    if batchnorm is not None:
        params.update(batchnorm.layer.fold_parameters(
            params, {k: backend.to_host(a) for k, a in net.params.get(batchnorm.name, {}).items()},
            {k: backend.to_host(a) for k, a in net.buffers.get(batchnorm.name, {}).items()}))
    ctx = Context({k: backend.asarray(a, net.dtype) for k, a in params.items()}, backend=backend)
    ctx.frozen = True
    return ctx
