"""What several layer families share: the convolution geometry, the padding option, small integer helpers."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from cnnrun.engine.errors import ConfigError
from cnnrun.engine.options import choice_option, int_tuple, show


class Geometry(NamedTuple):
    """A 2-D convolution's kernel size, stride, padding before (top, left), dilation (each ``(h, w)``),
    groups, and padding after (bottom, right) (conv1d runs as a height-1 conv2d). The kernels read
    ``padding``; the padding after is implied by the output size they are given."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    groups: int
    padding_after: tuple[int, int]


PADDING_WORDS = ("valid", "same", "same_lower")
"""``padding`` words: none; ONNX SAME_UPPER (the odd pixel after); ONNX SAME_LOWER (the odd pixel before)."""


def padding_option(value, dims: int, key: str = "padding", words=PADDING_WORDS):
    """A padding option: one of ``words``, or ``((before, after), ...)`` per dimension from an integer
    (every side), one integer per dimension (both sides), or one per side: ``[top, left, bottom, right]``
    in 2-D, ``[left, right]`` in 1-D (ONNX's ``pads`` order)."""
    named = f", or one of {', '.join(map(show, words))}" if words else ""
    if isinstance(value, str) and words:
        return choice_option(value, key, words)
    if isinstance(value, str) or isinstance(value, (list, tuple)) and len(value) not in (dims, 2 * dims):
        sides = "[top, left, bottom, right]" if dims == 2 else "[left, right]"
        raise ConfigError(f"{key} must be an integer, a list of {dims} (per dimension) or {2 * dims} (per side: "
                          f"{sides}) integers{named}; got {key}={show(value)}", key=key)
    if isinstance(value, (list, tuple)) and len(value) == 2 * dims:
        sides = int_tuple(value, 2 * dims, key, minimum=0)
        return tuple(zip(sides[:dims], sides[dims:]))
    return tuple((p, p) for p in int_tuple(value, dims, key, minimum=0))


def resolve_padding(padding, size, kernel, stride, dilation) -> tuple[tuple[int, int], ...]:
    """``(before, after)`` per spatial dimension of a :func:`padding_option` for an input of spatial ``size``.

    ``"same"`` / ``"same_lower"``: output ``ceil(in / stride)``, total padding
    ``max((out - 1) * stride + (kernel - 1) * dilation + 1 - in, 0)``, its odd pixel after / before.
    """
    if padding == "valid":
        return ((0, 0),) * len(size)
    if isinstance(padding, str):
        pads = []
        for i, k, s, d in zip(size, kernel, stride, dilation):
            total = max((-(-i // s) - 1) * s + (k - 1) * d + 1 - i, 0)
            small, large = total // 2, total - total // 2
            pads.append((small, large) if padding == "same" else (large, small))
        return tuple(pads)
    return padding


def onnx_pads(pads) -> list[int]:
    """``((before, after), ...)`` per spatial axis as ONNX's ``pads``: every before, then every after."""
    return [b for b, _ in pads] + [a for _, a in pads]


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
