"""CPU kernels of dropout (NumPy): the mask is drawn from ``ctx.rng``."""

from __future__ import annotations

import numpy as np


def kept_scale(p: float, dtype) -> np.generic:
    """1 / (1 - p) in ``dtype``, as PyTorch computes it (``noise.div_(1 - p)``)."""
    dtype = np.dtype(dtype)
    return dtype.type(1) / dtype.type(1 - p)


def dropout_forward(ctx, x, p):
    """``(y, mask)``: mask = keep / (1 - p) in x's dtype, keep ~ Bernoulli(1 - p); y = x * mask."""
    keep = ctx.rng.random(x.shape) >= p
    mask = np.multiply(keep, kept_scale(p, x.dtype), dtype=x.dtype)
    return x * mask, mask


def dropout_backward(grad, mask):
    return grad * mask


def group_mask(ctx, x, p, mask_shape):
    """keep / (1 - p) in x's dtype, keep ~ Bernoulli(1 - p) of ``mask_shape`` (x's leading axes),
    drawn from ``ctx.rng`` and shaped to broadcast against x."""
    keep = ctx.rng.random(mask_shape) >= p
    mask = np.multiply(keep, kept_scale(p, x.dtype), dtype=x.dtype)
    return mask.reshape(*mask_shape, *(1,) * (x.ndim - len(mask_shape)))


def group_dropout_forward(ctx, x, p, mask_shape):
    """``(y, mask)``: one keep per index of x's leading axes ``mask_shape``; y = x * mask."""
    mask = group_mask(ctx, x, p, mask_shape)
    return x * mask, mask


KERNELS = {"dropout_forward": dropout_forward, "dropout_backward": dropout_backward,
           "group_dropout_forward": group_dropout_forward, "group_dropout_backward": dropout_backward}
