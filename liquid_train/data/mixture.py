"""The mixed-task sample stream: an exact two-level blend of tasks, then of each task's sources.

Stream position n (0-based) goes to a task, then to one source of that task, each chosen by an online blend over
the weights (`Blend`, compiled in `liquid_train.data.kernels`):

- ``exact`` (default): Tijdeman's chairman assignment (R. Tijdeman, "The chairman assignment problem", 1980), which
  guarantees ``|count_i(n) - weight_i * n| <= 1 - 1/(2k-2)`` on every prefix for k parties (0.75 for three).
  The task level keeps that on every prefix of the stream; the source level keeps it on every prefix of each task's
  own sub-stream (so a source is also within 0.75 + 0.75 * its share of ``weight * n`` on the whole stream).
- ``megatron``: megatron-core's ``build_blending_indices``, which gives position ``n`` to the party with the largest
  ``weight * max(n, 1) - count``: it aims at the target of the *previous* prefix, so a count can miss ``weight * n``
  by more than one sample (measured: up to 1.26 samples over random 2-4 task blends).

Both are online, hence prefix-stable: a longer stream only appends. With one source per task the stream is the
one-level blend over the tasks, as before sources existed. `MixtureStream` serves the stream at training time from
the memory-mapped index (source id, sample index within the source, footprint per position).
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np

from liquid_train.data import kernels
from liquid_train.data.task_datasets import LiquidTaskDataset
from liquid_train.data.templates import Positions, Sample

ALGORITHMS = {"exact": kernels.ALGORITHM_EXACT, "megatron": kernels.ALGORITHM_MEGATRON}


def _level(weights: Sequence[float], algorithm: str) -> Tuple[np.ndarray, np.ndarray, float, float]:
    """(normalised weights, their inverses, eps, threshold) as the reference loops compute them."""
    if algorithm == "exact":  # liquid_train.data.reference.exact_blending_indices, float for float
        w = [float(x) / float(sum(weights)) for x in weights]
        k = len(w)
        eps = 1.0 / (2 * k - 2) if k > 1 else 0.0
        return np.array(w), np.array([1.0 / x for x in w]), eps, eps - 1e-12
    w = np.asarray(weights, dtype=np.float64)  # megatron.core.datasets.utils.normalize
    w = np.array((w / np.sum(w)).tolist())
    return w, 1.0 / w, 0.0, 0.0


class Blend:
    """The two-level blend, streamed: ``take(n)`` returns the next n positions as (source id int16, sample index
    within the source int64). Sources are numbered task by task, in the order given."""

    def __init__(self, task_weights: Sequence[float], source_weights: Sequence[Sequence[float]],
                 algorithm: str = "exact"):
        if algorithm not in ALGORITHMS:
            raise ValueError(f"blend algorithm {algorithm!r}; choose one of {sorted(ALGORITHMS)}")
        if len(task_weights) != len(source_weights) or not all(len(s) for s in source_weights):
            raise ValueError("every task needs at least one source weight")
        self.algorithm = ALGORITHMS[algorithm]
        self.task_w, self.task_inv, self.task_eps, self.task_thr = _level(task_weights, algorithm)
        levels = [_level(s, algorithm) for s in source_weights]
        sizes = [len(s) for s in source_weights]
        self.src_hi = np.cumsum(sizes).astype(np.int64)
        self.src_lo = self.src_hi - np.array(sizes, dtype=np.int64)
        self.src_w = np.concatenate([lv[0] for lv in levels])
        self.src_inv = np.concatenate([lv[1] for lv in levels])
        self.src_eps = np.array([lv[2] for lv in levels])
        self.src_thr = np.array([lv[3] for lv in levels])
        self.task_counts = np.zeros(len(task_weights), dtype=np.int64)
        self.source_counts = np.zeros(int(self.src_hi[-1]), dtype=np.int64)
        self.position = 0

    def take(self, n: int) -> Tuple[np.ndarray, np.ndarray]:
        source = np.empty(n, dtype=np.int16)
        sample = np.empty(n, dtype=np.int64)
        kernels.blend_chunk(self.algorithm, self.task_w, self.task_inv, self.task_eps, self.task_thr,
                            self.task_counts, self.position, self.src_lo, self.src_hi, self.src_w, self.src_inv,
                            self.src_eps, self.src_thr, self.source_counts, source, sample)
        self.position += n
        return source, sample


def exact_blending_indices(weights: Sequence[float], size: int, algorithm: str = "exact"):
    """One-level blend: ``(dataset_index int16[size], dataset_sample_index int64[size])``, compiled; identical to
    `liquid_train.data.reference.exact_blending_indices` (``exact``) and to megatron's ``build_blending_indices``
    (``megatron``)."""
    return Blend(weights, [[1.0]] * len(weights), algorithm).take(size)


class MixtureStream:
    """Stream sample ``n`` -> (source, sample index within it) -> `Sample` / `Positions`.

    ``dataset_index`` (source id), ``dataset_sample_index`` and ``footprints`` are per stream position, usually the
    memory-mapped arrays of the built index. ``task_datasets`` are the sources' datasets, indexed by source id."""

    def __init__(self, task_datasets: List[LiquidTaskDataset], dataset_index: np.ndarray,
                 dataset_sample_index: np.ndarray, footprints: np.ndarray):
        self.task_datasets = task_datasets
        self.dataset_index = dataset_index
        self.dataset_sample_index = dataset_sample_index
        self.footprints = footprints
        self.source_tasks = np.array([d.task for d in task_datasets], dtype=np.int64)
        self._tasks: Optional[np.ndarray] = None

    @classmethod
    def in_memory(cls, task_datasets: List[LiquidTaskDataset], weights: Sequence[float], size: int,
                  algorithm: str = "exact", source_weights: Optional[Sequence[Sequence[float]]] = None):
        """Blend ``size`` positions now (no index on disk): one source per task unless ``source_weights`` groups
        ``task_datasets`` (in order) into the tasks of ``weights``."""
        source_weights = source_weights or [[1.0]] * len(weights)
        index, sample = Blend(weights, source_weights, algorithm).take(size)
        footprints = np.empty(size, dtype=np.int64)
        for position, dataset in enumerate(task_datasets):
            sel = index == position
            footprints[sel] = dataset.footprints(sample[sel])
        return cls(task_datasets, index, sample, footprints)

    def __len__(self) -> int:
        return len(self.dataset_index)

    @property
    def tasks(self) -> np.ndarray:
        """TASK_* per stream position (built on first use: the training path never needs the whole array)."""
        if self._tasks is None:
            self._tasks = self.source_tasks[self.dataset_index]
        return self._tasks

    @property
    def splittable(self) -> np.ndarray:
        return np.array([d.splittable for d in self.task_datasets], dtype=bool)[self.dataset_index]

    def sample(self, n: int) -> Sample:
        return self.task_datasets[self.dataset_index[n]].sample(int(self.dataset_sample_index[n]))

    def positions(self, n: int, start: int = 0, stop: int = None) -> Positions:
        return self.task_datasets[self.dataset_index[n]].positions(int(self.dataset_sample_index[n]), start, stop)


class ConcatStream:
    """Several sources' streams one after the other (a task's validation split over all its sources)."""

    def __init__(self, datasets: List[LiquidTaskDataset], sizes: Sequence[int]):
        self.datasets = datasets
        self.task = datasets[0].task
        self.bounds = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)

    def __len__(self) -> int:
        return int(self.bounds[-1])

    def _locate(self, n: int) -> Tuple[LiquidTaskDataset, int]:
        k = int(np.searchsorted(self.bounds, n, side="right")) - 1
        return self.datasets[k], int(n - self.bounds[k])

    def sample(self, n: int) -> Sample:
        dataset, i = self._locate(n)
        return dataset.sample(i)

    def positions(self, n: int, start: int = 0, stop: int = None) -> Positions:
        dataset, i = self._locate(n)
        return dataset.positions(i, start, stop)
