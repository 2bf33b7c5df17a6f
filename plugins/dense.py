"""Flatten and fully connected layers (CPU: register-blocked Numba products, no BLAS, so no second
thread pool spins against the conv kernels' threads; CUDA: a tiled shared-memory product,
:mod:`cnnrun.plugins.dense_cuda`)."""

from __future__ import annotations

from functools import lru_cache

import numba
import numpy as np
from numba import prange

from cnnrun.engine import Layer, hookimpl
from cnnrun.engine.jit import cpu_kernel, launch
from cnnrun.engine.layer import uniform_fan_in_
from cnnrun.engine.options import bool_option, int_option
from cnnrun.plugins.products import row_dots, rows_product

FEATURE_TILE = 1024
"""The backward products work on runs of this many features (a few rows of them stay in L1)."""


class Flatten(Layer):
    """Every sample to one vector, in C order; backward reshapes back. PyTorch: ``nn.Flatten()``.

    Shape: (C, H, W) or (C, L) -> (C*H*W,) or (C*L,); (F,) stays (F,).
    """

    type_name = "flatten"

    def output_shape(self, shape):
        return (int(np.prod(shape)),)

    def forward(self, ctx, x):
        ctx.saved.shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, ctx, grad):
        return grad.reshape(ctx.saved.shape)

    forward_cuda, backward_cuda = forward, backward  # reshapes of device arrays are views too


class Linear(Layer):
    """y = x W^T + b, W of shape (out_features, in_features). PyTorch: ``nn.Linear(in, out, bias)``.

    Shape: (in_features,) -> (out_features,); in_features is read from the input, which must be
    1-D (put a ``flatten`` layer after a conv). Init: U(-1/sqrt(in_features), 1/sqrt(in_features)).
    Backward: dx = dy W, dW = dy^T x, db = sum_n dy.
    """

    type_name = "linear"

    def __init__(self, name, out_features, bias=True):
        super().__init__(name)
        self.out_features = int_option(out_features, "out_features")
        self.bias = bool_option(bias, "bias")

    def output_shape(self, shape):
        if len(shape) != 1:
            raise self.error(f"expects a 1-D input (in_features,); got input shape {shape}: "
                             f'add a "flatten" layer first')
        return (self.out_features,)

    def parameter_shapes(self, shape):
        shapes = {"weight": (self.out_features, shape[0])}
        if self.bias:
            shapes["bias"] = (self.out_features,)
        return shapes

    def initialize(self, params, buffers, rng):
        fan_in = params["weight"].shape[1]
        for array in params.values():  # weight first, then bias, as PyTorch draws them
            uniform_fan_in_(array, fan_in, rng)

    def macs(self, shape):
        return shape[0] * self.out_features

    def forward(self, ctx, x):
        x = ctx.saved.x = np.ascontiguousarray(x)
        weight = ctx.params["weight"]
        y = np.empty((x.shape[0], self.out_features), x.dtype)
        base = ctx.params["bias"] if self.bias else np.zeros(self.out_features, x.dtype)
        blocks = ctx.workspace("linear.blocks", (numba.get_num_threads(), 4, self.out_features), x.dtype)
        launch(_linear_forward, y.size * x.shape[1] // 8, x, weight.reshape(-1), _row_starts(*weight.shape), base, y,
               blocks)
        return y

    def backward(self, ctx, grad):
        x, weight = ctx.saved.x, ctx.params["weight"]
        grad = np.ascontiguousarray(grad, x.dtype)
        if self.bias:
            np.sum(grad, axis=0, out=ctx.grads["bias"])
        (n, features), out_features = x.shape, self.out_features
        tile = min(FEATURE_TILE, features)
        blocks = ctx.workspace("linear.tiles", (numba.get_num_threads(), 4, tile), x.dtype)
        padded = ctx.workspace("linear.grad", (_round4(n), _round4(out_features)), x.dtype)
        padded.fill(0)
        padded[:n, :out_features] = grad  # dx = grad @ W: rows of grad against the rows of W
        dx = np.empty(x.shape, x.dtype)
        work = x.size * out_features // 8
        launch(_rows_times_rows, work, padded, weight.reshape(-1), _row_starts(out_features, features, padded.shape[1]),
               dx, tile, blocks)
        padded = ctx.workspace("linear.grad_t", (_round4(out_features), _round4(n)), x.dtype)
        padded.fill(0)
        padded[:out_features, :n] = grad.T  # dW = grad^T @ x: columns of grad against the rows of x
        launch(_rows_times_rows, work, padded, x.reshape(-1), _row_starts(n, features, padded.shape[1]),
               ctx.grads["weight"], tile, blocks)
        return dx

    def forward_cuda(self, ctx, x):
        from . import dense_cuda

        ctx.saved.x = x
        y = ctx.backend.empty((x.shape[0], self.out_features), x.dtype)
        dense_cuda.linear_forward(x, ctx.params["weight"], ctx.params.get("bias"), y)
        return y

    def backward_cuda(self, ctx, grad):
        from . import dense_cuda

        x = ctx.saved.x
        dx = ctx.backend.empty(x.shape, x.dtype)
        dense_cuda.linear_backward(grad, x, ctx.params["weight"], ctx.grads["weight"], ctx.grads.get("bias"), dx)
        return dx


# -- CPU kernels ----------------------------------------------------------------------------------
@lru_cache(maxsize=64)
def _row_starts(rows, length, padded=None) -> np.ndarray:
    """offsets[k] = k * length for the ``rows`` rows of a flat ``(rows, length)`` array, 0 up to
    ``padded`` entries (read-only)."""
    offsets = np.zeros(padded or rows, np.int64)
    offsets[:rows] = np.arange(rows) * length
    offsets.flags.writeable = False
    return offsets


def _round4(value) -> int:
    return -(-value // 4) * 4


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


@hookimpl
def cnnrun_register_layers(register):
    for layer in (Flatten, Linear):
        register(layer)
