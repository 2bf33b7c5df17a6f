"""CPU kernels of the convolution family (Numba), and the wrappers the layers call.

Everything is 2-D (conv1d runs as ``(N, C, 1, L)``): ``y = conv(x, w)`` with x ``(N, C, H, W)``,
w ``(O, C/G, kh, kw)``, y ``(N, O, OH, OW)`` and, for ``o`` in group ``g``,

    y[n, o, i, j] = sum_{c, ki, kj} w[o, c, ki, kj] * x[n, g*C/G + c, i*sh - ph + ki*dh, j*sw - pw + kj*dw]

(zero outside x; ``ph``/``pw`` is the padding before, the padding after only shows in OH/OW). Three
products make both layers: *forward* (conv2d's forward, conv_transpose2d's input gradient),
*transpose* (conv2d's input gradient, conv_transpose2d's forward) and *weight* (both weight
gradients). Each takes one of three paths: depthwise (``C/G == 1``: direct kernels), pointwise
(1x1, stride 1, no padding: plain matrix products) or general (im2col into a workspace, one matrix
product per group, col2im back).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import prange

from cnnrun.engine.jit import cpu_kernel, serial_kernel

WORKSPACE_BYTES = 8 << 20
"""The general path works on chunks of samples whose columns and rows fit in about this many bytes."""


class Geometry(NamedTuple):
    """Kernel size, stride, padding before (top, left), dilation (each ``(h, w)``) and groups."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    groups: int


# -- public wrappers ------------------------------------------------------------------------------
def conv2d_forward(ctx, x, weight, bias, geom: Geometry, out_hw) -> np.ndarray:
    """``conv(x, weight) + bias``, of shape ``(N, O, *out_hw)``. PyTorch: ``F.conv2d``."""
    x = np.ascontiguousarray(x)
    y = np.empty((x.shape[0], weight.shape[0], *out_hw), x.dtype)
    _forward(ctx, x, weight, bias, y, geom)
    return y


def conv2d_backward(ctx, x, grad, weight, geom: Geometry, grad_weight, grad_bias) -> np.ndarray:
    """The gradient of :func:`conv2d_forward` with respect to ``x``; overwrites ``grad_weight`` and
    ``grad_bias`` (``None`` without a bias)."""
    x, grad = np.ascontiguousarray(x), np.ascontiguousarray(grad, x.dtype)
    _bias_grad(grad, grad_bias)
    dx = np.empty(x.shape, x.dtype)
    _grads(ctx, x, grad, weight, geom, grad_weight, x_like=dx)
    return dx


def conv_transpose2d_forward(ctx, x, weight, bias, geom: Geometry, out_hw) -> np.ndarray:
    """``conv^T(x, weight) + bias``, of shape ``(N, weight.shape[1] * G, *out_hw)``: x plays the
    output of a conv whose input is the result. PyTorch: ``F.conv_transpose2d``."""
    x = np.ascontiguousarray(x)
    y = np.empty((x.shape[0], weight.shape[1] * geom.groups, *out_hw), x.dtype)
    _transpose(ctx, x, weight, bias, y, geom)
    return y


def conv_transpose2d_backward(ctx, x, grad, weight, geom: Geometry, grad_weight, grad_bias) -> np.ndarray:
    """The gradient of :func:`conv_transpose2d_forward` with respect to ``x``; overwrites
    ``grad_weight`` and ``grad_bias`` (``None`` without a bias)."""
    x, grad = np.ascontiguousarray(x), np.ascontiguousarray(grad, x.dtype)
    _bias_grad(grad, grad_bias)
    dx = np.empty(x.shape, x.dtype)
    _grads(ctx, grad, x, weight, geom, grad_weight, g_like=dx)
    return dx


# -- the three products, by path ------------------------------------------------------------------
def _path(x, weight, y, geom: Geometry) -> str:
    if weight.shape[1] == 1:
        return "depthwise"
    if (geom.kernel == (1, 1) and geom.stride == (1, 1) and geom.padding == (0, 0)
            and x.shape[2:] == y.shape[2:]):
        return "pointwise"
    return "general"


def _forward(ctx, x, w, bias, y, geom):
    """y = conv(x, w) + bias."""
    path = _path(x, w, y, geom)
    if path == "depthwise":
        _depthwise_forward(x, w, _base(bias, y), y, *geom.stride, *geom.padding, *geom.dilation)
    elif path == "pointwise":
        n, g = x.shape[0], geom.groups
        np.matmul(_grouped(w, g), x.reshape(n, g, -1, _pixels(x)), out=y.reshape(n, g, -1, _pixels(y)))
        _add_bias(y, bias)
    else:
        wg = _grouped(w, geom.groups)
        for n0, m, col, rows in _chunks(ctx, x, y, geom):
            _im2col(x[n0:n0 + m], col, *_args(geom, y))
            np.matmul(wg, _split(col, geom.groups), out=_split(rows, geom.groups))
            _rows_to(rows, y[n0:n0 + m], bias)


