"""The CPU kernels of the swish layer (NumPy)."""

import numpy as np


def swish_forward(x, beta):
    """``(y, s)``: s = sigmoid(beta * x) (no overflow for x << 0), y = x * s."""
    s = np.exp(-np.logaddexp(x.dtype.type(0), -x.dtype.type(beta) * x))
    return x * s, s


def swish_backward(x, s, grad, beta):
    """dx = dy * (s + beta * x * s * (1 - s))."""
    return grad * (s + x.dtype.type(beta) * x * s * (1 - s))


KERNELS = {"swish_forward": swish_forward, "swish_backward": swish_backward}
