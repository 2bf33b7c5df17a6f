"""A pooling window's extent and divisor: plain Python, compiled by :mod:`.cpu` as a Numba CPU
function and by :mod:`.cuda` as a CUDA device function (one definition for both targets)."""


def window(oh, ow, height, width, kh, kw, sh, sw, ph, pw, count_include_pad):
    """Rows ``[h0, h1)``, columns ``[w0, w1)`` of window ``(oh, ow)`` in the input, and its divisor.

    PyTorch's rule: the window is first cut at the end of the padding (a ceil-mode window can reach
    past it); that size is the divisor with ``count_include_pad``, else the size cut to the input.
    """
    h0 = oh * sh - ph
    w0 = ow * sw - pw
    h1 = min(h0 + kh, height + ph)
    w1 = min(w0 + kw, width + pw)
    padded_size = (h1 - h0) * (w1 - w0)
    h0, w0 = max(h0, 0), max(w0, 0)
    h1, w1 = min(h1, height), min(w1, width)
    return h0, h1, w0, w1, padded_size if count_include_pad else (h1 - h0) * (w1 - w0)
