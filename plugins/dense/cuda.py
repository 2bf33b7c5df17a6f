"""CUDA kernels of the linear layer: a tiled shared-memory matrix product and the bias gradient.

One kernel computes all three products of the layer, ``out = op(a) @ op(b) (+ bias)`` with ``op``
the identity or the transpose: y = x W^T + b, dx = dy W and dW = dy^T x. Each block of TILE x TILE
threads computes TILE x TILE tiles of ``out`` (grid-stride over the tiles) from TILE x TILE tiles of
both operands staged in shared memory, read coalesced whether or not an operand is transposed.
TILE is the largest power of two whose square fits in ``CNNRUN_CUDA_BLOCK_SIZE`` threads, at most
32: 16 by default (256 threads), 4 with the tests' 32.
"""

from __future__ import annotations

import functools

import numpy as np
from numba import cuda, from_dtype

from cnnrun.engine.cuda import block_size, flat, grid, max_blocks

MAX_TILE = 32


def tile_size() -> int:
    """The side of the product's square tiles (and blocks) for the current block size."""
    tile = 1
    while tile < MAX_TILE and (2 * tile) ** 2 <= block_size():
        tile *= 2
    return tile


@functools.cache
def _matmul_kernel(dtype: np.dtype, TILE: int):
    """The tiled product kernel for one dtype and tile size (shared arrays need both at compile time)."""
    T = from_dtype(dtype)

    @cuda.jit
    def matmul(a, b, bias, out, trans_a, trans_b, has_bias):
        tile_a = cuda.shared.array((TILE, TILE + 1), T)  # +1: no shared-memory bank conflicts
        tile_b = cuda.shared.array((TILE, TILE + 1), T)
        ty, tx = cuda.threadIdx.y, cuda.threadIdx.x
        m, n = out.shape
        depth = a.shape[0] if trans_a else a.shape[1]
        for row0 in range(cuda.blockIdx.y * TILE, m, cuda.gridDim.y * TILE):
            for col0 in range(cuda.blockIdx.x * TILE, n, cuda.gridDim.x * TILE):
                acc = T(0)
                for k0 in range(0, depth, TILE):
                    # tile_a[r, k] = op(a)[row0 + r, k0 + k]; tile_b[k, c] = op(b)[k0 + k, col0 + c]
                    if trans_a:  # op(a)[r, k] = a[k, r]: read along a's rows
                        k, r = k0 + ty, row0 + tx
                        tile_a[tx, ty] = a[k, r] if k < depth and r < m else 0
                    else:
                        r, k = row0 + ty, k0 + tx
                        tile_a[ty, tx] = a[r, k] if r < m and k < depth else 0
                    if trans_b:  # op(b)[k, c] = b[c, k]
                        c, k = col0 + ty, k0 + tx
                        tile_b[tx, ty] = b[c, k] if c < n and k < depth else 0
                    else:
                        k, c = k0 + ty, col0 + tx
                        tile_b[ty, tx] = b[k, c] if k < depth and c < n else 0
                    cuda.syncthreads()
                    for j in range(TILE):
                        acc += tile_a[ty, j] * tile_b[j, tx]
                    cuda.syncthreads()
                row, col = row0 + ty, col0 + tx
                if row < m and col < n:
                    out[row, col] = acc + bias[col] if has_bias else acc

    return matmul


def matmul(a, b, out, *, trans_a: bool = False, trans_b: bool = False, bias=None):
    """``out = op(a) @ op(b)``, plus ``bias`` (one value per column of ``out``) when given; ``op``
    transposes an operand when ``trans_a`` / ``trans_b``. All device arrays of one dtype."""
    m, n = out.shape
    tile = tile_size()
    tiles_m, tiles_n = -(-m // tile), -(-n // tile)
    limit = max_blocks()
    blocks_x = min(tiles_n, limit)
    blocks_y = min(tiles_m, max(1, limit // blocks_x))
    kernel = _matmul_kernel(np.dtype(out.dtype), tile)
    kernel[(blocks_x, blocks_y), (tile, tile)](a, b, flat(out) if bias is None else bias, out,
                                               trans_a, trans_b, bias is not None)


@cuda.jit
def _column_sums(a, out):
    """out[j] = sum_i a[i, j], accumulated in float64."""
    rows, cols = a.shape
    for j in range(cuda.grid(1), cols, cuda.gridsize(1)):
        total = 0.0
        for i in range(rows):
            total += a[i, j]
        out[j] = total


def column_sums(a, out) -> None:
    """``out[j] = sum_i a[i, j]`` for a 2-D device array ``a`` (the bias gradient sum_n dy)."""
    _column_sums[grid(a.shape[1])](a, out)


def linear_forward(ctx, x, weight, bias):
    """y = x W^T + b (``bias`` may be None)."""
    y = cuda.device_array((x.shape[0], weight.shape[0]), x.dtype)
    matmul(x, weight, y, trans_b=True, bias=bias)
    return y


def linear_backward(ctx, x, grad, weight, grad_weight, grad_bias):
    """dW = dy^T x, db = sum_n dy (when ``grad_bias`` is given); returns dx = dy W."""
    matmul(grad, x, grad_weight, trans_a=True)
    if grad_bias is not None:
        column_sums(grad, grad_bias)
    dx = cuda.device_array(x.shape, x.dtype)
    matmul(grad, weight, dx)
    return dx


KERNELS = {"linear_forward": linear_forward, "linear_backward": linear_backward}
