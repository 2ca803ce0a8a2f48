"""Image grids with captions: the picture a person looks at after sampling (training progress and tools/sample.py)."""
from __future__ import annotations

import math
import textwrap
from typing import Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from liquid_train.atomic import atomic_path


def image_grid(images: np.ndarray, captions: Optional[Sequence[str]] = None, cols: Optional[int] = None,
               min_tile: int = 128, caption_lines: int = 3) -> Image.Image:
    """uint8 images [n, H, W, 3] -> one PIL image, ``cols`` per row, each tile upscaled (nearest) to >= ``min_tile``
    px so tiny VQ grids stay readable, with its caption wrapped underneath."""
    images = np.asarray(images)
    n, h, w = images.shape[:3]
    cols = cols or min(n, 8)
    rows = math.ceil(n / cols)
    scale = max(1, math.ceil(min_tile / max(h, w)))
    th, tw = h * scale, w * scale
    font = ImageFont.load_default()
    line_h = 12 if captions else 0
    chars = max(8, tw // 6)
    cap_h = line_h * caption_lines + (4 if captions else 0)
    pad = 4
    canvas = Image.new("RGB", (cols * (tw + pad) + pad, rows * (th + cap_h + pad) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for i in range(n):
        r, c = divmod(i, cols)
        x, y = pad + c * (tw + pad), pad + r * (th + cap_h + pad)
        canvas.paste(Image.fromarray(images[i]).resize((tw, th), Image.NEAREST), (x, y))
        if captions:
            lines = textwrap.wrap(str(captions[i]), chars)[:caption_lines]
            for j, line in enumerate(lines):
                draw.text((x, y + th + 2 + j * line_h), line, fill=(0, 0, 0), font=font)
    return canvas


def save_image_grid(images: np.ndarray, path: str, captions: Optional[Sequence[str]] = None,
                    cols: Optional[int] = None) -> str:
    """Write the grid atomically (temp + rename) as PNG; returns ``path``."""
    with atomic_path(path) as tmp:
        image_grid(images, captions, cols).save(tmp, format="PNG")
    return path
