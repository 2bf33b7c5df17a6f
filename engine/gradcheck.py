"""Finite-difference gradient checks, for built-in layers and for plugin authors.

``check_layer_gradients({"type": "conv2d", ...}, (3, 7, 7))`` builds a one-layer network in float64,
takes the scalar loss L = sum(y * r) for a fixed random r, and compares ``backward``'s gradients with
central differences (L(v + eps) - L(v - eps)) / (2 eps) for the input and every parameter.
"""

from __future__ import annotations

import numpy as np

from .network import INPUT, Network


def check_layer_gradients(layer: dict, input_shape, *, batch: int = 2, seed: int = 0,
                          registry=None, training: bool = True, **tolerances) -> None:
    """Check one single-input layer (its JSON object) on a batch of ``input_shape`` (no batch).

    Raises ``AssertionError`` naming the first array whose gradient is off. Layers with several
    inputs are checked inside a small network with :func:`check_network_gradients`.
    """
    config = {"input": {"shape": list(input_shape)}, "layers": [dict(layer)]}
    net = Network.from_config(config, registry=registry, dtype="float64")
    net.initialize(seed)
    check_network_gradients(net, batch=batch, seed=seed, training=training, **tolerances)


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
        return float(np.sum(net.forward(x, training=training) * probe))

    loss()
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
