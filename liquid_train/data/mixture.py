"""The mixed-task sample stream: megatron-core's `BlendedDataset` over the per-task datasets.

`BlendedDataset` (with ``size``) assigns stream position ``n`` to the task whose count lags its target most
(megatron's ``build_blending_indices``), so on every prefix each task's count is within one sample of
``weight * n``; its index is prefix-stable, so a longer stream only appends.
"""
from __future__ import annotations

import logging
from typing import List, Sequence

import numpy as np

from liquid_train.data.task_datasets import LiquidTaskDataset
from liquid_train.data.templates import Sample


def blend_indices(datasets: Sequence, weights: Sequence[float], size: int, seed: int, seq_length: int):
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
        return BlendedDataset(list(datasets), weights, size, config)
    finally:
        blend_logger.setLevel(level)


class MixtureStream:
    """Stream sample ``n`` -> (task, task-sample index) -> `Sample`; footprints and tasks precomputed vectorised."""

    def __init__(self, task_datasets: List[LiquidTaskDataset], weights: Sequence[float], size: int, seed: int,
                 seq_length: int):
        self.task_datasets = task_datasets
        blended = blend_indices(task_datasets, weights, size, seed, seq_length)
        self.dataset_index = np.asarray(blended.dataset_index, dtype=np.int64)
        self.dataset_sample_index = np.asarray(blended.dataset_sample_index, dtype=np.int64)
        self.tasks = np.array([d.task for d in task_datasets], dtype=np.int64)[self.dataset_index]
        self.footprints = np.empty(size, dtype=np.int64)
        for position, dataset in enumerate(task_datasets):
            sel = self.dataset_index == position
            self.footprints[sel] = dataset.footprints(self.dataset_sample_index[sel])

    def __len__(self) -> int:
        return len(self.dataset_index)

    def sample(self, n: int) -> Sample:
        return self.task_datasets[self.dataset_index[n]].sample(int(self.dataset_sample_index[n]))
