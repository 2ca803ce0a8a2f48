"""The pure-Python reference implementations of the mixed-task indices, kept as the oracle of the compiled ones.

`exact_blending_indices` and `build_pack_index` are the loops the builder used before the index was compiled
(`liquid_train.data.kernels`): tests check that the compiled indices are identical to these on random streams, and
``benchmarks/mixture.py`` measures them as the baseline. Nothing in the training path calls this module.
"""
from __future__ import annotations

import logging
import math
from typing import List, Optional, Sequence, Tuple

import numpy as np
from megatron.core.datasets.blended_dataset import BlendedDataset
from megatron.core.datasets.blended_megatron_dataset_config import BlendedMegatronDatasetConfig

from liquid_train.data.packing import PackIndex
from liquid_train.data.sources import open_sources
from liquid_train.vocab import TASK_NAMES


def exact_blending_indices(weights: Sequence[float], size: int):
    """Tijdeman's chairman assignment: ``(dataset_index int16[size], dataset_sample_index int64[size])``.

    At step n (1-based) the candidates are the tasks with ``w_i * n - c_i >= 1/(2k-2)``; the one whose next
    "deadline" ``(c_i + 1 - 1/(2k-2)) / w_i`` comes first is chosen. Pure Python over k floats: ~1 s per million
    samples."""
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


def build_pack_index(footprints: np.ndarray, seq_length: int, window: int = 8, flush: bool = False,
                     splittable: Optional[np.ndarray] = None) -> PackIndex:
    """Pack stream samples with the given footprints (positions each) into ``seq_length`` rows.

    Whole samples go best-fit into the open rows (a new row when none fits; when the window is full the fullest
    open row is emitted first). Splittable samples (text windows) are poured, in stream order, into the oldest open
    row, as many positions as it has room for, then the next one. ``flush=False`` drops the rows still open at the
    end of the stream; ``flush=True`` emits them too."""
    footprints = np.asarray(footprints, dtype=np.int64)
    split = np.zeros(len(footprints), dtype=bool) if splittable is None else np.asarray(splittable, dtype=bool)
    whole = footprints[~split]
    if whole.size and whole.max() > seq_length:
        bad = int(np.nonzero(~split)[0][np.argmax(whole)])
        raise ValueError(f"stream sample {bad} has footprint {footprints[bad]} > seq_length {seq_length}")
    if footprints.size and footprints.min() < 1:
        raise ValueError("stream samples must have a footprint of at least 1 token")
    room: List[int] = []
    members: List[List[Tuple[int, int, int]]] = []
    emitted: List[List[Tuple[int, int, int]]] = []
    for i, (f, pour) in enumerate(zip(footprints.tolist(), split.tolist())):
        if pour:
            start = 0
            while start < f:
                if not room:
                    room.append(seq_length)
                    members.append([])
                take = min(room[0], f - start)
                members[0].append((i, start, take))
                room[0] -= take
                start += take
                if room[0] == 0:
                    emitted.append(members.pop(0))
                    room.pop(0)
            continue
        best = -1
        best_room = seq_length + 1
        for j, r in enumerate(room):
            if f <= r < best_room:
                best, best_room = j, r
        if best < 0:
            if len(room) >= window:
                fullest = min(range(len(room)), key=room.__getitem__)
                emitted.append(members.pop(fullest))
                room.pop(fullest)
            if f == seq_length:
                emitted.append([(i, 0, f)])
                continue
            room.append(seq_length - f)
            members.append([(i, 0, f)])
        else:
            room[best] -= f
            members[best].append((i, 0, f))
            if room[best] == 0:
                emitted.append(members.pop(best))
                room.pop(best)
    if flush:
        emitted.extend(members)
    offsets = np.zeros(len(emitted) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(m) for m in emitted])
    runs = np.array([run for m in emitted for run in m], dtype=np.int64).reshape(-1, 3)
    return PackIndex(offsets, runs[:, 0].copy(), runs[:, 1].astype(np.int32), runs[:, 2].astype(np.int32))


def build_train_index(cfg, num_train_sequences: int, vocab, tokenizer):
    """The training index as the builder made it before `liquid_train.data.index`: one source per task, megatron's
    `BlendedDataset` with the pure-Python exact index (or the stock one), footprints of the whole stream in
    memory, the pure-Python packer, the stream grown by 1.25x until it packs into enough sequences.

    Returns ``(dataset_index, dataset_sample_index, footprints, PackIndex)``; every rank used to run this."""
    class ExactBlendedDataset(BlendedDataset):
        def _build_indices(self):
            return exact_blending_indices(self.weights, self.size)

    sources = open_sources(cfg, vocab, tokenizer)
    if any(s.number for s in sources):
        raise ValueError("the reference builder takes one source per task")
    probes = [s.dataset(cfg, "train", 1) for s in sources]
    mean_len = {s.task: float(d.footprints(np.arange(d.num_units)).mean()) for s, d in zip(sources, probes)}
    tasks = [s.task for s in sources]
    weights = np.array([float(cfg.mixture[TASK_NAMES[t]]) for t in tasks])
    if cfg.mix_by == "tokens":
        weights = weights / np.array([mean_len[t] for t in tasks])
    weights = weights / weights.sum()
    mean_footprint = float(sum(w * mean_len[t] for w, t in zip(weights, tasks)))
    size = int(math.ceil(num_train_sequences * cfg.seq_length / mean_footprint / 0.95)) + 64
    config = BlendedMegatronDatasetConfig(random_seed=cfg.seed, sequence_length=cfg.seq_length, path_to_cache=None)
    blend_logger = logging.getLogger("megatron.core.datasets.blended_dataset")
    level = blend_logger.level
    blend_logger.setLevel(logging.ERROR)
    try:
        while True:
            datasets = [s.dataset(cfg, "train", size) for s in sources]
            if len(datasets) == 1:
                dataset_index = np.zeros(size, dtype=np.int16)
                dataset_sample_index = np.arange(size, dtype=np.int64)
            else:
                cls = ExactBlendedDataset if cfg.blend_algorithm == "exact" else BlendedDataset
                blended = cls(datasets, [float(w) for w in weights], size, config)
                dataset_index, dataset_sample_index = blended.dataset_index, blended.dataset_sample_index
            footprints = np.empty(size, dtype=np.int64)
            splittable = np.zeros(size, dtype=bool)
            for position, dataset in enumerate(datasets):
                sel = dataset_index == position
                footprints[sel] = dataset.footprints(dataset_sample_index[sel])
                splittable[sel] = dataset.splittable
            index = build_pack_index(footprints, cfg.seq_length, cfg.pack_window, flush=False, splittable=splittable)
            if len(index) >= num_train_sequences:
                return dataset_index, dataset_sample_index, footprints, index
            size = int(size * 1.25) + 64
    finally:
        blend_logger.setLevel(level)
