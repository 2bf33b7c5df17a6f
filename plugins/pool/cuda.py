"""CUDA kernels for pooling (numba-cuda), on planes: ``x`` is ``(P, H, W)`` with P = N * C.

Window ``(oh, ow)`` covers rows ``oh * sh - ph + i * dh`` for ``i < kh`` (``dh``: max pooling's
dilation) and columns alike, clipped to the input, as in :mod:`.cpu` and PyTorch. Forward kernels
run one thread per output. Backward kernels run one thread per input element, which gathers the
gradient of every window that covers it, in window order: no two threads write one element (no
atomics), and the sums are added in the same order as on the CPU. Global average pooling is one
block per plane with a tree reduction.
"""

from __future__ import annotations

from numba import cuda

from cnnrun.engine.cuda import MAX_BLOCK_SIZE, block_size, block_sum, blocks_for, grid

from .window import bin_end, bin_start, taps, window


def max_pool_forward(x, argmax, kernel, stride, padding, dilation):
    """Max over each window of ``x`` ``(P, H, W)``; the output size is ``argmax.shape[1:]``.

    ``argmax`` (``int32``, filled here) receives the flat index ``ih * W + iw`` of each maximum: the
    first one in row-major window order; NaN wins (PyTorch: ``val > max || isnan(val)``).
    """
    y = cuda.device_array(argmax.shape, x.dtype)
    _max_forward[grid(y.size)](x, y, argmax, *kernel, *stride, *padding, *dilation)
    return y


def max_pool_backward(grad_y, argmax, kernel, stride, padding, dilation, in_hw):
    """The input gradient ``(P, H, W)``: each ``grad_y`` value added at its window's argmax."""
    grad_x = cuda.device_array((grad_y.shape[0], *in_hw), grad_y.dtype)
    spans = [d * (k - 1) + 1 for k, d in zip(kernel, dilation)]  # windows spanning (ih, iw) hold every tap of it
    _max_backward[grid(grad_x.size)](grad_y, argmax, grad_x, *spans, *stride, *padding)
    return grad_x


def avg_pool_forward(x, out_hw, kernel, stride, padding, padding_after, count_include_pad):
    """Mean over each window of ``x`` ``(P, H, W)``, with PyTorch's divisor (see ``_window``)."""
    y = cuda.device_array((x.shape[0], *out_hw), x.dtype)
    _avg_forward[grid(y.size)](x, y, *kernel, *stride, *padding, *padding_after, count_include_pad)
    return y


def avg_pool_backward(grad_y, in_hw, kernel, stride, padding, padding_after, count_include_pad):
    """The input gradient ``(P, H, W)``: each ``grad_y`` value / divisor added over its window."""
    grad_x = cuda.device_array((grad_y.shape[0], *in_hw), grad_y.dtype)
    _avg_backward[grid(grad_x.size)](grad_y, grad_x, *kernel, *stride, *padding, *padding_after,
                                     count_include_pad)
    return grad_x


