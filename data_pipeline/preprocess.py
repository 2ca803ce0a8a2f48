"""Image preprocessing as Liquid's public code does it, plus the rejection reasons every input is accounted by.

First the decoded image is made upright 8-bit RGB (EXIF orientation, 16-bit and alpha modes: see ``rgb.py``). Then,
generation inputs: reject aspect ratio > 2, resize the short side to the target (LANCZOS), center crop.
Understanding-style inputs (``pad_to_square``): pad to a square with the mean colour (122,116,104), then resize.
Resize and crop are one PIL call (``resize(..., box=crop_box)``): the same resampling of the same region, without
resampling pixels that the crop throws away.
"""
from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import numpy as np
from PIL import Image

from .rgb import UNSUPPORTED_MODE, UnsupportedImage, exif_orientation, to_rgb, upright

PAD_COLOR = (122, 116, 104)

# Rejection reasons (keys of the summary's "rejected" counts).
CORRUPT_IMAGE = "corrupt_image"
EMPTY_FILE = "empty_file"
TOO_SMALL = "too_small"
BAD_ASPECT = "bad_aspect"
MISSING_CAPTION = "missing_caption"
MISSING_IMAGE = "missing_image"
CORRUPT_RECORD = "corrupt_record"
TRUNCATED_TAR = "truncated_tar"
REASONS = (CORRUPT_IMAGE, EMPTY_FILE, UNSUPPORTED_MODE, TOO_SMALL, BAD_ASPECT, MISSING_CAPTION, MISSING_IMAGE,
           CORRUPT_RECORD, TRUNCATED_TAR)


class Rejected(Exception):
    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


@dataclass
class PreprocessConfig:
    resolution: int = 512
    """Output side in pixels (512 for Chameleon's VQGAN -> 32x32 codes; 256/384 selectable)."""
    max_aspect_ratio: float = 2.0
    """Reject images whose long/short side ratio exceeds this (<= 0 disables)."""
    min_side: Optional[int] = None
    """Reject images whose short side is below this; None -> resolution // 4 (upsampling more is mostly blur)."""
    pad_to_square: bool = False
    pad_color: Tuple[int, int, int] = PAD_COLOR
    jpeg_draft: bool = False
    """Let libjpeg decode large JPEGs at a reduced scale (>= 2x the target); faster, slightly different pixels."""

    @property
    def effective_min_side(self) -> int:
        return self.resolution // 4 if self.min_side is None else self.min_side


def decode_image(data: bytes, cfg: PreprocessConfig) -> Image.Image:
    if len(data) == 0:
        raise Rejected(EMPTY_FILE, "0 bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            if cfg.jpeg_draft and img.format == "JPEG":
                img.draft("RGB", (cfg.resolution * 2, cfg.resolution * 2))
            img.load()
    except Exception as e:
        raise Rejected(CORRUPT_IMAGE, _describe(e)) from None
    return img


def _describe(e: Exception) -> str:
    """Error text without object addresses, so sidecars are identical across reruns."""
    return re.sub(r" at 0x[0-9a-fA-F]+", "", f"{type(e).__name__}: {e}")


def preprocess_image(img: Image.Image, cfg: PreprocessConfig) -> Tuple[np.ndarray, Dict]:
    """PIL image -> (uint8 array [3, S, S], meta with ``orig_size`` [w, h] and ``crop_box`` [l, t, r, b]).

    ``orig_size`` and ``crop_box`` are in pixels of the upright image (EXIF orientation applied; ``exif_orientation``
    is added to the meta when it was not 1); with ``pad_to_square`` the box extends past the image (negative /
    beyond the size) by the padding.
    """
    orientation = exif_orientation(img)
    try:
        img = upright(img)
    except Exception as e:
        raise Rejected(CORRUPT_IMAGE, _describe(e)) from None
    w, h = img.size
    if w == 0 or h == 0:
        raise Rejected(CORRUPT_IMAGE, f"empty image {w}x{h}")
    if cfg.max_aspect_ratio > 0 and max(w, h) / min(w, h) > cfg.max_aspect_ratio:
        raise Rejected(BAD_ASPECT, f"{w}x{h} exceeds aspect ratio {cfg.max_aspect_ratio}")
    if min(w, h) < cfg.effective_min_side:
        raise Rejected(TOO_SMALL, f"{w}x{h} short side < {cfg.effective_min_side}")
    try:
        rgb = to_rgb(img)
        s = cfg.resolution
        if cfg.pad_to_square:
            side = max(w, h)
            left, top = (side - w) // 2, (side - h) // 2
            canvas = Image.new("RGB", (side, side), tuple(cfg.pad_color))
            canvas.paste(rgb, (left, top))
            out = canvas.resize((s, s), Image.LANCZOS)
            box = [-left, -top, side - left, side - top]
        else:
            # resize short side to s, center crop s x s == resample this box of the original to s x s
            scale = s / min(w, h)
            nw, nh = max(s, round(w * scale)), max(s, round(h * scale))
            cl, ct = (nw - s) // 2, (nh - s) // 2
            box = [cl / scale, ct / scale, (cl + s) / scale, (ct + s) / scale]
            out = rgb.resize((s, s), Image.LANCZOS, box=tuple(box))
            box = [round(v, 2) for v in box]
        arr = np.asarray(out, dtype=np.uint8).transpose(2, 0, 1).copy()
    except UnsupportedImage as e:
        raise Rejected(UNSUPPORTED_MODE, f"mode {img.mode}: {e}") from None
    except Exception as e:  # truncated data surfacing only at convert/resize time
        raise Rejected(CORRUPT_IMAGE, _describe(e)) from None
    meta = {"orig_size": [w, h], "crop_box": box}
    if orientation != 1:
        meta["exif_orientation"] = orientation
    return arr, meta


def clean_caption(caption) -> str:
    if caption is None:
        raise Rejected(MISSING_CAPTION, "no caption")
    if not isinstance(caption, str):
        raise Rejected(MISSING_CAPTION, f"caption is {type(caption).__name__}, not text")
    caption = caption.strip()
    if not caption:
        raise Rejected(MISSING_CAPTION, "empty caption")
    return caption
