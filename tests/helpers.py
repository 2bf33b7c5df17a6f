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
