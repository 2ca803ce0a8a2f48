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
from typing import Dict, List

import numpy as np
import torch
from scipy.spatial.distance import cdist

from liquid_train.quickstart.scene import COLOURS, KINDS
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