def global_avg_pool_forward(x):
    """``y[p] = mean(x[p])`` for planes ``x`` ``(P, H, W)``; ``y`` is ``(P,)``."""
    y = cuda.device_array((x.shape[0],), x.dtype)
    _plane_means[blocks_for(x.shape[0]), block_size()](x.reshape(x.shape[0], x.size // x.shape[0]), y)
    return y


def global_avg_pool_backward(grad_y, in_hw):
    """``grad_x[p] = grad_y[p] / (H * W)`` everywhere, for ``grad_y`` ``(P,)``; ``grad_x`` is ``(P, H, W)``."""
    grad_x = cuda.device_array((grad_y.shape[0], in_hw[0] * in_hw[1]), grad_y.dtype)
    _spread[grid(grad_x.size)](grad_y, grad_x)
    return grad_x.reshape(grad_y.shape[0], *in_hw)


@cuda.jit(cache=True)
def _max_forward(x, y, argmax, kh, kw, sh, sw, ph, pw, dh, dw):
    height, width = x.shape[1], x.shape[2]
    out_h, out_w = y.shape[1], y.shape[2]
    for index in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        rest, ow = divmod(index, out_w)
        p, oh = divmod(rest, out_h)
        h0, h1 = _taps(oh * sh - ph, kh, dh, height)
        w0, w1 = _taps(ow * sw - pw, kw, dw, width)
        best, at = x[p, h0, w0], h0 * width + w0
        for ih in range(h0, h1, dh):
            for iw in range(w0, w1, dw):
                v = x[p, ih, iw]
                if v > best or v != v:
                    best, at = v, ih * width + iw
        y[p, oh, ow] = best
        argmax[p, oh, ow] = at


@cuda.jit(cache=True)
def _max_backward(grad_y, argmax, grad_x, kh, kw, sh, sw, ph, pw):
    """grad_x[p, ih, iw] = the sum of grad_y over the windows whose argmax is (ih, iw)."""
    out_h, out_w = grad_y.shape[1], grad_y.shape[2]
    height, width = grad_x.shape[1], grad_x.shape[2]
    for index in range(cuda.grid(1), grad_x.size, cuda.gridsize(1)):
        rest, iw = divmod(index, width)
        p, ih = divmod(rest, height)
        oh0, oh1 = _covering(ih, kh, sh, ph, out_h)
        ow0, ow1 = _covering(iw, kw, sw, pw, out_w)
        at = ih * width + iw
        total = grad_x.dtype.type(0)
        for oh in range(oh0, oh1):
            for ow in range(ow0, ow1):
                if argmax[p, oh, ow] == at:
                    total += grad_y[p, oh, ow]
        grad_x[p, ih, iw] = total


@cuda.jit(cache=True)
def _avg_forward(x, y, kh, kw, sh, sw, ph, pw, pb, pr, count_include_pad):
    height, width = x.shape[1], x.shape[2]
    out_h, out_w = y.shape[1], y.shape[2]
    for index in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        rest, ow = divmod(index, out_w)
        p, oh = divmod(rest, out_h)
        h0, h1, w0, w1, divisor = _window(oh, ow, height, width, kh, kw, sh, sw, ph, pw, pb, pr, count_include_pad)
        total = y.dtype.type(0)
        for ih in range(h0, h1):
            for iw in range(w0, w1):
                total += x[p, ih, iw]
        y[p, oh, ow] = total / y.dtype.type(divisor)


@cuda.jit(cache=True)
def _avg_backward(grad_y, grad_x, kh, kw, sh, sw, ph, pw, pb, pr, count_include_pad):
    """grad_x[p, ih, iw] = the sum of grad_y / divisor over the windows that cover (ih, iw)."""
    out_h, out_w = grad_y.shape[1], grad_y.shape[2]
    height, width = grad_x.shape[1], grad_x.shape[2]
    for index in range(cuda.grid(1), grad_x.size, cuda.gridsize(1)):
        rest, iw = divmod(index, width)
        p, ih = divmod(rest, height)
        oh0, oh1 = _covering(ih, kh, sh, ph, out_h)
        ow0, ow1 = _covering(iw, kw, sw, pw, out_w)
        total = grad_x.dtype.type(0)
        for oh in range(oh0, oh1):
            for ow in range(ow0, ow1):
                divisor = _window(oh, ow, height, width, kh, kw, sh, sw, ph, pw, pb, pr, count_include_pad)[4]
                total += grad_y[p, oh, ow] / grad_x.dtype.type(divisor)
        grad_x[p, ih, iw] = total


def adaptive_avg_pool_forward(x, out_hw):
    """Mean over each adaptive bin of ``x`` ``(P, H, W)``: rows ``[floor(i H / OH), ceil((i + 1) H / OH))``."""
    y = cuda.device_array((x.shape[0], *out_hw), x.dtype)
    _adaptive_avg_forward[grid(y.size)](x, y)
    return y


def adaptive_avg_pool_backward(grad_y, in_hw):
    """The input gradient ``(P, H, W)``: each ``grad_y`` value / bin size added over its bin."""
    grad_x = cuda.device_array((grad_y.shape[0], *in_hw), grad_y.dtype)
    _adaptive_avg_backward[grid(grad_x.size)](grad_y, grad_x)
    return grad_x


def adaptive_max_pool_forward(x, argmax):
    """Max over each adaptive bin of ``x`` ``(P, H, W)``; ``argmax`` as in :func:`max_pool_forward`."""
    y = cuda.device_array(argmax.shape, x.dtype)
    _adaptive_max_forward[grid(y.size)](x, y, argmax)
    return y


def adaptive_max_pool_backward(grad_y, argmax, in_hw):
    """The input gradient ``(P, H, W)``: each ``grad_y`` value added at its bin's argmax."""
    grad_x = cuda.device_array((grad_y.shape[0], *in_hw), grad_y.dtype)
    _adaptive_max_backward[grid(grad_x.size)](grad_y, argmax, grad_x)
    return grad_x


@cuda.jit(cache=True)
def _adaptive_avg_forward(x, y):
    height, width = x.shape[1], x.shape[2]
    out_h, out_w = y.shape[1], y.shape[2]
    for index in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        rest, ow = divmod(index, out_w)
        p, oh = divmod(rest, out_h)
        h0, h1 = _bin_start(oh, out_h, height), _bin_end(oh, out_h, height)
        w0, w1 = _bin_start(ow, out_w, width), _bin_end(ow, out_w, width)
        total = y.dtype.type(0)
        for ih in range(h0, h1):
            for iw in range(w0, w1):
                total += x[p, ih, iw]
        y[p, oh, ow] = total / y.dtype.type((h1 - h0) * (w1 - w0))


@cuda.jit(cache=True)
def _adaptive_avg_backward(grad_y, grad_x):
    """grad_x[p, ih, iw] = the sum of grad_y / bin size over the bins that hold (ih, iw): the bins
    ``[floor(ih OH / H), ceil((ih + 1) OH / H))``."""
    out_h, out_w = grad_y.shape[1], grad_y.shape[2]
    height, width = grad_x.shape[1], grad_x.shape[2]
    for index in range(cuda.grid(1), grad_x.size, cuda.gridsize(1)):
        rest, iw = divmod(index, width)
        p, ih = divmod(rest, height)
        total = grad_x.dtype.type(0)
        for oh in range(_bin_start(ih, height, out_h), _bin_end(ih, height, out_h)):
            rows = _bin_end(oh, out_h, height) - _bin_start(oh, out_h, height)
            for ow in range(_bin_start(iw, width, out_w), _bin_end(iw, width, out_w)):
                columns = _bin_end(ow, out_w, width) - _bin_start(ow, out_w, width)
                total += grad_y[p, oh, ow] / grad_x.dtype.type(rows * columns)
        grad_x[p, ih, iw] = total


@cuda.jit(cache=True)
def _adaptive_max_forward(x, y, argmax):
    height, width = x.shape[1], x.shape[2]
    out_h, out_w = y.shape[1], y.shape[2]
    for index in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        rest, ow = divmod(index, out_w)
        p, oh = divmod(rest, out_h)
        h0, h1 = _bin_start(oh, out_h, height), _bin_end(oh, out_h, height)
        w0, w1 = _bin_start(ow, out_w, width), _bin_end(ow, out_w, width)
        best, at = x[p, h0, w0], h0 * width + w0
        for ih in range(h0, h1):
            for iw in range(w0, w1):
                v = x[p, ih, iw]
                if v > best or v != v:
                    best, at = v, ih * width + iw
        y[p, oh, ow] = best
        argmax[p, oh, ow] = at


@cuda.jit(cache=True)
def _adaptive_max_backward(grad_y, argmax, grad_x):
    """grad_x[p, ih, iw] = the sum of grad_y over the bins whose argmax is (ih, iw)."""
    out_h, out_w = grad_y.shape[1], grad_y.shape[2]
    height, width = grad_x.shape[1], grad_x.shape[2]
    for index in range(cuda.grid(1), grad_x.size, cuda.gridsize(1)):
        rest, iw = divmod(index, width)
        p, ih = divmod(rest, height)
        at = ih * width + iw
        total = grad_x.dtype.type(0)
        for oh in range(_bin_start(ih, height, out_h), _bin_end(ih, height, out_h)):
            for ow in range(_bin_start(iw, width, out_w), _bin_end(iw, width, out_w)):
                if argmax[p, oh, ow] == at:
                    total += grad_y[p, oh, ow]
        grad_x[p, ih, iw] = total


@cuda.jit(cache=True)
def _plane_means(x, y):
    """y[p] = sum_s x[p, s] / S: one block per plane, its threads strided over s, then summed."""
    scratch = cuda.shared.array(MAX_BLOCK_SIZE, y.dtype)
    size = x.shape[1]
    for p in range(cuda.blockIdx.x, x.shape[0], cuda.gridDim.x):
        total = y.dtype.type(0)
        for s in range(cuda.threadIdx.x, size, cuda.blockDim.x):
            total += x[p, s]
        total = block_sum(scratch, total)
        if cuda.threadIdx.x == 0:
            y[p] = total / y.dtype.type(size)


@cuda.jit(cache=True)
def _spread(grad_y, grad_x):
    """grad_x[p, s] = grad_y[p] / S."""
    size = grad_x.shape[1]
    for index in range(cuda.grid(1), grad_x.size, cuda.gridsize(1)):
        p, s = divmod(index, size)
        grad_x[p, s] = grad_y[p] / grad_x.dtype.type(size)


@cuda.jit(device=True)
def _covering(i, k, s, pad, out):
    """The outputs ``[o0, o1)`` whose windows cover input ``i``: ``o*s - pad <= i < o*s - pad + k``."""
    o0 = max((i + pad - k) // s + 1, 0)  # floor division, also of a negative numerator
    o1 = min((i + pad) // s + 1, out)
    return o0, max(o0, o1)


_bin_start, _bin_end = cuda.jit(device=True)(bin_start), cuda.jit(device=True)(bin_end)
"""The CUDA builds of :func:`.window.bin_start` and :func:`.window.bin_end`."""

_window = cuda.jit(device=True)(window)
"""The CUDA build of :func:`.window.window`."""

_taps = cuda.jit(device=True)(taps)
"""The CUDA build of :func:`.window.taps`."""


KERNELS = {f.__name__: f for f in (max_pool_forward, max_pool_backward, avg_pool_forward, avg_pool_backward,
                                   global_avg_pool_forward, global_avg_pool_backward, adaptive_avg_pool_forward,
                                   adaptive_avg_pool_backward, adaptive_max_pool_forward, adaptive_max_pool_backward)}
