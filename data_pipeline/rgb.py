"""Decoded image -> upright 8-bit RGB: EXIF orientation, every Pillow mode, transparency.

Why not ``img.convert("RGB")``: it is right for 1, L, P, RGBX, CMYK, YCbCr, HSV and LAB, but wrong for the rest,
silently: 16-bit greyscale (``I;16*``, a 16-bit PNG) and 32-bit ``I`` are clipped at 255, so a mid-grey 16-bit PNG
(30000 of 65535) comes out pure white; alpha (RGBA, LA, PA, premultiplied RGBa/La, P or L/RGB with a ``tRNS``
colour) is dropped, which shows whatever colour the transparent pixels happen to hold. And phone photos store their
rotation as an EXIF tag: a decoder that ignores it encodes the picture on its side.

Rules (each tested against a numpy reference in tests/test_pipeline_pixels.py):
- EXIF orientation 2-8 is applied first, so every later step (size checks, crop box, resize) sees the upright image.
- ``I;16``/``I;16B``/``I;16L``/``I;16N``, and ``I`` whose values lie in 0..65535 (16-bit data, as Pillow has loaded
  it in the past): scaled by 255/65535 and rounded. ``I`` outside that range and ``F`` (float) have no defined
  range: rejected as ``unsupported_mode``.
- Transparency of any kind is composited over white (the page colour web images are drawn on):
  ``round((c * a + 255 * (255 - a)) / 255)`` per channel, on the full-size image, before any resampling.
- Everything else: Pillow's conversion (the standard JFIF YCbCr, naive ``(255-c)(255-k)/255`` CMYK, palettes).
"""
from __future__ import annotations

import struct

import numpy as np
from PIL import ExifTags, Image, ImageOps

UNSUPPORTED_MODE = "unsupported_mode"
BACKGROUND = 255
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")


class UnsupportedImage(Exception):
    """An image whose pixels have no defined mapping to 8-bit RGB (preprocessing turns it into a rejection)."""


def exif_orientation(img: Image.Image) -> int:
    try:
        value = img.getexif().get(ExifTags.Base.Orientation, 1)
    except (OSError, ValueError, TypeError, KeyError, SyntaxError, struct.error):  # unreadable EXIF block: the
        # pixels are still fine, keep them as stored
        return 1
    return value if isinstance(value, int) and 2 <= value <= 8 else 1


def upright(img: Image.Image) -> Image.Image:
    """The image as it is meant to be seen (EXIF orientation applied); the same object when there is nothing to do."""
    if exif_orientation(img) == 1:
        return img
    return ImageOps.exif_transpose(img)


def _sixteen_to_l(img: Image.Image) -> np.ndarray:
    a = np.asarray(img)
    if img.mode == "I":
        lo, hi = int(a.min()), int(a.max())
        if lo < 0 or hi > 65535:
            raise UnsupportedImage(f"32-bit integer pixels in [{lo}, {hi}] have no 8-bit mapping (0..65535 expected)")
    return ((a.astype(np.int64) * 255 + 32767) // 65535).astype(np.uint8)


def _composite(rgb: np.ndarray, alpha: np.ndarray) -> Image.Image:
    """Exact integer form of round((c*a + 255*(255-a)) / 255): x/255 never ends in .5 for an integer x."""
    a = alpha.astype(np.int32)[..., None]
    out = (rgb.astype(np.int32) * a + BACKGROUND * (255 - a) + 127) // 255
    return Image.fromarray(out.astype(np.uint8), "RGB")


def _has_alpha(img: Image.Image) -> bool:
    """An alpha channel, a ``tRNS`` colour / palette entries, or an RGBA palette (Pillow's ``has_transparency_data``,
    which needs Pillow >= 10.1)."""
    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        return True
    return img.mode == "P" and img.palette is not None and img.palette.mode == "RGBA"


def to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode == "F":
        raise UnsupportedImage("32-bit float pixels have no defined range")
    if mode in SIXTEEN_BIT_MODES or mode == "I":
        grey = _sixteen_to_l(img)
        key = img.info.get("transparency")
        rgb = np.repeat(grey[..., None], 3, axis=2)
        if isinstance(key, int):  # tRNS on 16-bit greyscale: that 16-bit value is fully transparent
            return _composite(rgb, np.where(np.asarray(img) == key, 0, 255))
        return Image.fromarray(rgb, "RGB")
    if mode == "RGB" and "transparency" not in img.info:
        return img
    if mode == "RGBa":
        img = img.convert("RGBA")  # un-premultiply
    elif mode == "La":
        img = img.convert("LA")
    if _has_alpha(img):
        rgba = np.asarray(img.convert("RGBA"))
        return _composite(rgba[..., :3], rgba[..., 3])
    return img.convert("RGB")
