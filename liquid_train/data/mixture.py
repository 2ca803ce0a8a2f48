"""The mixed-task sample stream: megatron-core's `BlendedDataset` over the per-task datasets.

megatron's ``build_blending_indices`` gives stream position ``n`` (0-based) to the task with the largest
``weight * max(n, 1) - count``: it aims at the target of the *previous* prefix, so on a prefix of length ``n`` a
count can miss ``weight * n`` by more than one sample (measured: up to 1.26 samples over random 2-4 task blends).
`ExactBlendedDataset` keeps megatron's class (index arrays, ``__getitem__``, descriptions) and replaces only that
index with Tijdeman's online algorithm (R. Tijdeman, "The chairman assignment problem", 1980), which guarantees
``|count_i(n) - weight_i * n| <= 1 - 1/(2k - 2)`` on every prefix for k tasks (0.75 for three). Both indices are
online, hence prefix-stable: a longer stream only appends. ``blend_algorithm: megatron`` selects the stock index.
"""
from __future__ import annotations

import logging
from typing import List, Sequence

import numpy as np

from liquid_train.data.task_datasets import LiquidTaskDataset
from liquid_train.data.templates import Positions, Sample


def exact_blending_indices(weights: Sequence[float], size: int):
    """Tijdeman's chairman assignment: ``(dataset_index int16[size], dataset_sample_index int64[size])``.

    At step n (1-based) the candidates are the tasks with ``w_i * n - c_i >= 1/(2k-2)``; the one whose next
    "deadline" ``(c_i + 1 - 1/(2k-2)) / w_i`` comes first is chosen. Pure Python over k <= 3 floats: ~1 s per
    million samples, done once per stream (the builder caches the result with the pack index)."""
    weights = [float(w) / float(sum(weights)) for w in weights]
    k = len(weights)
    eps = 1.0 / (2 * k - 2) if k > 1 else 0.0
    counts = [0] * k
    chosen = [0] * size
    taken = [0] * size
    tasks = list(zip(range(k), weights, [1.0 / w for w in weights]))
    threshold = eps - 1e-12
    for n in range(1, size + 1):
        best, best_deadline = 0, float("inf")
        for i, w, inv_w in tasks:
            c = counts[i]
            if w * n - c >= threshold:
                deadline = (c + 1 - eps) * inv_w
                if deadline < best_deadline:
                    best, best_deadline = i, deadline
        chosen[n - 1] = best
        taken[n - 1] = counts[best]
        counts[best] += 1
    dataset_index = np.array(chosen, dtype=np.int16)
    dataset_sample_index = np.array(taken, dtype=np.int64)
    return dataset_index, dataset_sample_index


def _exact_blended_dataset_class():
    from megatron.core.datasets.blended_dataset import BlendedDataset

    class ExactBlendedDataset(BlendedDataset):
        """megatron's BlendedDataset whose index is `exact_blending_indices` (see the module docstring)."""

        def _build_indices(self):
            return exact_blending_indices(self.weights, self.size)

    return ExactBlendedDataset


def blend_indices(datasets: Sequence, weights: Sequence[float], size: int, seed: int, seq_length: int,
                  algorithm: str = "exact"):
    """Build megatron's BlendedDataset and return it (its ``dataset_index``/``dataset_sample_index`` are the stream).

    No process group is needed: with ``path_to_cache=None`` megatron builds the index in memory (our packing index,
    which is what is expensive, is cached by the builder)."""
    from megatron.core.datasets.blended_dataset import BlendedDataset
    from megatron.core.datasets.blended_megatron_dataset_config import BlendedMegatronDatasetConfig

    config = BlendedMegatronDatasetConfig(random_seed=seed, sequence_length=seq_length, path_to_cache=None)
    weights = [float(w) for w in weights]
    if len(datasets) == 1:  # megatron warns about a one-dataset blend; the index is trivial
        class _Single:
            dataset_index = np.zeros(size, dtype=np.int16)
            dataset_sample_index = np.arange(size, dtype=np.int64)
        return _Single()
    blend_logger = logging.getLogger("megatron.core.datasets.blended_dataset")
    level = blend_logger.level
    blend_logger.setLevel(logging.ERROR)  # silences "Cannot save the BlendedDataset indexes" (intended here)
    try:
        cls = _exact_blended_dataset_class() if algorithm == "exact" else BlendedDataset
        return cls(list(datasets), weights, size, config)
    finally:
        blend_logger.setLevel(level)


class MixtureStream:
    """Stream sample ``n`` -> (task, task-sample index) -> `Sample`; footprints and tasks precomputed vectorised."""

    def __init__(self, task_datasets: List[LiquidTaskDataset], weights: Sequence[float], size: int, seed: int,
                 seq_length: int, algorithm: str = "exact"):
        self.task_datasets = task_datasets
        blended = blend_indices(task_datasets, weights, size, seed, seq_length, algorithm)
        self.dataset_index = np.asarray(blended.dataset_index, dtype=np.int64)
        self.dataset_sample_index = np.asarray(blended.dataset_sample_index, dtype=np.int64)
        self.tasks = np.array([d.task for d in task_datasets], dtype=np.int64)[self.dataset_index]
        self.footprints = np.empty(size, dtype=np.int64)
        self.splittable = np.zeros(size, dtype=bool)
        for position, dataset in enumerate(task_datasets):
            sel = self.dataset_index == position
            self.footprints[sel] = dataset.footprints(self.dataset_sample_index[sel])
            self.splittable[sel] = dataset.splittable

    def __len__(self) -> int:
        return len(self.dataset_index)

    def sample(self, n: int) -> Sample:
        return self.task_datasets[self.dataset_index[n]].sample(int(self.dataset_sample_index[n]))

    def positions(self, n: int, start: int = 0, stop: int = None) -> Positions:
        return self.task_datasets[self.dataset_index[n]].positions(int(self.dataset_sample_index[n]), start, stop)
