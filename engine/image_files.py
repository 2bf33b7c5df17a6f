"""Image files: decoding with Pillow (the image_folder source, predict on images) and telling an
image from other files by its first bytes (for messages about file types)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
SIGNATURES = ((b"\x89PNG\r\n\x1a\n", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"),
              (b"BM", "a BMP image"), (b"RIFF", "a RIFF file (WebP image?)"))


def decode_errors() -> tuple:
    """What Pillow raises on a file it cannot decode (a bad header, truncated data, a bomb)."""
    from PIL import Image

    return (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


def decode_image(file: Path, channels: int, size: tuple[int, int] | None) -> np.ndarray:
    """``file`` as uint8 ``(channels, H, W)``: converted to Pillow's mode "L" (grey, ITU-R 601-2
    luma) or "RGB" (alpha dropped, palettes expanded) as torchvision's loader does, then resized
    to ``size`` with Pillow's bilinear filter (torchvision's ``Resize(size)`` on a PIL image)."""
    from PIL import Image

    with Image.open(file) as image:
        with warnings.catch_warnings():  # palette transparency: dropped, as by convert("RGB")
            warnings.simplefilter("ignore", UserWarning)
            image = image.convert("L" if channels == 1 else "RGB")
        if size is not None and image.size != (size[1], size[0]):
            image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        pixels = np.asarray(image, dtype=np.uint8)
    return pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)


def image_files(folder: Path) -> list[Path]:
    """The image files in ``folder`` and its sub-folders (by suffix, any case), sorted by path."""
    return sorted(f for f in Path(folder).rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())


def is_image_name(path) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def image_kind(start: bytes) -> str | None:
    """``"a PNG image"`` when ``start`` (a file's first bytes) begins like an image file, else None."""
    return next((kind for signature, kind in SIGNATURES if start.startswith(signature)), None)
