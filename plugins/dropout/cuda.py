"""CUDA kernels of dropout: the element-wise mask is drawn on the device; the small masks of
dropout2d and drop_path (one value per channel or per sample) are drawn on the host as on the CPU.

xoroshiro128+ generators (``numba.cuda.random``), one per thread, seeded from a seed drawn from
``ctx.rng`` at every training forward, so a seed gives the same masks (for the same launch size)
and nothing is copied from the host. The mask is not the CPU's for the same seed.
"""

from __future__ import annotations

import numpy as np
from numba import cuda
from numba.cuda.random import init_xoroshiro128p_state, xoroshiro128p_dtype, xoroshiro128p_uniform_float64

from cnnrun.engine.cuda import flat, grid

from .cpu import group_mask, kept_scale


@cuda.jit(device=True)
def _seed_generator(states, index, seed):
    """Generator ``index`` from two SplitMix64 outputs of seed + 2 * index (and + 1)."""
    init_xoroshiro128p_state(states, index, seed + 2 * index)
    first = states[index]["s0"]
    init_xoroshiro128p_state(states, index, seed + 2 * index + 1)
    states[index]["s0"] = first


@cuda.jit
def _dropout_forward(x, states, seed, p, scale, keep, y):
    """keep = (uniform >= p); y = x * scale where kept, else x * 0."""
    thread = cuda.grid(1)
    _seed_generator(states, thread, seed)
    for i in range(thread, x.size, cuda.gridsize(1)):
        kept = xoroshiro128p_uniform_float64(states, thread) >= p
        keep[i] = kept
        y[i] = x[i] * scale if kept else x[i] * 0


@cuda.jit
def _dropout_backward(grad, keep, scale, dx):
    for i in range(cuda.grid(1), grad.size, cuda.gridsize(1)):
        dx[i] = grad[i] * scale if keep[i] else grad[i] * 0


@cuda.jit
def _scale_groups(x, mask, group, y):
    """y[i] = x[i] * mask[i // group]: one mask value per run of ``group`` consecutive values."""
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        y[i] = x[i] * mask[i // group]


def _times_mask(x, mask):
    y = cuda.device_array(x.shape, x.dtype)
    if y.size:
        _scale_groups[grid(y.size)](flat(x), mask, x.size // mask.size, flat(y))
    return y


def dropout_forward(ctx, x, p):
    """``(y, mask)``: the mask ``(keep, scale)``, keep a uint8 workspace shaped like ``x`` drawn with one
    generator per thread from a seed drawn from ``ctx.rng``; y = x * keep * scale."""
    launch = grid(x.size)
    states = ctx.workspace("rng_states", (launch[0] * launch[1],), xoroshiro128p_dtype)
    keep = ctx.workspace("keep", x.shape, np.uint8)
    scale = kept_scale(p, x.dtype)
    y = cuda.device_array(x.shape, x.dtype)
    _dropout_forward[launch](flat(x), states, int(ctx.rng.integers(2**62)), p, scale, flat(keep), flat(y))
    return y, (keep, scale)


def dropout_backward(grad, mask):
    keep, scale = mask
    dx = cuda.device_array(grad.shape, grad.dtype)
    _dropout_backward[grid(grad.size)](flat(grad), flat(keep), scale, flat(dx))
    return dx


def group_dropout_forward(ctx, x, p, mask_shape):
    """``(y, mask)``: the CPU's mask (one keep per index of x's leading axes, drawn from ``ctx.rng`` on
    the host: N or N * C values), copied to the device; y = x * mask."""
    mask = cuda.to_device(group_mask(ctx, x, p, mask_shape).reshape(-1))
    return _times_mask(x, mask), mask


def group_dropout_backward(grad, mask):
    return _times_mask(grad, mask)


KERNELS = {"dropout_forward": dropout_forward, "dropout_backward": dropout_backward,
           "group_dropout_forward": group_dropout_forward, "group_dropout_backward": group_dropout_backward}
