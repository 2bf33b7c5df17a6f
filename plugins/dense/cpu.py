"""CPU kernels of the linear layer: register-blocked Numba products, no BLAS, so no second thread
pool spins against the conv kernels' threads."""

from __future__ import annotations

from functools import lru_cache

import numba
import numpy as np
from numba import prange

from cnnrun.engine.jit import cpu_kernel, launch, num_threads
from cnnrun.plugins.common import round_up
from cnnrun.plugins.products.cpu import row_dots, rows_product

FEATURE_TILE = 1024
"""The backward products work on runs of this many features (a few rows of them stay in L1)."""


def linear_forward(ctx, x, weight, bias):
    """y = x W^T + b (``bias`` may be None)."""
    x = np.ascontiguousarray(x)
    out_features = weight.shape[0]
    y = np.empty((x.shape[0], out_features), x.dtype)
    base = bias if bias is not None else np.zeros(out_features, x.dtype)
    blocks = ctx.workspace("linear.blocks", (num_threads(), 4, out_features), x.dtype)
    launch(_linear_forward, y.size * x.shape[1] // 8, x, weight.reshape(-1), _row_starts(*weight.shape), base, y,
           blocks)
    return y


def linear_backward(ctx, x, grad, weight, grad_weight, grad_bias):
    """dW = dy^T x into ``grad_weight``, db = sum_n dy into ``grad_bias`` (each when given, not None: a
    frozen layer's are not); returns dx = dy W."""
    x = np.ascontiguousarray(x)
    grad = np.ascontiguousarray(grad, x.dtype)
    if grad_bias is not None:
        np.sum(grad, axis=0, out=grad_bias)
    (n, features), out_features = x.shape, weight.shape[0]
    tile = min(FEATURE_TILE, features)
    blocks = ctx.workspace("linear.tiles", (num_threads(), 4, tile), x.dtype)
    padded = ctx.workspace("linear.grad", (round_up(n), round_up(out_features)), x.dtype)
    padded.fill(0)
    padded[:n, :out_features] = grad  # dx = grad @ W: rows of grad against the rows of W
    dx = np.empty(x.shape, x.dtype)
    work = x.size * out_features // 8
    launch(_rows_times_rows, work, padded, weight.reshape(-1), _row_starts(out_features, features, padded.shape[1]),
           dx, tile, blocks)
    if grad_weight is None:
        return dx
    padded = ctx.workspace("linear.grad_t", (round_up(out_features), round_up(n)), x.dtype)
    padded.fill(0)
    padded[:out_features, :n] = grad.T  # dW = grad^T @ x: columns of grad against the rows of x
    launch(_rows_times_rows, work, padded, x.reshape(-1), _row_starts(n, features, padded.shape[1]),
           grad_weight, tile, blocks)
    return dx


@lru_cache(maxsize=64)
def _row_starts(rows, length, padded=None) -> np.ndarray:
    """offsets[k] = k * length for the ``rows`` rows of a flat ``(rows, length)`` array, 0 up to
    ``padded`` entries (read-only)."""
    offsets = np.zeros(padded or rows, np.int64)
    offsets[:rows] = np.arange(rows) * length
    offsets.flags.writeable = False
    return offsets


@cpu_kernel
def _linear_forward(x, w, offsets, base, y, blocks):
    """y[n, o] = base[o] + sum_f x[n, f] * w[o*F + f]: 4 rows of x at a time, dotted with every row of w."""
    n, features = x.shape
    flat = x.reshape(x.size)
    for block in prange((n + 3) // 4):
        first = 4 * block
        rows = min(4, n - first)
        out = blocks[numba.get_thread_id()]
        out[:] = 0
        row_dots(flat, first * features, features, rows, w, offsets, np.int64(0), features, out[:, 0:out.shape[1]])
        for r in range(rows):
            for o in range(y.shape[1]):
                y[first + r, o] = out[r, o] + base[o]


@cpu_kernel
def _rows_times_rows(a, src, offsets, out, tile, blocks):
    """out[r, f] = sum_k a[r, k] * src[offsets[k] + f]: ``a`` zero-padded to multiples of 4 both
    ways, work split over blocks of 4 rows and tiles of f."""
    rows, width = out.shape
    tiles = (width + tile - 1) // tile
    for item in prange((rows + 3) // 4 * tiles):
        block = item // tiles
        f0 = (item - block * tiles) * tile
        m = min(tile, width - f0)
        first = 4 * block
        buffer = blocks[numba.get_thread_id()]
        buffer[:, :m] = 0
        rows_product(a[first:first + 4, 0:a.shape[1]], src, offsets, f0, m, buffer)
        for r in range(min(4, rows - first)):
            row, values = out[first + r, f0:f0 + m], buffer[r]
            for t in range(m):
                row[t] = values[t]


KERNELS = {"linear_forward": linear_forward, "linear_backward": linear_backward}
