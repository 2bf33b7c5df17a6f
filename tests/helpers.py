"""Small helpers shared by the tests."""

import numpy as np

TIMING = ("seconds", "samples_per_second")
"""Metrics that depend on the machine's speed, not on what was computed."""


def without_timing(records: list[dict]) -> list[dict]:
    """Metrics records without their timing fields, for comparing two runs exactly."""
    return [{k: v for k, v in record.items() if k not in TIMING} for record in records]


def numerical_gradient(f, x, eps=1e-6):
    """Central differences of the scalar f at x (float64), entry by entry."""
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + eps
        up = f(x)
        x[i] = old - eps
        down = f(x)
        x[i] = old
        grad[i] = (up - down) / (2 * eps)
    return grad


def with_statistics(net, seed=0):
    """Non-trivial batchnorm gamma, beta and running statistics."""
    rng = np.random.default_rng(seed)
    for node in net.nodes:
        if node.layer.type_name == "batchnorm":
            c = net.params[node.name]["weight"].shape[0]
            net.params[node.name]["weight"][...] = rng.uniform(0.5, 2.0, c)
            net.params[node.name]["bias"][...] = rng.normal(0, 1, c)
            net.buffers[node.name]["running_mean"][...] = rng.normal(0, 0.5, c)
            net.buffers[node.name]["running_var"][...] = rng.uniform(0.2, 3.0, c)
    return net


def narrowed(config: dict) -> dict:
    """``config`` with linear layers of 4096 outputs (vgg11_bn's classifier) narrowed to 64: those
    120M weights take seconds to build, write and convert, and nothing else about them differs."""
    for layer in config["layers"]:
        if layer.get("out_features") == 4096:
            layer["out_features"] = 64
    return config
