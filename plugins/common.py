"""What several layer families' kernels share: the convolution geometry and small integer helpers."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Geometry(NamedTuple):
    """A 2-D convolution's kernel size, stride, padding before (top, left), dilation (each ``(h, w)``)
    and groups (conv1d runs as a height-1 conv2d)."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    groups: int


def cdiv(a: int, b: int) -> int:
    """ceil(a / b) for integers."""
    return -(-a // b)


def round_up(value: int, multiple: int = 4) -> int:
    """``value`` rounded up to a multiple of ``multiple``."""
    return -(-value // multiple) * multiple


def grouped(w, groups: int):
    """A weight ``(O, C/G, kh, kw)`` as ``(G, O/G, C/G*kh*kw)`` (a view; NumPy or device arrays)."""
    return w.reshape(groups, w.shape[0] // groups, w.size // w.shape[0])


def bias_grad(grad: np.ndarray, grad_bias) -> None:
    """``grad_bias[o] = sum of grad[:, o]`` over samples and pixels of an (N, O, H, W) NumPy array
    (nothing when ``grad_bias`` is None)."""
    if grad_bias is not None:
        np.sum(grad, axis=(0, 2, 3), out=grad_bias)
