"""A pooling window's extent and divisor: plain Python, compiled by :mod:`.cpu` as a Numba CPU
function and by :mod:`.cuda` as a CUDA device function (one definition for both targets)."""


def window(oh, ow, height, width, kh, kw, sh, sw, ph, pw, pb, pr, count_include_pad):
    """Rows ``[h0, h1)``, columns ``[w0, w1)`` of window ``(oh, ow)`` in the input, and its divisor.

    PyTorch's rule: the window is first cut at the end of the padding (``pb`` rows below, ``pr`` columns
    right; a ceil-mode window can reach past it); that size is the divisor with ``count_include_pad``,
    else the size cut to the input.
    """
    h0 = oh * sh - ph
    w0 = ow * sw - pw
    h1 = min(h0 + kh, height + pb)
    w1 = min(w0 + kw, width + pr)
    padded_size = (h1 - h0) * (w1 - w0)
    h0, w0 = max(h0, 0), max(w0, 0)
    h1, w1 = min(h1, height), min(w1, width)
    return h0, h1, w0, w1, padded_size if count_include_pad else (h1 - h0) * (w1 - w0)


def taps(start, k, d, size):
    """``(first, stop)``: the taps ``start + i * d`` (``i < k``) inside ``[0, size)`` are
    ``range(first, stop, d)`` (the window must hold one)."""
    first = start if start >= 0 else start + (-start + d - 1) // d * d
    return first, min(start + (k - 1) * d + 1, size)


def bin_start(i, out, size):
    """The first input index of adaptive bin ``i`` of ``out`` over ``size``: floor(i * size / out)."""
    return (i * size) // out


def bin_end(i, out, size):
    """One past the last input index of adaptive bin ``i``: ceil((i + 1) * size / out) (PyTorch's rule)."""
    return -((-(i + 1) * size) // out)