def _transpose(ctx, y, w, bias, x, geom):
    """x = conv^T(y, w) + bias: each y value times w added back where conv read it."""
    path = _path(x, w, y, geom)
    if path == "depthwise":
        _depthwise_transpose(y, w, _base(bias, x), x, *geom.stride, *geom.padding, *geom.dilation)
    elif path == "pointwise":
        n, g = x.shape[0], geom.groups
        np.matmul(_grouped(w, g).transpose(0, 2, 1), y.reshape(n, g, -1, _pixels(y)),
                  out=x.reshape(n, g, -1, _pixels(x)))
        _add_bias(x, bias)
    else:
        wt = _grouped(w, geom.groups).transpose(0, 2, 1)
        base = _base(bias, x)
        for n0, m, col, rows in _chunks(ctx, x, y, geom):
            _rows_from(y[n0:n0 + m], rows)
            np.matmul(wt, _split(rows, geom.groups), out=_split(col, geom.groups))
            _col2im(col, base, x[n0:n0 + m], *_args(geom, y))


def _grads(ctx, x, g, w, geom, grad_w, x_like=None, g_like=None):
    """``grad_w`` = the weight gradient of y = conv(x, w) for the output gradient ``g``; then either
    ``x_like = conv^T(g, w)`` (conv2d's input gradient) or ``g_like = conv(x, w)`` (conv_transpose2d's
    input gradient, where x is its output gradient and g its input)."""
    path = _path(x, w, g, geom)
    if path == "general":
        _general_grads(ctx, x, g, w, geom, grad_w, x_like, g_like)
        return
    if path == "depthwise":
        n, o, kh, kw = x.shape[0], w.shape[0], *geom.kernel
        partial = ctx.workspace("conv.partial", (n, o, kh, kw), x.dtype)
        _depthwise_weight(x, g, partial, *geom.stride, *geom.padding, *geom.dilation)
        np.sum(partial, axis=0, out=grad_w.reshape(o, kh, kw))
    else:
        n, groups = x.shape[0], geom.groups
        xs, gs = x.reshape(n, groups, -1, _pixels(x)), g.reshape(n, groups, -1, _pixels(g))
        gw = _grouped(grad_w, groups)
        for i in range(n):  # per group (O/G, P) @ (P, C/G), summed over the samples
            _matmul_into(ctx, gw, i > 0, gs[i], xs[i].transpose(0, 2, 1))
    if x_like is not None:
        _transpose(ctx, g, w, None, x_like, geom)
    else:
        _forward(ctx, x, w, None, g_like, geom)


def _general_grads(ctx, x, g, w, geom, grad_w, x_like, g_like):
    """:func:`_grads` by im2col: per chunk, grad_w (+)= rows(g) @ col(x)^T per group, then
    x_like = col2im(w^T @ rows(g)) or g_like = w @ col(x)."""
    wg, gw = _grouped(w, geom.groups), _grouped(grad_w, geom.groups)
    zeros = _base(None, x)
    for n0, m, col, rows in _chunks(ctx, x, g, geom):
        _im2col(x[n0:n0 + m], col, *_args(geom, g))
        _rows_from(g[n0:n0 + m], rows)
        cols, rows_g = _split(col, geom.groups), _split(rows, geom.groups)
        _matmul_into(ctx, gw, n0 > 0, rows_g, cols.transpose(0, 2, 1))
        if x_like is not None:
            np.matmul(wg.transpose(0, 2, 1), rows_g, out=cols)
            _col2im(col, zeros, x_like[n0:n0 + m], *_args(geom, g))
        else:
            np.matmul(wg, cols, out=rows_g)
            _rows_to(rows, g_like[n0:n0 + m], None)


# -- helpers of the wrappers ----------------------------------------------------------------------
def _bias_grad(grad, grad_bias):
    if grad_bias is not None:
        np.sum(grad, axis=(0, 2, 3), out=grad_bias)


def _add_bias(a, bias):
    if bias is not None:
        planes = a.reshape(a.shape[0], a.shape[1], -1)
        np.add(planes, bias[:, None], out=planes)


def _base(bias, out):
    """What each channel of ``out`` starts from: the bias, or zeros."""
    return bias if bias is not None else np.zeros(out.shape[1], out.dtype)


