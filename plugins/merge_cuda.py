"""CUDA kernels of the merge layers: element-wise sum (the first two inputs are added by the
backend's ``add``) and channel concatenation.

Concatenation copies each input into its channel range of the output viewed as (N, C, S); the
backward copies the ranges back out. Both are one grid-stride copy kernel.
"""

from __future__ import annotations

from numba import cuda

from cnnrun.engine.cuda import channel_view, flat, grid


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


def add_into(out, x) -> None:
    """out += x (same shapes)."""
    _add_into[grid(out.size)](flat(out), flat(x))


def concat_forward(inputs, out) -> None:
    """out = the inputs stacked along axis 1."""
    target, offset = channel_view(out), 0
    for x in inputs:
        _copy_channels[grid(x.size)](channel_view(x), target, offset, True)
        offset += x.shape[1]


def concat_backward(grad, grads) -> None:
    """Split ``grad`` along axis 1 into ``grads`` (one array per input, shaped like it)."""
    source, offset = channel_view(grad), 0
    for g in grads:
        _copy_channels[grid(g.size)](channel_view(g), source, offset, False)
        offset += g.shape[1]
