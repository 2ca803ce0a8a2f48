"""Nearest-neighbour probe of a VQ encoder's latents: which scene attributes the latent at a shape's cell carries.

Why: the round trip shows *that* an attribute is lost but not *where*. If the encoder latent at a shape's cell
cannot tell the kinds apart, no decoder or codebook change can bring kind back, and the encoder is what has to
change. That is how the quickstart VQ's kind failure was located (docs/quickstart.md, "Why kind is lost"). One code
covers one lattice cell (``scene`` module), so the latent at a shape's cell is that cell's code before
quantisation.

Why k nearest neighbours and not a linear read-out: kind is not a linear function of a cell's pixels. A ridge
probe reads kind at only 0.49 from the raw pixels themselves (colour, background and jitter vary), while 5-NN on
standardised features reads 0.93 there. The same probe on the cell's raw pixels is reported beside the latent's, as
the reference for what is there to keep.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Dict, List, Sequence

import numpy as np
import torch
from scipy.spatial.distance import cdist

from liquid_train.quickstart.scene import COLOURS, GRID, KINDS, Scene
from liquid_train.quickstart.synthetic import pil_to_pixels, render, sample_scenes


@dataclass(frozen=True)
class ProbeConfig:
    num_scenes: int = 1350
    """Two passes over the 675 scenes, with fresh pixel jitter: ~2,700 shape cells."""
    seed: int = 5
    neighbours: int = 5
    train_fraction: float = 0.75
    batch_size: int = 128


def knn_probe_accuracy(features: np.ndarray, labels: np.ndarray, neighbours: int, train_fraction: float,
                       seed: int) -> float:
    """Held-out accuracy of a ``neighbours``-NN majority vote (ties to the lower label) from ``features`` [n, d] to
    ``labels`` [n]. The split is seeded, and features are standardised by the training part's mean and std."""
    n = len(features)
    order = np.random.default_rng(seed).permutation(n)
    cut = int(n * train_fraction)
    train, test = order[:cut], order[cut:]
    x = features.astype(np.float64)
    mean, std = x[train].mean(axis=0), x[train].std(axis=0) + 1e-6
    x = (x - mean) / std
    nearest = np.argsort(cdist(x[test], x[train], "sqeuclidean"), axis=1, kind="stable")[:, :neighbours]
    votes = labels[train][nearest]
    num_classes = int(labels.max()) + 1
    predicted = np.array([np.bincount(v, minlength=num_classes).argmax() for v in votes])
    return float(np.mean(predicted == labels[test]))


@torch.no_grad()
def latent_probe(model, cell_size: int, cfg: ProbeConfig = ProbeConfig()) -> Dict[str, float]:
    """Probe accuracy of kind and colour from ``model.encode_latents`` at each shape cell (``kind``, ``colour``),
    the same from the cell's raw pixels (``pixels_kind``, ``pixels_colour``), and the number of cells.

    Chance is 1/3 for kind and 1/5 for colour; the scenes are the training distribution (``sample_scenes``)."""
    scenes = sample_scenes(cfg.num_scenes, cfg.seed)
    rng = random.Random(cfg.seed + 1)
    latent_rows: List[np.ndarray] = []
    pixel_rows: List[np.ndarray] = []
    kinds: List[int] = []
    colours: List[int] = []
    for start in range(0, len(scenes), cfg.batch_size):
        batch = scenes[start:start + cfg.batch_size]
        pixels = pil_to_pixels([render(s, cell_size, rng) for s in batch])
        latents = model.encode_latents(torch.from_numpy(pixels)).float().numpy()
        for s, latent, image in zip(batch, latents, pixels):
            for row, col in s.cells():
                latent_rows.append(latent[:, row, col])
                pixel_rows.append(image[:, row * cell_size:(row + 1) * cell_size,
                                        col * cell_size:(col + 1) * cell_size].ravel())
                kinds.append(KINDS.index(s.kind))
                colours.append(list(COLOURS).index(s.colour))
    out: Dict[str, float] = {"cells": len(kinds)}
    for prefix, rows in (("", latent_rows), ("pixels_", pixel_rows)):
        x = np.stack(rows)
        for name, labels in (("kind", kinds), ("colour", colours)):
            out[prefix + name] = knn_probe_accuracy(x, np.asarray(labels), cfg.neighbours, cfg.train_fraction,
                                                    cfg.seed)
    return out


def mutual_information(a: Sequence, b: Sequence) -> float:
    """Plug-in mutual information (nats) between two paired label sequences: sum p(x,y) log p(x,y) / p(x)p(y)."""
    _, ia = np.unique(np.asarray(a), return_inverse=True)
    _, ib = np.unique(np.asarray(b), return_inverse=True)
    joint = np.zeros((ia.max() + 1, ib.max() + 1))
    np.add.at(joint, (ia, ib), 1.0)
    joint /= joint.sum()
    outer = joint.sum(axis=1, keepdims=True) * joint.sum(axis=0, keepdims=True)
    nz = joint > 0
    return float(np.sum(joint[nz] * np.log(joint[nz] / outer[nz])))


def far_empty_cells(scene: Scene) -> List[int]:
    """Raster indices of the cells of ``scene`` with no shape in their 3x3 neighbourhood (plain background)."""
    cells = scene.cells()
    return [r * GRID + c for r in range(GRID) for c in range(GRID)
            if all(abs(r - a) > 1 or abs(c - b) > 1 for a, b in cells)]


def empty_cell_leak(scenes: Sequence[Scene], codes: np.ndarray) -> Dict[str, float]:
    """What the codes of empty cells far from every shape (no shape in their 3x3 neighbourhood) say about the scene.

    Why: such a cell's pixels are plain background, so a code that only encoded its own cell would carry nothing
    about the shapes. The taming encoder's GroupNorm (image-wide statistics) and mid-block attention let every code
    see the whole image, so an empty cell's code can announce the colour or count of shapes elsewhere. Under
    teacher forcing a T2I model then reads the scene from codes it will have to write itself when it generates
    (docs/quickstart.md, "Why T2I position fails"). Returns MI (nats) of those codes with colour, count and
    position, each attribute's entropy over the same cells (the most there is to leak), and how many distinct codes
    the empty and the shape cells use. ``codes``: [n, GRID*GRID] in raster order. Colour is independent of which
    cells are far, so its MI is leak alone; count and position decide which cells are far, so a code that only
    told border cells from inner ones would show some MI with them too."""
    far_codes: List[int] = []
    far_scenes: List[Scene] = []
    empty_codes, shape_codes = set(), set()
    for scene, row in zip(scenes, np.asarray(codes).reshape(len(scenes), GRID * GRID)):
        shapes = {r * GRID + c for r, c in scene.cells()}
        shape_codes.update(int(row[k]) for k in shapes)
        empty_codes.update(int(row[k]) for k in range(GRID * GRID) if k not in shapes)
        for k in far_empty_cells(scene):
            far_codes.append(int(row[k]))
            far_scenes.append(scene)
    out: Dict[str, float] = {"far_cells": len(far_codes), "far_codes": len(set(far_codes)),
                             "empty_codes": len(empty_codes), "shape_codes": len(shape_codes)}
    for attr in ("colour", "count", "position"):
        values = [getattr(s, attr) for s in far_scenes]
        out[f"mi_{attr}"] = mutual_information(far_codes, values)
        out[f"entropy_{attr}"] = mutual_information(values, values)
    return out
