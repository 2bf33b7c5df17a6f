"""CUDA kernels of slice and permute: grid-stride copies.

A slice copies channel start + c * step of the input viewed as (N, C, S) to channel c of the output
(the backward the other way round, into zeros); a permutation gathers each output element through
:func:`~cnnrun.engine.cuda.strided_index` with the input's strides in the new axis order.
"""

from __future__ import annotations

import math

from numba import cuda

from cnnrun.engine.cuda import channel_view, flat, grid, index_array, strided_index


@cuda.jit
def _copy_strided_channels(small, large, start, step, to_small):
    """to_small: small[n, c, s] = large[n, start + c * step, s]; else the other way round."""
    batch, channels, spatial = small.shape
    for i in range(cuda.grid(1), small.size, cuda.gridsize(1)):
        n, c, s = i // (channels * spatial), (i // spatial) % channels, i % spatial
        if to_small:
            small[n, c, s] = large[n, start + c * step, s]
        else:
            large[n, start + c * step, s] = small[n, c, s]


@cuda.jit
def _zero(out):
    for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        out[i] = 0


@cuda.jit
def _gather(x, out, shape, strides):
    for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        out[i] = x[strided_index(i, shape, strides)]


def slice_forward(x, start, step, count):
    """Channels start, start + step, ... (``count`` of them) of x, as a new array."""
    y = cuda.device_array((x.shape[0], count, *x.shape[2:]), x.dtype)
    if y.size:
        _copy_strided_channels[grid(y.size)](channel_view(y), channel_view(x), start, step, True)
    return y


def slice_backward(grad, channels, start, step):
    """An array of ``channels`` channels, zero but for ``grad`` in channels start, start + step, ..."""
    dx = cuda.device_array((grad.shape[0], channels, *grad.shape[2:]), grad.dtype)
    if dx.size:
        _zero[grid(dx.size)](flat(dx))
        _copy_strided_channels[grid(grad.size)](channel_view(grad), channel_view(dx), start, step, False)
    return dx


def permute(x, dims):
    """x with its axes in the order ``dims``, as a new array."""
    shape = tuple(x.shape[d] for d in dims)
    strides = [math.prod(x.shape[d + 1:]) for d in dims]
    y = cuda.device_array(shape, x.dtype)
    if y.size:
        _gather[grid(y.size)](flat(x), flat(y), index_array(shape), index_array(strides))
    return y


KERNELS = {"slice_forward": slice_forward, "slice_backward": slice_backward, "permute": permute}
