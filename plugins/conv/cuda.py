"""CUDA kernels of the convolution family (numba-cuda), and the wrappers the layers call on "cuda".

The same three products as :mod:`.cpu` make both layers: *forward* (conv2d's forward,
conv_transpose2d's input gradient), *transpose* (conv2d's input gradient, conv_transpose2d's
forward) and *weight* (both weight gradients). With x ``(N, C, H, W)``, w ``(O, C/G, kh, kw)`` and
y ``(N, O, OH, OW)``, for ``o`` in group ``g``:

    y[n, o, i, j] = sum_{c, ki, kj} w[o, c, ki, kj] * x[n, g*C/G + c, i*sh - ph + ki*dh, j*sw - pw + kj*dw]

Depthwise weights (``C/G == 1``) take direct kernels. Everything else goes through im2col into a
device workspace (``col``: ``(C*kh*kw, m*OH*OW)`` for a chunk of m samples), a tiled shared-memory
matrix product per group, and back: ``rows`` ``(O, m*OH*OW)`` to y, or col2im to x. col2im and the
depthwise input gradient run one thread per input element gathering its contributions, so no two
threads write one element (no atomics, deterministic). A product with a long inner dimension and
few output tiles (the weight gradient's: samples x pixels) is split across blocks, its parts summed
by a second kernel; the depthwise weight gradient likewise sums per-sample parts. The bias gradient
is one block per channel with a tree reduction in shared memory.

All arrays are C-contiguous device arrays of one dtype; every kernel loops grid-stride.
"""

from __future__ import annotations

from numba import cuda

from cnnrun.engine.cuda import MAX_BLOCK_SIZE, block_size, block_sum, blocks_for, channel_view, grid

from cnnrun.plugins.common import Geometry, grouped
from cnnrun.plugins.products.cuda import matmul, sum_parts

WORKSPACE_BYTES = 64 << 20
"""The general path works on chunks of samples whose columns and rows fit in about this many bytes
(each layer keeps its own workspaces; 64 MiB already gives a product of hundreds of tiles)."""


# -- public wrappers (``algorithm``, the layer's option, picks among CPU paths only) -----------------
def conv2d_forward(ctx, x, weight, bias, geom: Geometry, out_hw, algorithm=None):
    """``conv(x, weight) + bias``, of shape ``(N, O, *out_hw)``. PyTorch: ``F.conv2d``."""
    y = cuda.device_array((x.shape[0], weight.shape[0], *out_hw), x.dtype)
    _forward(ctx, x, weight, bias, y, geom)
    return y


def conv2d_backward(ctx, x, grad, weight, geom: Geometry, grad_weight, grad_bias, algorithm=None, input_grad=True):
    """The gradient of :func:`conv2d_forward` with respect to ``x`` (computed all the same; None
    unless ``input_grad``); overwrites ``grad_weight`` and ``grad_bias`` (``None`` without a bias)."""
    _bias_grad(grad, grad_bias)
    dx = cuda.device_array(x.shape, x.dtype)
    _grads(ctx, x, grad, weight, geom, grad_weight, x_like=dx)
    return dx if input_grad else None


def conv_transpose2d_forward(ctx, x, weight, bias, geom: Geometry, out_hw):
    """``conv^T(x, weight) + bias``, of shape ``(N, weight.shape[1] * G, *out_hw)``: x plays the
    output of a conv whose input is the result. PyTorch: ``F.conv_transpose2d``."""
    y = cuda.device_array((x.shape[0], weight.shape[1] * geom.groups, *out_hw), x.dtype)
    _transpose(ctx, x, weight, bias, y, geom)
    return y


def conv_transpose2d_backward(ctx, x, grad, weight, geom: Geometry, grad_weight, grad_bias):
    """The gradient of :func:`conv_transpose2d_forward` with respect to ``x``; overwrites
    ``grad_weight`` and ``grad_bias`` (``None`` without a bias)."""
    _bias_grad(grad, grad_bias)
    dx = cuda.device_array(x.shape, x.dtype)
    _grads(ctx, grad, x, weight, geom, grad_weight, g_like=dx)
    return dx


