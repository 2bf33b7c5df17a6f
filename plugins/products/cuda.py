"""The CUDA matrix product of the layer families (numba-cuda): ``c[g] (+)= op(a[g]) @ op(b[g])`` per
group, ``op`` the identity or the transpose; conv (im2col products) and linear use it.

A 16 x 16 block computes a 64 x 64 tile of the product from slices of both operands staged in shared
memory (:func:`gemm`); a long inner dimension with few output tiles is split across blocks into
partial products that :func:`sum_parts` adds up.
"""

from __future__ import annotations

from numba import cuda

from cnnrun.engine.cuda import blocks_for, grid
from cnnrun.plugins.common import cdiv

TILE = 16
"""Threads per side of a matrix-product block (16 x 16 = 256 threads, whatever the block size)."""
WORK = 4
"""Outputs per thread per side: a block computes a SPAN x SPAN tile of the product."""
SPAN = TILE * WORK
DEPTH = 16
"""The slice of the inner dimension staged in shared memory per step."""
LOADS = SPAN * DEPTH // (TILE * TILE)
"""Elements of each operand's tile that one thread loads per step."""
A_TILE, B_TILE = (SPAN, DEPTH + 1), (DEPTH, SPAN + 1)
"""Shared-memory tiles of the operands; the extra column keeps transposed stores free of bank conflicts."""
SPLIT_MIN_DEPTH = 512
"""A split of the inner dimension is at least this long (it pays for writing a partial product)."""
SPLIT_TARGET_BLOCKS = 512
"""Split the inner dimension until the product has about this many (tile, split) jobs."""


def matmul(ctx, key, a, b, c, trans_a=False, trans_b=False, accumulate=False):
    """``c[g] = op(a[g]) @ op(b[g])`` for each group g (``c[g] +=`` when ``accumulate``); ``op``
    transposes. A long inner dimension with few output tiles is split across blocks into partial
    products in the workspace ``ctx.workspace(key + ".parts")`` (one per product of a layer, so that its
    shape stays put), then summed into c. All device arrays of one dtype."""
    groups, rows, cols = c.shape
    depth = a.shape[1] if trans_a else a.shape[2]
    tiles = groups * cdiv(rows, SPAN) * cdiv(cols, SPAN)
    splits = max(1, min(cdiv(depth, SPLIT_MIN_DEPTH), SPLIT_TARGET_BLOCKS // tiles))
    if splits == 1:
        gemm[blocks_for(tiles), (TILE, TILE)](a, b, c.reshape(1, groups, rows, cols), trans_a, trans_b,
                                               accumulate)
        return
    parts = ctx.workspace(f"{key}.parts", (splits, groups, rows, cols), c.dtype)
    gemm[blocks_for(tiles * splits), (TILE, TILE)](a, b, parts, trans_a, trans_b, False)
    sum_parts[grid(c.size)](parts.reshape(splits, c.size), c.reshape(c.size), accumulate)


@cuda.jit(cache=True)
def gemm(a, b, c, trans_a, trans_b, accumulate):
    """``c[s, g] (+)= op(a[g]) @ op(b[g])`` over split ``s`` of the inner dimension (of
    ``c.shape[0]`` equal splits). ``op(a[g])`` is ``(R, K)``: ``a[g]`` itself, or ``a[g]`` ``(K, R)``
    transposed when ``trans_a``; ``op(b[g])`` ``(K, M)`` likewise.

    A 16 x 16 block computes a 64 x 64 tile, each thread a 4 x 4 grid of outputs strided by 16 (so
    stores are coalesced); 64 x 16 slices of op(a) and 16 x 64 of op(b) are staged in shared memory,
    read along the operand's contiguous axis whether or not it is transposed. Blocks loop
    grid-stride over (split, group, tile).
    """
    tile_a = cuda.shared.array(A_TILE, a.dtype)
    tile_b = cuda.shared.array(B_TILE, b.dtype)
    acc = cuda.local.array((WORK, WORK), c.dtype)
    zero = c.dtype.type(0)
    splits, groups, rows, cols = c.shape
    depth = a.shape[1] if trans_a else a.shape[2]
    per_split = -(-depth // splits)  # ceil(depth / splits), then rounded up to whole steps
    per_split = -(-per_split // DEPTH) * DEPTH
    tiles_r, tiles_c = -(-rows // SPAN), -(-cols // SPAN)
    ty, tx = cuda.threadIdx.y, cuda.threadIdx.x
    thread = ty * TILE + tx
    for job in range(cuda.blockIdx.x, splits * groups * tiles_r * tiles_c, cuda.gridDim.x):
        tile, tc = divmod(job, tiles_c)
        tile, tr = divmod(tile, tiles_r)
        s, g = divmod(tile, groups)
        r0, c0 = tr * SPAN, tc * SPAN
        k_begin = s * per_split
        k_end = min(k_begin + per_split, depth)
        for i in range(WORK):
            for j in range(WORK):
                acc[i, j] = zero
        busy = r0 + ty < rows and c0 + tx < cols  # else none of this thread's outputs exist
        for k0 in range(k_begin, k_end, DEPTH):
            for e in range(LOADS):
                at = e * TILE * TILE + thread
                value = zero
                if trans_a:  # a[g] is (K, R): consecutive threads read consecutive r
                    k, r = divmod(at, SPAN)
                    if k0 + k < k_end and r0 + r < rows:
                        value = a[g, k0 + k, r0 + r]
                else:
                    r, k = divmod(at, DEPTH)
                    if r0 + r < rows and k0 + k < k_end:
                        value = a[g, r0 + r, k0 + k]
                tile_a[r, k] = value
                value = zero
                if trans_b:  # b[g] is (M, K)
                    j, k = divmod(at, DEPTH)
                    if c0 + j < cols and k0 + k < k_end:
                        value = b[g, c0 + j, k0 + k]
                else:
                    k, j = divmod(at, SPAN)
                    if k0 + k < k_end and c0 + j < cols:
                        value = b[g, k0 + k, c0 + j]
                tile_b[k, j] = value
            cuda.syncthreads()
            if busy:
                for k in range(min(DEPTH, k_end - k0)):
                    for i in range(WORK):
                        left = tile_a[ty + i * TILE, k]
                        for j in range(WORK):
                            acc[i, j] += left * tile_b[k, tx + j * TILE]
            cuda.syncthreads()
        for i in range(WORK):
            r = r0 + ty + i * TILE
            for j in range(WORK):
                col = c0 + tx + j * TILE
                if r < rows and col < cols:
                    if accumulate:
                        c[s, g, r, col] += acc[i, j]
                    else:
                        c[s, g, r, col] = acc[i, j]


@cuda.jit(cache=True)
def sum_parts(parts, c, accumulate):
    """``c[i] (+)= sum_s parts[s, i]``: the splits of a product added up."""
    for i in range(cuda.grid(1), c.shape[0], cuda.gridsize(1)):
        total = parts[0, i]
        for s in range(1, parts.shape[0]):
            total += parts[s, i]
        if accumulate:
            c[i] += total
        else:
            c[i] = total
