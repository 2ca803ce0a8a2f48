"""The latent probe that located the quickstart VQ's kind failure: its k-NN against a brute-force count, and the
probe against encoders whose latents are known to carry everything (the raw pixels) or nothing (zeros)."""
import numpy as np
import torch

from liquid_train.quickstart.probe import ProbeConfig, knn_probe_accuracy, latent_probe


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