# -- the three products ---------------------------------------------------------------------------
def _forward(ctx, x, w, bias, y, geom):
    """y = conv(x, w) + bias."""
    if w.shape[1] == 1:
        _launch(_depthwise_forward, y.size)(x, w, bias, y, *geom.stride, *geom.padding, *geom.dilation)
        return
    wg = grouped(w, geom.groups)
    for n0, m, col, rows in _chunks(ctx, x, y, geom):
        _launch(_im2col, x.shape[1] * col.shape[1])(x[n0:n0 + m], col, *_args(geom, y))
        matmul(ctx, "conv.forward", wg, _split(col, geom.groups), _split(rows, geom.groups))
        _launch(_rows_to, rows.size)(rows, bias, channel_view(y[n0:n0 + m]))


def _transpose(ctx, y, w, bias, x, geom):
    """x = conv^T(y, w) + bias: each y value times w added back where conv read it."""
    if w.shape[1] == 1:
        _launch(_depthwise_transpose, x.size)(y, w, bias, x, *geom.stride, *geom.padding, *geom.dilation)
        return
    wg = grouped(w, geom.groups)
    for n0, m, col, rows in _chunks(ctx, x, y, geom):
        _launch(_rows_from, rows.size)(channel_view(y[n0:n0 + m]), rows)
        matmul(ctx, "conv.transpose", wg, _split(rows, geom.groups), _split(col, geom.groups), trans_a=True)
        _launch(_col2im, x[n0:n0 + m].size)(col, bias, x[n0:n0 + m], *_args(geom, y))


def _grads(ctx, x, g, w, geom, grad_w, x_like=None, g_like=None):
    """``grad_w`` = the weight gradient of y = conv(x, w) for the output gradient ``g``; then either
    ``x_like = conv^T(g, w)`` (conv2d's input gradient) or ``g_like = conv(x, w)`` (conv_transpose2d's
    input gradient, where x is its output gradient and g its input); ``grad_w`` None: no weight gradient."""
    if w.shape[1] == 1:
        if grad_w is not None:
            o, _, kh, kw = grad_w.shape
            partial = ctx.workspace("conv.depthwise_parts", (x.shape[0], o, kh, kw), x.dtype)
            _launch(_depthwise_weight, partial.size)(x, g, partial, *geom.stride, *geom.padding, *geom.dilation)
            _launch(sum_parts, grad_w.size)(partial.reshape(x.shape[0], grad_w.size), grad_w.reshape(grad_w.size),
                                             False)
        if x_like is not None:
            _transpose(ctx, g, w, None, x_like, geom)
        else:
            _forward(ctx, x, w, None, g_like, geom)
        return
    wg = grouped(w, geom.groups)
    for n0, m, col, rows in _chunks(ctx, x, g, geom):
        _launch(_im2col, x.shape[1] * col.shape[1])(x[n0:n0 + m], col, *_args(geom, g))
        _launch(_rows_from, rows.size)(channel_view(g[n0:n0 + m]), rows)
        cols, rows_g = _split(col, geom.groups), _split(rows, geom.groups)
        if grad_w is not None:
            matmul(ctx, "conv.weight", rows_g, cols, grouped(grad_w, geom.groups), trans_b=True, accumulate=n0 > 0)
        if x_like is not None:
            matmul(ctx, "conv.transpose", wg, rows_g, cols, trans_a=True)
            _launch(_col2im, x_like[n0:n0 + m].size)(col, None, x_like[n0:n0 + m], *_args(geom, g))
        else:
            matmul(ctx, "conv.forward", wg, cols, rows_g)
            _launch(_rows_to, rows.size)(rows, None, channel_view(g_like[n0:n0 + m]))


def _bias_grad(grad, grad_bias):
    """grad_bias[o] = sum over samples and pixels of grad[:, o]."""
    if grad_bias is not None:
        _channel_sums[blocks_for(grad_bias.size), block_size()](channel_view(grad), grad_bias)


# -- helpers of the wrappers ----------------------------------------------------------------------
def _launch(kernel, n):
    """``kernel`` configured for a grid-stride loop over ``n`` items."""
    return kernel[grid(n)]


