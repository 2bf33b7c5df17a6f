"""Numba kernels of the augmentations (:mod:`cnnrun.engine.augment`): each takes a whole NCHW
float32 batch, the per-sample parameters drawn for it, and the output array it writes."""

from __future__ import annotations

from numba import prange

from .jit import cpu_kernel, serial_kernel


@serial_kernel
def _reflect(i, size):
    """``i`` mirrored into ``[0, size)`` without repeating the edge (``np.pad(mode="reflect")``,
    PyTorch's ``padding_mode="reflect"``), for ``-size < i < 2 * size - 1``."""
    if i < 0:
        return -i
    if i >= size:
        return 2 * size - 2 - i
    return i


@cpu_kernel
def crop_kernel(x, top, left, pad_h, pad_w, reflect, out):
    """``out[n, c, i, j] = padded(x)[n, c, top[n] + i, left[n] + j]``, ``x`` padded by ``pad_h``
    rows and ``pad_w`` columns on each side with zeros or (``reflect``) its mirror image."""
    batch, channels, out_h, out_w = out.shape
    height, width = x.shape[2], x.shape[3]
    for nc in prange(batch * channels):
        n, c = nc // channels, nc % channels
        for i in range(out_h):
            row = top[n] + i - pad_h
            if row < 0 or row >= height:
                if not reflect:
                    out[n, c, i, :] = 0.0
                    continue
                row = _reflect(row, height)
            for j in range(out_w):
                col = left[n] + j - pad_w
                if 0 <= col < width:
                    out[n, c, i, j] = x[n, c, row, col]
                elif reflect:
                    out[n, c, i, j] = x[n, c, row, _reflect(col, width)]
                else:
                    out[n, c, i, j] = 0.0


@cpu_kernel
def flip_kernel(x, flip, horizontal, out):
    """``out[n] = x[n]`` mirrored left-right (``horizontal``) or top-bottom where ``flip[n]``."""
    batch, channels, height, width = x.shape
    for nc in prange(batch * channels):
        n, c = nc // channels, nc % channels
        if not flip[n]:
            out[n, c] = x[n, c]
        elif horizontal:
            for i in range(height):
                for j in range(width):
                    out[n, c, i, j] = x[n, c, i, width - 1 - j]
        else:
            for i in range(height):
                out[n, c, i] = x[n, c, height - 1 - i]


@serial_kernel
def _source(i, in_size, out_size):
    """Linear interpolation with ``align_corners=False``: ``(low, high, weight of high)`` for
    output index ``i``, ``src = max((i + 0.5) * in_size / out_size - 0.5, 0)``."""
    src = max((i + 0.5) * in_size / out_size - 0.5, 0.0)
    low = int(src)
    high = min(low + 1, in_size - 1)
    return low, high, src - low


@cpu_kernel
def resized_crop_kernel(x, top, left, height, width, out):
    """``out[n]`` = the box ``(top[n], left[n], height[n], width[n])`` of ``x[n]`` resized
    bilinearly to ``out``'s size (PyTorch ``F.interpolate(mode="bilinear", align_corners=False)``)."""
    batch, channels, out_h, out_w = out.shape
    for nc in prange(batch * channels):
        n, c = nc // channels, nc % channels
        for i in range(out_h):
            r0, r1, fr = _source(i, height[n], out_h)
            r0, r1 = r0 + top[n], r1 + top[n]
            for j in range(out_w):
                c0, c1, fc = _source(j, width[n], out_w)
                c0, c1 = c0 + left[n], c1 + left[n]
                upper = (1.0 - fc) * x[n, c, r0, c0] + fc * x[n, c, r0, c1]
                lower = (1.0 - fc) * x[n, c, r1, c0] + fc * x[n, c, r1, c1]
                out[n, c, i, j] = (1.0 - fr) * upper + fr * lower


@serial_kernel
def _clamp01(v):
    return min(max(v, 0.0), 1.0)


@serial_kernel
def _grey(image, i, j):
    """The luma of pixel ``(i, j)`` of a CHW image (the pixel itself for one channel): torchvision's
    ``rgb_to_grayscale``, ``0.2989 R + 0.587 G + 0.114 B``."""
    if image.shape[0] == 1:
        return image[0, i, j]
    return 0.2989 * image[0, i, j] + 0.587 * image[1, i, j] + 0.114 * image[2, i, j]


@cpu_kernel
def color_jitter_kernel(x, factors, order, out):
    """For each sample, the ops ``order[n]`` (0 brightness, 1 contrast, 2 saturation) in turn, op
    ``k`` with factor ``factors[n, k]``, each followed by a clamp to [0, 1] (torchvision's
    ``adjust_*``): brightness ``f * v``; contrast ``f * v + (1 - f) * mean(grey(image))``;
    saturation ``f * v + (1 - f) * grey(pixel)`` (a no-op on one channel)."""
    batch, channels, height, width = x.shape
    for n in prange(batch):
        image = out[n]
        image[:] = x[n]
        mean = 0.0
        for k in range(order.shape[1]):
            op, f = order[n, k], factors[n, order[n, k]]
            if op == 1:
                total = 0.0
                for i in range(height):
                    for j in range(width):
                        total += _grey(image, i, j)
                mean = total / (height * width)
            for i in range(height):
                for j in range(width):
                    if op == 2:
                        if channels == 1:
                            continue
                        base = _grey(image, i, j)
                    elif op == 1:
                        base = mean
                    else:
                        base = 0.0
                    for c in range(channels):
                        image[c, i, j] = _clamp01(f * image[c, i, j] + (1.0 - f) * base)


@cpu_kernel
def normalize_kernel(x, mean, std, out):
    """``out[n, c] = (x[n, c] - mean[c]) / std[c]`` (float32 arithmetic, as torchvision's ``Normalize``)."""
    batch, channels, height, width = x.shape
    for nc in prange(batch * channels):
        n, c = nc // channels, nc % channels
        for i in range(height):
            for j in range(width):
                out[n, c, i, j] = (x[n, c, i, j] - mean[c]) / std[c]


@cpu_kernel
def erase_kernel(x, top, left, height, width, value, out):
    """``out = x`` with the box ``(top[n], left[n], height[n], width[n])`` of sample ``n`` set to
    ``value`` (no box where ``height[n] == 0``)."""
    batch, channels, rows, cols = x.shape
    for nc in prange(batch * channels):
        n, c = nc // channels, nc % channels
        for i in range(rows):
            inside_rows = top[n] <= i < top[n] + height[n]
            for j in range(cols):
                if inside_rows and left[n] <= j < left[n] + width[n]:
                    out[n, c, i, j] = value
                else:
                    out[n, c, i, j] = x[n, c, i, j]

