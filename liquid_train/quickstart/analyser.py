"""Deterministic scene analyser: pixels -> (kind, colour, position, count, background).

It scores generated images against their prompts, so it must be exact on clean renders and degrade gracefully on
blurry, noisy decoder output. It knows the lattice (``scene.GRID``) and reads cells, not free-form objects:

1. background = nearest palette background to the median border pixel;
2. foreground = pixels farther than ``fg_threshold`` (RGB distance) from that background colour;
3. a cell is occupied when its foreground covers >= ``min_cell_fill`` of it; count = occupied cells, position =
   the named lattice line those cells form (None if they form none);
4. colour = nearest palette colour to the median foreground pixel;
5. kind, per occupied cell, from the largest connected blob: fill of its bounding box (square ~0.9+, circle ~0.78,
   triangle ~0.5) and whether its top is narrower than its bottom (triangle); majority vote over cells.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Dict, Optional

import numpy as np
from scipy import ndimage

from liquid_train.quickstart.scene import BACKGROUNDS, COLOURS, GRID, classify_position


@dataclass(frozen=True)
class AnalyserConfig:
    fg_threshold: float = 60.0
    min_cell_fill: float = 0.08
    square_fill: float = 0.86
    triangle_fill: float = 0.66


def _nearest(rgb: np.ndarray, palette: Dict[str, tuple]) -> str:
    names = list(palette)
    dist = [float(np.sum((rgb - np.asarray(palette[n], dtype=np.float32)) ** 2)) for n in names]
    return names[int(np.argmin(dist))]


def _kind_of(blob: np.ndarray, cfg: AnalyserConfig) -> Optional[str]:
    rows = np.flatnonzero(blob.any(axis=1))
    cols = np.flatnonzero(blob.any(axis=0))
    if rows.size < 2 or cols.size < 2:
        return None
    box = blob[rows[0]: rows[-1] + 1, cols[0]: cols[-1] + 1]
    fill = box.mean()
    h = box.shape[0]
    quarter = max(1, h // 4)
    top_width = box[:quarter].sum(axis=1).mean()
    bottom_width = box[-quarter:].sum(axis=1).mean()
    if fill >= cfg.square_fill:
        return "square"
    if fill < cfg.triangle_fill and top_width < 0.6 * bottom_width:
        return "triangle"
    if fill < cfg.triangle_fill:
        return "triangle" if top_width < bottom_width else "circle"
    return "circle"


def analyse(image, cfg: AnalyserConfig = AnalyserConfig()) -> Dict[str, object]:
    """Attributes read off ``image`` (PIL image or HxWx3 uint8 array); attributes it cannot read are absent."""
    arr = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image, dtype=np.float32)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"analyse expects an HxWx3 RGB image, got shape {arr.shape}")
    size = arr.shape[0]
    cell = size // GRID
    border = np.concatenate([arr[0], arr[-1], arr[:, 0], arr[:, -1]])
    background = _nearest(np.median(border, axis=0), BACKGROUNDS)
    bg_rgb = np.asarray(BACKGROUNDS[background], dtype=np.float32)
    fg = np.sqrt(((arr - bg_rgb) ** 2).sum(axis=2)) > cfg.fg_threshold
    out: Dict[str, object] = {"background": background}
    occupied = []
    kinds = []
    for r in range(GRID):
        for c in range(GRID):
            block = fg[r * cell:(r + 1) * cell, c * cell:(c + 1) * cell]
            if block.mean() < cfg.min_cell_fill:
                continue
            occupied.append((r, c))
            labels, n = ndimage.label(block)
            if n:
                largest = 1 + int(np.argmax(ndimage.sum(block, labels, index=range(1, n + 1))))
                kind = _kind_of(labels == largest, cfg)
                if kind:
                    kinds.append(kind)
    if not occupied:
        return out
    out["count"] = len(occupied)
    position = classify_position(occupied)
    if position is not None:
        out["position"] = position
    out["colour"] = _nearest(np.median(arr[fg], axis=0), COLOURS)
    if kinds:
        out["kind"] = Counter(kinds).most_common(1)[0][0]
    return out
