"""CUDA kernels of the merge layers: element-wise operations, sums over broadcast axes and channel
concatenation.

A broadcasting operation gathers each input's element of output element i through
:func:`~cnnrun.engine.cuda.strided_index` with the input's strides set to 0 on its size-1 axes; inputs
of one shape take a plain flat loop. The sum of a gradient to a broadcast input's shape (again through
strided offsets) is a thread per output element when it sums fewer values than a block has threads,
else a block per output element with a block sum (a per-channel gradient over the batch and the map).

Concatenation copies each input into its channel range of the output viewed as (N, C, S); the
backward copies the ranges back out. Both are one grid-stride copy kernel.
"""

from __future__ import annotations

import math

from numba import cuda, float64

from cnnrun.engine.cuda import (MAX_BLOCK_SIZE, block_size, block_sum, blocks_for, channel_view, flat, grid,
                               index_array, strided_index)

from .cpu import reduced_axes

OPERATIONS = {"add": 0, "sub": 1, "mul": 2}


@cuda.jit(device=True)
def _apply(op, a, b):
    if op == 0:
        return a + b
    if op == 1:
        return a - b
    return a * b


@cuda.jit
def _same_shape(op, out, a, b):
    for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        out[i] = _apply(op, a[i], b[i])


@cuda.jit
def _broadcast(op, out, shape, a, a_strides, b, b_strides):
    for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        out[i] = _apply(op, a[strided_index(i, shape, a_strides)], b[strided_index(i, shape, b_strides)])


@cuda.jit
def _sum_to_by_thread(x, strides, kept_shape, summed_shape, factor, out):
    """out[t] = factor * the sum of x over the summed axes at output position t: a thread per output
    element (few values summed each)."""
    count = x.size // out.size
    for t in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        base = strided_index(t, kept_shape, strides)
        total = 0.0
        for j in range(count):
            total += x[base + strided_index(j, summed_shape, strides)]
        out[t] = total * factor


@cuda.jit
def _sum_to_by_block(x, strides, kept_shape, summed_shape, factor, out):
    """The same with a block per output element (many values summed each), its threads striding over
    the summed values, then a block sum."""
    partial = cuda.shared.array(MAX_BLOCK_SIZE, float64)
    count = x.size // out.size
    for t in range(cuda.blockIdx.x, out.size, cuda.gridDim.x):
        base = strided_index(t, kept_shape, strides)
        total = 0.0
        for j in range(cuda.threadIdx.x, count, cuda.blockDim.x):
            total += x[base + strided_index(j, summed_shape, strides)]
        total = block_sum(partial, total)
        if cuda.threadIdx.x == 0:
            out[t] = total * factor


@cuda.jit
def _add_into(out, a):
    for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        out[i] += a[i]


@cuda.jit
def _copy_channels(source, target, offset, to_target):
    """to_target: target[n, offset + c, s] = source[n, c, s]; else the other way round."""
    batch, channels, spatial = source.shape
    for i in range(cuda.grid(1), source.size, cuda.gridsize(1)):
        n, c, s = i // (channels * spatial), (i // spatial) % channels, i % spatial
        if to_target:
            target[n, offset + c, s] = source[n, c, s]
        else:
            source[n, c, s] = target[n, offset + c, s]


def add_forward(inputs):
    """x_1 + x_2 + ... (same shapes), as a new array."""
    y = cuda.device_array(inputs[0].shape, inputs[0].dtype)
    if y.size:
        _same_shape[grid(y.size)](OPERATIONS["add"], flat(y), flat(inputs[0]), flat(inputs[1]))
        for x in inputs[2:]:
            _add_into[grid(y.size)](flat(y), flat(x))
    return y


def element_strides(shape) -> list[int]:
    """C-order strides of ``shape`` in elements, 0 on its size-1 axes (they broadcast)."""
    return [0 if n == 1 else math.prod(shape[d + 1:]) for d, n in enumerate(shape)]


def elementwise(op, a, b):
    """``a OP b`` ("add", "sub" or "mul") for arrays of one rank, size-1 dimensions broadcast; a new array."""
    shape = tuple(max(n, m) for n, m in zip(a.shape, b.shape))
    out = cuda.device_array(shape, a.dtype)
    if out.size == 0:
        return out
    if a.shape == b.shape:
        _same_shape[grid(out.size)](OPERATIONS[op], flat(out), flat(a), flat(b))
    else:
        _broadcast[grid(out.size)](OPERATIONS[op], flat(out), index_array(shape), flat(a),
                                   index_array(element_strides(a.shape)), flat(b),
                                   index_array(element_strides(b.shape)))
    return out


def sum_to_shape(x, shape, factor, out=None):
    """factor * x summed over the axes where ``shape`` is 1 and x is not, shaped ``shape``; into ``out``
    (a device array of that size) when given. x itself when nothing is summed, factor is 1 and no ``out``."""
    axes = reduced_axes(x.shape, shape)
    if not axes and factor == 1 and out is None:
        return x
    result = cuda.device_array(tuple(shape), x.dtype) if out is None else out.reshape(tuple(shape))
    if result.size:
        summed = [n if d in axes else 1 for d, n in enumerate(x.shape)]
        strides = [math.prod(x.shape[d + 1:]) for d in range(x.ndim)]
        by_block = x.size // result.size >= block_size()
        launch = (blocks_for(result.size), block_size()) if by_block else grid(result.size)
        kernel = _sum_to_by_block if by_block else _sum_to_by_thread
        kernel[launch](flat(x), index_array(strides), index_array(shape), index_array(summed),
                       x.dtype.type(factor), flat(result))
    return result if out is None else out


def concat_forward(inputs):
    """The inputs stacked along axis 1, as a new array."""
    first = inputs[0]
    out = cuda.device_array((first.shape[0], sum(x.shape[1] for x in inputs), *first.shape[2:]), first.dtype)
    target, offset = channel_view(out), 0
    for x in inputs:
        _copy_channels[grid(x.size)](channel_view(x), target, offset, True)
        offset += x.shape[1]
    return out


def concat_backward(grad, channels):
    """``grad`` split along axis 1 into arrays of ``channels[i]`` channels each."""
    source, offset, grads = channel_view(grad), 0, []
    for count in channels:
        g = cuda.device_array((grad.shape[0], count, *grad.shape[2:]), grad.dtype)
        _copy_channels[grid(g.size)](channel_view(g), source, offset, False)
        offset += count
        grads.append(g)
    return tuple(grads)


KERNELS = {"add_forward": add_forward, "elementwise": elementwise, "sum_to_shape": sum_to_shape,
           "concat_forward": concat_forward, "concat_backward": concat_backward}