def _split(a, groups):
    """Rows ``(R, M)`` as ``(G, R/G, M)`` (a view)."""
    return a.reshape(groups, a.shape[0] // groups, a.shape[1])


def _args(geom, y):
    return (*geom.kernel, *geom.stride, *geom.padding, *geom.dilation, y.shape[2], y.shape[3])


def _chunks(ctx, x, y, geom):
    """Chunks of samples ``(n0, m, col, rows)``: ``col`` ``(C*kh*kw, m*OH*OW)`` and ``rows``
    ``(O, m*OH*OW)`` are views of device workspaces; column ``n*OH*OW + p`` is pixel p of sample n."""
    n, c = x.shape[:2]
    o, pixels = y.shape[1], y.shape[2] * y.shape[3]
    k = c * geom.kernel[0] * geom.kernel[1]
    per_sample = (k + o) * pixels * x.dtype.itemsize
    batch = max(1, min(n, WORKSPACE_BYTES // per_sample))
    col = ctx.workspace("conv.col", (k * batch * pixels,), x.dtype)
    rows = ctx.workspace("conv.rows", (o * batch * pixels,), x.dtype)
    for n0 in range(0, n, batch):
        m = min(batch, n - n0)
        yield n0, m, col[:k * m * pixels].reshape(k, m * pixels), rows[:o * m * pixels].reshape(o, m * pixels)


# -- kernels --------------------------------------------------------------------------------------
@cuda.jit(cache=True)
def _im2col(x, col, kh, kw, sh, sw, ph, pw, dh, dw, oh_n, ow_n):
    """col[(c*kh + ki)*kw + kj, n*OH*OW + i*OW + j] = x[n, c, i*sh - ph + ki*dh, j*sw - pw + kj*dw]
    (0 outside x); one thread per (channel, column) writes that channel's kh*kw rows."""
    channels, height, width = x.shape[1], x.shape[2], x.shape[3]
    pixels = oh_n * ow_n
    columns = col.shape[1]
    for index in range(cuda.grid(1), channels * columns, cuda.gridsize(1)):
        c, column = divmod(index, columns)
        n, p = divmod(column, pixels)
        i, j = divmod(p, ow_n)
        row = c * kh * kw
        for ki in range(kh):
            ih = i * sh - ph + ki * dh
            for kj in range(kw):
                iw = j * sw - pw + kj * dw
                value = col.dtype.type(0)
                if 0 <= ih < height and 0 <= iw < width:
                    value = x[n, c, ih, iw]
                col[row + ki * kw + kj, column] = value


@cuda.jit(cache=True)
def _col2im(col, bias, x, kh, kw, sh, sw, ph, pw, dh, dw, oh_n, ow_n):
    """x[n, c, ih, iw] = bias[c] (0 when ``bias`` is None) + every col entry that :func:`_im2col`
    read from (ih, iw): one thread per x element gathers them, so no two threads write one element."""
    channels, height, width = x.shape[1], x.shape[2], x.shape[3]
    pixels = oh_n * ow_n
    for index in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        rest, iw = divmod(index, width)
        rest, ih = divmod(rest, height)
        n, c = divmod(rest, channels)
        total = x.dtype.type(0) if bias is None else bias[c]
        for ki in range(kh):
            top = ih + ph - ki * dh  # = i * sh for the output row i that reads ih with tap ki
            if top < 0:
                break
            i = top // sh
            if i * sh != top or i >= oh_n:
                continue
            for kj in range(kw):
                left = iw + pw - kj * dw
                if left < 0:
                    break
                j = left // sw
                if j * sw == left and j < ow_n:
                    total += col[(c * kh + ki) * kw + kj, n * pixels + i * ow_n + j]
        x[n, c, ih, iw] = total


@cuda.jit(cache=True)
def _rows_from(y, rows):
    """rows[o, n*P + p] = y[n, o, p]."""
    m, channels, pixels = y.shape
    for index in range(cuda.grid(1), rows.size, cuda.gridsize(1)):
        o, column = divmod(index, m * pixels)
        n, p = divmod(column, pixels)
        rows[o, column] = y[n, o, p]


@cuda.jit(cache=True)
def _rows_to(rows, bias, y):
    """y[n, o, p] = rows[o, n*P + p] + bias[o] (no bias when ``bias`` is None)."""
    m, channels, pixels = y.shape
    for index in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        rest, p = divmod(index, pixels)
        n, o = divmod(rest, channels)
        value = rows[o, n * pixels + p]
        if bias is not None:
            value += bias[o]
        y[n, o, p] = value


@cuda.jit(cache=True)
def _depthwise_forward(x, w, bias, y, sh, sw, ph, pw, dh, dw):
    """y = conv(x, w) + bias when each output channel o reads the single input channel o // (O/C);
    one thread per y element."""
    channels, height, width = x.shape[1], x.shape[2], x.shape[3]
    out_channels, kh, kw = w.shape[0], w.shape[2], w.shape[3]
    oh_n, ow_n = y.shape[2], y.shape[3]
    multiplier = out_channels // channels
    for index in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        rest, j = divmod(index, ow_n)
        rest, i = divmod(rest, oh_n)
        n, o = divmod(rest, out_channels)
        c = o // multiplier
        total = y.dtype.type(0) if bias is None else bias[o]
        for ki in range(kh):
            ih = i * sh - ph + ki * dh
            if 0 <= ih < height:
                for kj in range(kw):
                    iw = j * sw - pw + kj * dw
                    if 0 <= iw < width:
                        total += w[o, 0, ki, kj] * x[n, c, ih, iw]
        y[n, o, i, j] = total


@cuda.jit(cache=True)
def _depthwise_transpose(y, w, bias, x, sh, sw, ph, pw, dh, dw):
    """x = conv^T(y, w) + bias for a depthwise w: one thread per x element gathers every y value
    that read it."""
    channels, height, width = x.shape[1], x.shape[2], x.shape[3]
    out_channels, kh, kw = w.shape[0], w.shape[2], w.shape[3]
    oh_n, ow_n = y.shape[2], y.shape[3]
    multiplier = out_channels // channels
    for index in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        rest, iw = divmod(index, width)
        rest, ih = divmod(rest, height)
        n, c = divmod(rest, channels)
        total = x.dtype.type(0) if bias is None else bias[c]
        for o in range(c * multiplier, (c + 1) * multiplier):
            for ki in range(kh):
                top = ih + ph - ki * dh
                if top < 0:
                    break
                i = top // sh
                if i * sh != top or i >= oh_n:
                    continue
                for kj in range(kw):
                    left = iw + pw - kj * dw
                    if left < 0:
                        break
                    j = left // sw
                    if j * sw == left and j < ow_n:
                        total += w[o, 0, ki, kj] * y[n, o, i, j]
        x[n, c, ih, iw] = total


@cuda.jit(cache=True)
def _depthwise_weight(x, y, partial, sh, sw, ph, pw, dh, dw):
    """partial[n, o, ki, kj] = sum_{i, j} y[n, o, i, j] * x[n, c, i*sh - ph + ki*dh, j*sw - pw + kj*dw]
    with c = o // (O/C): one sample's share of the weight gradient, one thread each (summed over n
    by :func:`~cnnrun.plugins.products.cuda.sum_parts`)."""
    channels, height, width = x.shape[1], x.shape[2], x.shape[3]
    out_channels, kh, kw = partial.shape[1], partial.shape[2], partial.shape[3]
    oh_n, ow_n = y.shape[2], y.shape[3]
    multiplier = out_channels // channels
    for index in range(cuda.grid(1), partial.size, cuda.gridsize(1)):
        rest, kj = divmod(index, kw)
        rest, ki = divmod(rest, kh)
        n, o = divmod(rest, out_channels)
        c = o // multiplier
        total = partial.dtype.type(0)
        for i in range(oh_n):
            ih = i * sh - ph + ki * dh
            if 0 <= ih < height:
                for j in range(ow_n):
                    iw = j * sw - pw + kj * dw
                    if 0 <= iw < width:
                        total += y[n, o, i, j] * x[n, c, ih, iw]
        partial[n, o, ki, kj] = total


@cuda.jit(cache=True)
def _channel_sums(a, out):
    """out[c] = sum_{n, p} a[n, c, p]: one block per channel, its threads strided over (n, p)."""
    scratch = cuda.shared.array(MAX_BLOCK_SIZE, out.dtype)
    m, channels, pixels = a.shape
    for c in range(cuda.blockIdx.x, channels, cuda.gridDim.x):
        total = out.dtype.type(0)
        for index in range(cuda.threadIdx.x, m * pixels, cuda.blockDim.x):
            n, p = divmod(index, pixels)
            total += a[n, c, p]
        total = block_sum(scratch, total)
        if cuda.threadIdx.x == 0:
            out[c] = total


KERNELS = {"conv2d_forward": conv2d_forward, "conv2d_backward": conv2d_backward,
           "conv_transpose2d_forward": conv_transpose2d_forward, "conv_transpose2d_backward": conv_transpose2d_backward}
