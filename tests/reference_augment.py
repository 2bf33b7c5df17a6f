"""Slow, obvious references of the augmentations (:mod:`cnnrun.engine.augment`), pixel by pixel in
float64, given the per-sample parameters the augmentation drew."""

import math

import numpy as np

GREY = (0.2989, 0.587, 0.114)


def random_crop(x, top, left, size, padding, padding_mode):
    """Pad each image with np.pad, then slice the crop."""
    (ph, pw), (oh, ow) = padding, size
    mode = {"zero": "constant", "reflect": "reflect"}[padding_mode]
    out = np.zeros((len(x), x.shape[1], oh, ow))
    for n in range(len(x)):
        padded = np.pad(x[n].astype(np.float64), ((0, 0), (ph, ph), (pw, pw)), mode=mode)
        out[n] = padded[:, top[n]:top[n] + oh, left[n]:left[n] + ow]
    return out


def flip(x, flags, horizontal):
    out = x.astype(np.float64).copy()
    for n in range(len(x)):
        if flags[n]:
            out[n] = x[n][:, :, ::-1] if horizontal else x[n][:, ::-1, :]
    return out


def bilinear(image, out_h, out_w):
    """PyTorch's bilinear interpolation (align_corners=False) of one CHW image, pixel by pixel."""
    def source(i, in_size, out_size):
        src = max((i + 0.5) * in_size / out_size - 0.5, 0.0)
        low = int(math.floor(src))
        return low, min(low + 1, in_size - 1), src - low

    out = np.zeros((image.shape[0], out_h, out_w))
    for i in range(out_h):
        r0, r1, fr = source(i, image.shape[1], out_h)
        for j in range(out_w):
            c0, c1, fc = source(j, image.shape[2], out_w)
            out[:, i, j] = ((1 - fr) * ((1 - fc) * image[:, r0, c0] + fc * image[:, r0, c1])
                            + fr * ((1 - fc) * image[:, r1, c0] + fc * image[:, r1, c1]))
    return out


def resized_crop(x, top, left, height, width, size):
    return np.stack([bilinear(x[n, :, top[n]:top[n] + height[n], left[n]:left[n] + width[n]].astype(np.float64),
                              *size) for n in range(len(x))])


def grey(image):
    return image[0] if image.shape[0] == 1 else GREY[0] * image[0] + GREY[1] * image[1] + GREY[2] * image[2]


def color_jitter(x, factors, order):
    """torchvision's adjust_brightness / adjust_contrast / adjust_saturation in the given order."""
    out = x.astype(np.float64).copy()
    for n in range(len(x)):
        image = out[n]
        for op in order[n]:
            f = factors[n, op]
            if op == 0:
                image = np.clip(f * image, 0, 1)
            elif op == 1:
                image = np.clip(f * image + (1 - f) * grey(image).mean(), 0, 1)
            elif image.shape[0] == 3:
                image = np.clip(f * image + (1 - f) * grey(image)[None], 0, 1)
        out[n] = image
    return out


def normalize(x, mean, std):
    mean = np.broadcast_to(np.asarray(mean, np.float64), x.shape[1])
    std = np.broadcast_to(np.asarray(std, np.float64), x.shape[1])
    return (x.astype(np.float64) - mean[None, :, None, None]) / std[None, :, None, None]


def erase(x, top, left, height, width, value):
    out = x.astype(np.float64).copy()
    for n in range(len(x)):
        out[n, :, top[n]:top[n] + height[n], left[n]:left[n] + width[n]] = value
    return out


def torchvision_box(rng, n, height, width, scale, ratio, erasing):
    """torchvision's choice of box, sample by sample and try by try, from the same random numbers
    the vectorized draw uses (10 areas, then 10 log aspect ratios per sample; then the positions):
    RandomResizedCrop.get_params (``erasing=False``: falls back to the whole image clipped to
    ``ratio``, centred) or RandomErasing.get_params (``erasing=True``: no box, height 0)."""
    areas = height * width * rng.uniform(scale[0], scale[1], size=(n, 10))
    aspects = np.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1]), size=(n, 10)))
    boxes = []
    for k in range(n):
        for t in range(10):
            long, short = (int(round(math.sqrt(areas[k, t] * aspects[k, t]))),
                           int(round(math.sqrt(areas[k, t] / aspects[k, t]))))
            if erasing:
                h, w = long, short
                if h < height and w < width:
                    boxes.append((h, w, True))
                    break
            else:
                w, h = long, short
                if 0 < w <= width and 0 < h <= height:
                    boxes.append((h, w, True))
                    break
        else:
            if erasing:
                boxes.append((0, 0, True))
            elif width / height < ratio[0]:
                boxes.append((int(round(width / ratio[0])), width, False))
            elif width / height > ratio[1]:
                boxes.append((height, int(round(height * ratio[1])), False))
            else:
                boxes.append((height, width, False))
    return boxes
