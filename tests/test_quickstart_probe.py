"""The latent probe that located the quickstart VQ's kind failure: its k-NN against a brute-force count, and the
probe against encoders whose latents are known to carry everything (the raw pixels) or nothing (zeros); the
mutual information of empty cells' codes with the scene against scipy's entropies and codes built to leak or not."""
import numpy as np
import pytest
import torch
from scipy.stats import entropy

from liquid_train.quickstart.probe import (ProbeConfig, empty_cell_leak, knn_probe_accuracy, latent_probe,
                                           mutual_information)
from liquid_train.quickstart.scene import COLOURS, GRID, all_scenes


def _brute_force_knn(features, labels, k, train_fraction, seed):
    n = len(features)
    order = np.random.default_rng(seed).permutation(n)
    cut = int(n * train_fraction)
    train, test = order[:cut], order[cut:]
    mean, std = features[train].mean(axis=0), features[train].std(axis=0) + 1e-6
    z = (features - mean) / std
    right = 0
    for i in test:
        dist = sorted((float(np.sum((z[i] - z[j]) ** 2)), pos) for pos, j in enumerate(train))
        votes = [0] * (labels.max() + 1)
        for _, pos in dist[:k]:
            votes[labels[train[pos]]] += 1
        right += int(votes.index(max(votes)) == labels[i])
    return right / len(test)


def test_knn_probe_matches_a_brute_force_count():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=120)
    features = rng.normal(size=(120, 4)) + 0.8 * labels[:, None]
    got = knn_probe_accuracy(features, labels, 5, 0.75, 3)
    assert got == _brute_force_knn(features, labels, 5, 0.75, 3)
    assert 0.5 < got < 1.0  # overlapping classes: neither chance nor perfect, so the value is informative


class _RawPixels(torch.nn.Module):
    """An 'encoder' whose latent at a cell is that cell's 8x8x3 pixels: it keeps everything there is."""

    def encode_latents(self, x):
        return torch.nn.functional.unfold(x, 8, stride=8).reshape(x.shape[0], -1, 5, 5)


class _Zeros(torch.nn.Module):
    def encode_latents(self, x):
        return torch.zeros(x.shape[0], 4, 5, 5)


def test_probe_reads_kind_from_pixels_and_nothing_from_zeros():
    cfg = ProbeConfig()  # the default size: with 400 scenes the pixels read kind at only 0.64
    raw = latent_probe(_RawPixels(), 8, cfg)
    # The same features in another order: the standardised distances, and so every vote, are the same.
    assert raw["kind"] == raw["pixels_kind"] and raw["colour"] == raw["pixels_colour"]
    assert raw["kind"] > 0.8 and raw["colour"] > 0.9
    zeros = latent_probe(_Zeros(), 8, cfg)
    assert zeros["cells"] == raw["cells"] > 2500
    assert zeros["kind"] < 0.45 and zeros["colour"] < 0.3 and zeros["pixels_kind"] == raw["pixels_kind"]


def test_mutual_information_matches_scipy_entropies():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 4, 500)
    b = (a + rng.integers(0, 2, 500)) % 5
    pair = a * 10 + b
    h = lambda x: entropy(np.unique(x, return_counts=True)[1])  # noqa: E731
    assert mutual_information(a, b) == pytest.approx(h(a) + h(b) - h(pair), abs=1e-12)
    assert mutual_information(a, a) == pytest.approx(h(a), abs=1e-12)
    assert mutual_information(a, np.zeros(500)) == pytest.approx(0.0, abs=1e-12)
    assert mutual_information(["x", "y", "x"], [1, 2, 1]) == pytest.approx(h(np.array([0, 1, 0])))


def test_empty_cell_leak_sees_codes_that_announce_the_colour():
    scenes = all_scenes()
    colour_index = {c: i for i, c in enumerate(COLOURS)}
    local = np.zeros((len(scenes), GRID * GRID), dtype=np.int64)  # empty cells: one code; shapes: another
    leaky = np.zeros_like(local)  # empty cells: a code per shape colour, as a whole-image encoder can give
    for i, s in enumerate(scenes):
        for r, c in s.cells():
            local[i, r * GRID + c] = leaky[i, r * GRID + c] = 100
        leaky[i][local[i] != 100] = colour_index[s.colour]
    clean, leak = empty_cell_leak(scenes, local), empty_cell_leak(scenes, leaky)
    assert clean["mi_colour"] == pytest.approx(0.0, abs=1e-12) and clean["far_codes"] == 1
    assert leak["mi_colour"] == pytest.approx(leak["entropy_colour"]) and leak["entropy_colour"] == pytest.approx(
        np.log(len(COLOURS)))
    assert leak["mi_count"] == pytest.approx(0.0, abs=1e-9)  # colour is independent of which cells are far
    assert leak["empty_codes"] == len(COLOURS) and leak["shape_codes"] == 1
    assert leak["far_cells"] == clean["far_cells"] > 0
