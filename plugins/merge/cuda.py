"""CUDA kernels of the merge layers: element-wise sum and channel concatenation.

Concatenation copies each input into its channel range of the output viewed as (N, C, S); the
backward copies the ranges back out. Both are one grid-stride copy kernel.
"""

from __future__ import annotations

from numba import cuda

from cnnrun.engine.cuda import channel_view, flat, grid


@cuda.jit
def _add(out, a, b):
    for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        out[i] = a[i] + b[i]


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
        _add[grid(y.size)](flat(y), flat(inputs[0]), flat(inputs[1]))
        for x in inputs[2:]:
            _add_into[grid(y.size)](flat(y), flat(x))
    return y


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


KERNELS = {"add_forward": add_forward, "concat_forward": concat_forward, "concat_backward": concat_backward}
