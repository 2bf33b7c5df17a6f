"""Slow, obvious float64 references for the convolution layers (PyTorch semantics), plain loops.

Padding is given as ``(before, after)`` per spatial dimension. Each backward is the forward's loop
nest with every ``y += w * x`` turned into ``dx += w * g`` and ``dw += x * g``.
"""

import numpy as np


def output_size(size, kernel, stride, before, after, dilation):
    """floor((size + before + after - dilation * (kernel - 1) - 1) / stride) + 1."""
    return (size + before + after - dilation * (kernel - 1) - 1) // stride + 1


def same_padding(size, kernel, stride, dilation):
    """TensorFlow/ONNX SAME_UPPER: output ceil(size / stride), the odd padded pixel after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def transpose_output_size(size, kernel, stride, padding, output_padding, dilation):
    """PyTorch: (size - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1."""
    return (size - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1


# -- conv2d ---------------------------------------------------------------------------------------
def conv2d(x, w, b, stride, padding, dilation, groups):
    """y[n, o, i, j] = b[o] + sum_{c, ki, kj} w[o, c, ki, kj] * x[n, g*C/G + c, i*sh - top + ki*dh,
    j*sw - left + kj*dw], g = o // (O/G); zero outside x."""
    n_, c_, h_, w_ = x.shape
    o_, cg, kh, kw = w.shape
    (sh, sw), ((top, bottom), (left, right)), (dh, dw) = stride, padding, dilation
    oh = output_size(h_, kh, sh, top, bottom, dh)
    ow = output_size(w_, kw, sw, left, right, dw)
    y = np.zeros((n_, o_, oh, ow))
    for n in range(n_):
        for o in range(o_):
            g = o // (o_ // groups)
            for i in range(oh):
                for j in range(ow):
                    total = 0.0 if b is None else b[o]
                    for c in range(cg):
                        for ki in range(kh):
                            for kj in range(kw):
                                ih = i * sh - top + ki * dh
                                iw = j * sw - left + kj * dw
                                if 0 <= ih < h_ and 0 <= iw < w_:
                                    total += w[o, c, ki, kj] * x[n, g * cg + c, ih, iw]
                    y[n, o, i, j] = total
    return y


def conv2d_backward(x, w, grad, stride, padding, dilation, groups):
    """(dx, dw, db) of :func:`conv2d` for the output gradient ``grad``."""
    n_, c_, h_, w_ = x.shape
    o_, cg, kh, kw = w.shape
    (sh, sw), ((top, _), (left, _)), (dh, dw) = stride, padding, dilation
    dx, dwt = np.zeros(x.shape), np.zeros(w.shape)
    for n in range(n_):
        for o in range(o_):
            g = o // (o_ // groups)
            for i in range(grad.shape[2]):
                for j in range(grad.shape[3]):
                    for c in range(cg):
                        for ki in range(kh):
                            for kj in range(kw):
                                ih = i * sh - top + ki * dh
                                iw = j * sw - left + kj * dw
                                if 0 <= ih < h_ and 0 <= iw < w_:
                                    dx[n, g * cg + c, ih, iw] += w[o, c, ki, kj] * grad[n, o, i, j]
                                    dwt[o, c, ki, kj] += x[n, g * cg + c, ih, iw] * grad[n, o, i, j]
    return dx, dwt, grad.sum(axis=(0, 2, 3))


# -- conv1d ---------------------------------------------------------------------------------------
def conv1d(x, w, b, stride, padding, dilation, groups):
    """y[n, o, i] = b[o] + sum_{c, k} w[o, c, k] * x[n, g*C/G + c, i*stride - before + k*dilation]."""
    n_, c_, l_ = x.shape
    o_, cg, kl = w.shape
    before, after = padding
    ol = output_size(l_, kl, stride, before, after, dilation)
    y = np.zeros((n_, o_, ol))
    for n in range(n_):
        for o in range(o_):
            g = o // (o_ // groups)
            for i in range(ol):
                total = 0.0 if b is None else b[o]
                for c in range(cg):
                    for k in range(kl):
                        il = i * stride - before + k * dilation
                        if 0 <= il < l_:
                            total += w[o, c, k] * x[n, g * cg + c, il]
                y[n, o, i] = total
    return y


def conv1d_backward(x, w, grad, stride, padding, dilation, groups):
    """(dx, dw, db) of :func:`conv1d` for the output gradient ``grad``."""
    n_, c_, l_ = x.shape
    o_, cg, kl = w.shape
    before = padding[0]
    dx, dwt = np.zeros(x.shape), np.zeros(w.shape)
    for n in range(n_):
        for o in range(o_):
            g = o // (o_ // groups)
            for i in range(grad.shape[2]):
                for c in range(cg):
                    for k in range(kl):
                        il = i * stride - before + k * dilation
                        if 0 <= il < l_:
                            dx[n, g * cg + c, il] += w[o, c, k] * grad[n, o, i]
                            dwt[o, c, k] += x[n, g * cg + c, il] * grad[n, o, i]
    return dx, dwt, grad.sum(axis=(0, 2))


# -- conv_transpose2d -----------------------------------------------------------------------------
def conv_transpose2d(x, w, b, stride, padding, output_padding, dilation, groups):
    """Every input value scattered: y[n, g*O/G + o, i*sh - ph + ki*dh, j*sw - pw + kj*dw]
    += x[n, c, i, j] * w[c, o, ki, kj], g = c // (C/G); positions outside y dropped."""
    n_, c_, h_, w_ = x.shape
    _, og, kh, kw = w.shape
    (sh, sw), (ph, pw), (oph, opw), (dh, dw) = stride, padding, output_padding, dilation
    oh = transpose_output_size(h_, kh, sh, ph, oph, dh)
    ow = transpose_output_size(w_, kw, sw, pw, opw, dw)
    y = np.zeros((n_, og * groups, oh, ow))
    if b is not None:
        y += b[None, :, None, None]
    for n in range(n_):
        for c in range(c_):
            g = c // (c_ // groups)
            for i in range(h_):
                for j in range(w_):
                    for o in range(og):
                        for ki in range(kh):
                            for kj in range(kw):
                                oi = i * sh - ph + ki * dh
                                oj = j * sw - pw + kj * dw
                                if 0 <= oi < oh and 0 <= oj < ow:
                                    y[n, g * og + o, oi, oj] += x[n, c, i, j] * w[c, o, ki, kj]
    return y


def conv_transpose2d_backward(x, w, grad, stride, padding, dilation, groups):
    """(dx, dw, db) of :func:`conv_transpose2d` for the output gradient ``grad``."""
    n_, c_, h_, w_ = x.shape
    _, og, kh, kw = w.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    oh, ow = grad.shape[2:]
    dx, dwt = np.zeros(x.shape), np.zeros(w.shape)
    for n in range(n_):
        for c in range(c_):
            g = c // (c_ // groups)
            for i in range(h_):
                for j in range(w_):
                    for o in range(og):
                        for ki in range(kh):
                            for kj in range(kw):
                                oi = i * sh - ph + ki * dh
                                oj = j * sw - pw + kj * dw
                                if 0 <= oi < oh and 0 <= oj < ow:
                                    dx[n, c, i, j] += grad[n, g * og + o, oi, oj] * w[c, o, ki, kj]
                                    dwt[c, o, ki, kj] += grad[n, g * og + o, oi, oj] * x[n, c, i, j]
    return dx, dwt, grad.sum(axis=(0, 2, 3))
