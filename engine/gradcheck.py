"""Finite-difference gradient checks, for built-in layers and for plugin authors.

``check_layer_gradients({"type": "conv2d", ...}, (3, 7, 7))`` builds a one-layer network in float64,
takes the scalar loss L = sum(y * r) for a fixed random r, and compares ``backward``'s gradients with
central differences (L(v + eps) - L(v - eps)) / (2 eps) for the input and every parameter; then it
runs the same layer in float32 and compares with float64, so a layer that returns another dtype, or
loses precision, fails too. Every failure is an ``AssertionError`` naming the layer and the array.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from .contract import LayerContractError
from .network import INPUT, Network

FLOAT32_RTOL = 1e-3  # float32 results against float64 ones, relative to each array's largest value


def check_layer_gradients(layer: dict, input_shape, *, batch: int = 2, seed: int = 0,
                          registry=None, training: bool = True, **tolerances) -> None:
    """Check one single-input layer (its JSON object) on a batch of ``input_shape`` (no batch).

    Raises ``AssertionError`` naming the first array whose gradient is off, that has the wrong shape
    or dtype, or whose float32 value differs from the float64 one (:func:`check_float32`). Layers
    with several inputs are checked inside a small network with :func:`check_network_gradients`.
    """
    config = {"input": {"shape": list(input_shape)}, "layers": [dict(layer)]}
    net = Network.from_config(config, registry=registry, dtype="float64", seed=seed)
    check_float32(net, registry=registry, batch=batch, seed=seed, training=training)
    check_network_gradients(net, batch=batch, seed=seed, training=training, **tolerances)


def check_float32(net: Network, *, registry=None, batch: int = 2, seed: int = 0, training: bool = True,
                  rtol: float = FLOAT32_RTOL) -> None:
    """Run a float64 network and its float32 twin (same config, same parameters and buffers) forward
    and backward on one batch: every output, input gradient and parameter gradient must come back in
    float32 (the engine checks it) and agree with float64 within ``rtol`` of the array's largest value."""
    twin = Network.from_config(net.config, registry=registry, dtype="float32")
    for tree in ("params", "buffers"):
        for layer, named in getattr(net, tree).items():
            for name, array in named.items():
                getattr(twin, tree)[layer][name][...] = array
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, *net.input_shape))
    probe = rng.standard_normal((batch, *net.output_shape))
    reference, single = (_one_pass(n, x.astype(n.dtype), probe.astype(n.dtype), seed, training) for n in (net, twin))
    for key, expected in reference.items():
        got = single[key]
        scale = float(np.max(np.abs(expected))) if expected.size else 0.0
        error = float(np.max(np.abs(got - expected))) if expected.size else 0.0
        if error > rtol * scale + 1e-6:
            raise AssertionError(f"{key} in float32 differs from float64 by up to {error:.3g} "
                                 f"(largest value {scale:.3g}, allowed {rtol:g} of it)")


def check_network_gradients(net: Network, *, batch: int = 2, seed: int = 0, training: bool = True,
                            eps: float = 1e-6, rtol: float = 1e-5, atol: float = 1e-8,
                            max_checks: int = 200, x: np.ndarray | None = None) -> None:
    """Check every parameter gradient and the input gradient of a float64 network.

    At most ``max_checks`` entries of each array are perturbed (chosen at random, seeded); random
    layers (dropout) draw the same numbers in every forward pass.
    """
    if net.dtype != np.float64:
        raise ValueError("gradient checks need a float64 network: Network.from_config(..., dtype='float64')")
    rng = np.random.default_rng(seed)
    if x is None:
        x = rng.standard_normal((batch, *net.input_shape))
    probe = rng.standard_normal((x.shape[0], *net.output_shape))

    def loss() -> float:
        for ctx in net.contexts.values():
            ctx.rng = np.random.default_rng(seed)
        with contract_as_assertion():
            return float(np.sum(net.forward(x, training=training) * probe))

    loss()
    with contract_as_assertion():
        dx = net.backward(probe)
    analytic = {(INPUT, "x"): dx.copy()}
    for layer, grads in net.grads.items():
        for name, g in grads.items():
            analytic[(layer, name)] = g.copy()
    arrays = {(INPUT, "x"): x}
    for layer, params in net.params.items():
        for name, p in params.items():
            arrays[(layer, name)] = p
    for (layer, name), array in arrays.items():
        flat = array.reshape(-1)
        picks = np.arange(flat.size) if flat.size <= max_checks else rng.choice(flat.size, max_checks, replace=False)
        numeric = np.empty(len(picks))
        for k, i in enumerate(picks):
            old = flat[i]
            flat[i] = old + eps
            up = loss()
            flat[i] = old - eps
            down = loss()
            flat[i] = old
            numeric[k] = (up - down) / (2 * eps)
        got = analytic[(layer, name)].reshape(-1)[picks]
        if not np.allclose(got, numeric, rtol=rtol, atol=atol):
            worst = int(np.argmax(np.abs(got - numeric)))
            raise AssertionError(f"gradient of {layer}.{name} is off at flat index {picks[worst]}: "
                                 f"backward gives {got[worst]:.8g}, finite differences {numeric[worst]:.8g} "
                                 f"(max abs error {np.max(np.abs(got - numeric)):.3g})")


def _one_pass(net: Network, x, probe, seed: int, training: bool) -> dict[str, np.ndarray]:
    """``{"output": y, "gradient of input": dx, "gradient of LAYER.NAME": g, ...}`` of one forward
    and backward pass, random layers drawing from ``seed``."""
    for ctx in net.contexts.values():
        ctx.rng = np.random.default_rng(seed)
    with contract_as_assertion():
        result = {"output": net.forward(x, training=training).copy()}
        result["gradient of input"] = net.backward(probe).copy()
    for layer, grads in net.grads.items():
        for name, g in grads.items():
            result[f"gradient of {layer}.{name}"] = g.copy()
    return result


@contextmanager
def contract_as_assertion():
    """A layer that returns the wrong shape or dtype fails the check like a wrong gradient does."""
    try:
        yield
    except LayerContractError as err:
        raise AssertionError(str(err)) from None