def _pixels(a) -> int:
    return a.shape[2] * a.shape[3]


def _grouped(w, groups):
    """``(O, C/G, kh, kw)`` as ``(G, O/G, C/G*kh*kw)`` (a view)."""
    return w.reshape(groups, w.shape[0] // groups, -1)


def _split(a, groups):
    """Rows ``(R, M)`` as ``(G, R/G, M)`` (a view)."""
    return a.reshape(groups, a.shape[0] // groups, a.shape[1])


def _args(geom, y):
    return (*geom.kernel, *geom.stride, *geom.padding, *geom.dilation, y.shape[2], y.shape[3])


def _matmul_into(ctx, total, add: bool, a, b):
    """``total = a @ b``, or ``total += a @ b`` (through a workspace) when ``add``."""
    if add:
        part = ctx.workspace("conv.part", total.shape, total.dtype)
        np.matmul(a, b, out=part)
        total += part
    else:
        np.matmul(a, b, out=total)


def _chunks(ctx, x, y, geom):
    """Chunks of samples ``(n0, m, col, rows)``: ``col`` ``(C*kh*kw, m*OH*OW)`` and ``rows``
    ``(O, m*OH*OW)`` are contiguous views of workspaces; column ``n*OH*OW + p`` is pixel p of sample n."""
    n, c = x.shape[:2]
    o, pixels = y.shape[1], _pixels(y)
    k = c * geom.kernel[0] * geom.kernel[1]
    per_sample = (k + o) * pixels * x.dtype.itemsize
    batch = max(1, min(n, WORKSPACE_BYTES // per_sample))
    col = ctx.workspace("conv.col", (k * batch * pixels,), x.dtype)
    rows = ctx.workspace("conv.rows", (o * batch * pixels,), x.dtype)
    for n0 in range(0, n, batch):
        m = min(batch, n - n0)
        yield n0, m, col[:k * m * pixels].reshape(k, m * pixels), rows[:o * m * pixels].reshape(o, m * pixels)


def _rows_from(y, rows):
    """rows[o, n*P + p] = y[n, o, p]."""
    m, o = y.shape[:2]
    np.copyto(rows.reshape(o, m, -1), y.reshape(m, o, -1).transpose(1, 0, 2))


def _rows_to(rows, y, bias):
    """y[n, o, p] = rows[o, n*P + p] (+ bias[o])."""
    m, o = y.shape[:2]
    src = rows.reshape(o, m, -1).transpose(1, 0, 2)
    if bias is None:
        np.copyto(y.reshape(m, o, -1), src)
    else:
        np.add(src, bias[:, None], out=y.reshape(m, o, -1))


# -- kernels --------------------------------------------------------------------------------------
# Inner-loop indices are cast to ``np.uintp``: Numba then drops its negative-index wraparound and
# the loops vectorize (about 4x faster). Only values known to be >= 0 are cast.


@serial_kernel
def _span(offset, stride, size, count):
    """The range [lo, hi) of i < count with 0 <= i*stride + offset < size."""
    lo = 0 if offset >= 0 else (-offset + stride - 1) // stride
    hi = (size - 1 - offset) // stride + 1
    lo = min(lo, count)
    hi = max(min(hi, count), lo)
    return lo, hi


@cpu_kernel
def _im2col(x, col, kh, kw, sh, sw, ph, pw, dh, dw, oh_n, ow_n):
    """col[(c*kh + ki)*kw + kj, n*OH*OW + i*OW + j] = x[n, c, i*sh - ph + ki*dh, j*sw - pw + kj*dw]
    (0 outside x); parallel over (sample, channel)."""
    m, channels, height, width = x.shape
    pixels = oh_n * ow_n
    for nc in prange(m * channels):
        n = nc // channels
        c = nc - n * channels
        start = n * pixels
        for ki in range(kh):
            top = ki * dh - ph
            h0, h1 = _span(top, sh, height, oh_n)
            for kj in range(kw):
                left = kj * dw - pw
                w0, w1 = _span(left, sw, width, ow_n)
                row = (c * kh + ki) * kw + kj
                col[row, start:start + h0 * ow_n] = 0
                for i in range(h0, h1):
                    ih = np.uintp(i * sh + top)
                    at = start + i * ow_n
                    for j in range(w0):
                        col[row, np.uintp(at + j)] = 0
                    for j in range(w0, w1):
                        col[row, np.uintp(at + j)] = x[n, c, ih, np.uintp(j * sw + left)]
                    for j in range(w1, ow_n):
                        col[row, np.uintp(at + j)] = 0
                col[row, start + h1 * ow_n:start + pixels] = 0


@cpu_kernel
def _col2im(col, base, x, kh, kw, sh, sw, ph, pw, dh, dw, oh_n, ow_n):
    """x[n, c] = base[c] + every col entry added back at the pixel :func:`_im2col` read it from.

    Parallel over (sample, channel): each iteration owns one plane of x, so there are no races.
    """
    m, channels, height, width = x.shape
    pixels = oh_n * ow_n
    for nc in prange(m * channels):
        n = nc // channels
        c = nc - n * channels
        x[n, c] = base[c]
        for ki in range(kh):
            top = ki * dh - ph
            h0, h1 = _span(top, sh, height, oh_n)
            for kj in range(kw):
                left = kj * dw - pw
                w0, w1 = _span(left, sw, width, ow_n)
                row = (c * kh + ki) * kw + kj
                for i in range(h0, h1):
                    ih = np.uintp(i * sh + top)
                    at = n * pixels + i * ow_n
                    for j in range(w0, w1):
                        x[n, c, ih, np.uintp(j * sw + left)] += col[row, np.uintp(at + j)]


@cpu_kernel
def _depthwise_forward(x, w, base, y, sh, sw, ph, pw, dh, dw):
    """y = conv(x, w) + base when each output channel o reads the single input channel o // (O/C)."""
    m, channels, height, width = x.shape
    out_channels, _, kh, kw = w.shape
    oh_n, ow_n = y.shape[2], y.shape[3]
    multiplier = out_channels // channels
    for no in prange(m * out_channels):
        n = no // out_channels
        o = no - n * out_channels
        c = o // multiplier
        y[n, o] = base[o]
        for ki in range(kh):
            top = ki * dh - ph
            h0, h1 = _span(top, sh, height, oh_n)
            for kj in range(kw):
                left = kj * dw - pw
                w0, w1 = _span(left, sw, width, ow_n)
                weight = w[o, 0, ki, kj]
                for i in range(h0, h1):
                    ih = np.uintp(i * sh + top)
                    for j in range(w0, w1):
                        y[n, o, np.uintp(i), np.uintp(j)] += weight * x[n, c, ih, np.uintp(j * sw + left)]


@cpu_kernel
def _depthwise_transpose(y, w, base, x, sh, sw, ph, pw, dh, dw):
    """x = conv^T(y, w) + base for a depthwise w; parallel over (sample, input channel), race-free."""
    m, channels, height, width = x.shape
    out_channels, _, kh, kw = w.shape
    oh_n, ow_n = y.shape[2], y.shape[3]
    multiplier = out_channels // channels
    for nc in prange(m * channels):
        n = nc // channels
        c = nc - n * channels
        x[n, c] = base[c]
        for o in range(c * multiplier, (c + 1) * multiplier):
            for ki in range(kh):
                top = ki * dh - ph
                h0, h1 = _span(top, sh, height, oh_n)
                for kj in range(kw):
                    left = kj * dw - pw
                    w0, w1 = _span(left, sw, width, ow_n)
                    weight = w[o, 0, ki, kj]
                    for i in range(h0, h1):
                        ih = np.uintp(i * sh + top)
                        for j in range(w0, w1):
                            x[n, c, ih, np.uintp(j * sw + left)] += weight * y[n, o, np.uintp(i), np.uintp(j)]


@cpu_kernel
def _depthwise_weight(x, y, partial, sh, sw, ph, pw, dh, dw):
    """partial[n, o, ki, kj] = sum_{i, j} y[n, o, i, j] * x[n, c, i*sh - ph + ki*dh, j*sw - pw + kj*dw]:
    one sample's share of the weight gradient, summed over n by the caller."""
    m, channels, height, width = x.shape
    out_channels, kh, kw = partial.shape[1], partial.shape[2], partial.shape[3]
    oh_n, ow_n = y.shape[2], y.shape[3]
    multiplier = out_channels // channels
    for no in prange(m * out_channels):
        n = no // out_channels
        o = no - n * out_channels
        c = o // multiplier
        for ki in range(kh):
            top = ki * dh - ph
            h0, h1 = _span(top, sh, height, oh_n)
            for kj in range(kw):
                left = kj * dw - pw
                w0, w1 = _span(left, sw, width, ow_n)
                total = 0.0
                for i in range(h0, h1):
                    ih = np.uintp(i * sh + top)
                    for j in range(w0, w1):
                        total += y[n, o, np.uintp(i), np.uintp(j)] * x[n, c, ih, np.uintp(j * sw + left)]
                partial[n, o, ki, kj] = total
