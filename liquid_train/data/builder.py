"""Build the packed mixed-task training dataset, per-task validation datasets, and their data loaders.

Usage (the trainer's side)::

    from liquid_train.data import DataConfig, build_datasets, build_data_loader
    train, valid = build_datasets(cfg, num_train_sequences=train_iters * global_batch)
    loader = build_data_loader(train, consumed_samples, micro_batch_size, dp_rank, dp_size)
    for batch in loader: ...            # dict of tensors, see liquid_train/data/packing.py
    train.report(consumed_samples)      # per-task and per-source samples, epochs, packing efficiency

``consumed_samples`` counts packed sequences (what the trainer's global batch counts). The stream and the packed
rows come from the mixed-task index (`liquid_train.data.index`), built once per key and memory-mapped.
"""
from __future__ import annotations

import logging
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from transformers import AutoTokenizer

from liquid_train.data import index as index_module
from liquid_train.data.config import DataConfig
from liquid_train.data.index import IndexPlan, IndexReader
from liquid_train.data.mixture import ConcatStream, MixtureStream
from liquid_train.data.packing import PackedDataset, PackIndex, collate_packed
from liquid_train.data.sampler import PretrainingBatchSampler
from liquid_train.data.sources import Source, open_sources
from liquid_train.vocab import TASK_NAMES, LiquidVocab

logger = logging.getLogger(__name__)


class PackedMixtureDataset(PackedDataset):
    """The training dataset: packed sequences of the blended stream (memory-mapped from the built index), plus
    per-task and per-source reporting."""

    def __init__(self, stream: MixtureStream, index: PackIndex, cfg: DataConfig, pad_id: int,
                 sources: Sequence[Source] = (), reader: Optional[IndexReader] = None, built: bool = False):
        super().__init__(stream, index, cfg.seq_length, pad_id, stream.footprints, None, "train")
        self.config = cfg
        self.sources = list(sources)
        self.task_datasets = {}  # task -> its first source's dataset (the only one without `sources`)
        for dataset in stream.task_datasets:
            self.task_datasets.setdefault(dataset.task, dataset)
        self.reader = reader
        self.index_built_here = built
        self._epochs_logged = [0] * len(stream.task_datasets)

    # PackedDataset keeps per-position tasks; here they derive from the mapped source ids, on first use only
    stream_tasks = property(lambda self: self.stream.tasks, lambda self, value: None)

    def source_counts(self, num_sequences: int) -> np.ndarray:
        """Samples begun per source (indexed by source id) in the first ``num_sequences`` packed sequences: the
        index's cumulative checkpoint plus the runs after it (O(checkpoint interval), not O(num_sequences))."""
        num_sequences = min(int(num_sequences), len(self))
        num_sources = len(self.stream.task_datasets)
        base = np.zeros(num_sources, dtype=np.int64)
        first_row = 0
        if self.reader is not None:
            every = self.reader.meta["counts_every"]
            block = num_sequences // every
            base = np.array(self.reader.array("begun")[block], dtype=np.int64)
            first_row = block * every
        lo, hi = int(self.index.offsets[first_row]), int(self.index.offsets[num_sequences])
        begun = np.asarray(self.index.sample[lo:hi])[np.asarray(self.index.start[lo:hi]) == 0]
        return base + np.bincount(np.asarray(self.stream.dataset_index[begun], dtype=np.int64),
                                  minlength=num_sources)

    def task_counts(self, num_sequences: int) -> np.ndarray:
        """Samples per task (indexed by TASK_*) begun in the first ``num_sequences`` packed sequences."""
        return np.bincount(self.stream.source_tasks, weights=self.source_counts(num_sequences),
                           minlength=3).astype(np.int64)

    def packing_efficiency(self, start: int = 0, stop: int = None) -> float:
        stop = len(self) if stop is None else stop
        if self.reader is None or start != 0 or stop <= start:
            return super().packing_efficiency(start, stop)
        every = self.reader.meta["counts_every"]
        block = stop // every
        used = int(self.reader.array("used")[block])
        lo, hi = int(self.index.offsets[block * every]), int(self.index.offsets[stop])
        used += int(np.asarray(self.index.length[lo:hi]).sum(dtype=np.int64))
        return float(used) / float(stop * self.seq_length)

    def report(self, consumed_samples: int) -> Dict[str, float]:
        """After ``consumed_samples`` packed sequences: packing efficiency; samples and epochs per task
        (``samples/<task>``, ``epochs/<task>``: the most-repeated source's) and per source
        (``samples/<task>/<source>``, ``epochs/<task>/<source>``). A source that starts a new epoch is logged."""
        by_source = self.source_counts(consumed_samples)
        out: Dict[str, float] = {"packing_efficiency": self.packing_efficiency(0, max(1, consumed_samples))}
        datasets = self.stream.task_datasets
        for task in sorted(self.task_datasets):
            ids = [i for i, d in enumerate(datasets) if d.task == task]
            out[f"samples/{TASK_NAMES[task]}"] = int(by_source[ids].sum())
            out[f"epochs/{TASK_NAMES[task]}"] = max(datasets[i].epochs(by_source[i]) for i in ids)
        for i, dataset in enumerate(datasets):
            key = f"{TASK_NAMES[dataset.task]}/{dataset.name}"
            epochs = dataset.epochs(by_source[i])
            out[f"samples/{key}"] = int(by_source[i])
            out[f"epochs/{key}"] = epochs
            if int(epochs) > self._epochs_logged[i]:
                self._epochs_logged[i] = int(epochs)
                logger.info("data source %s wrapped: epoch %d began by packed sequence %d (%d samples taken)",
                            key, int(epochs) + 1, consumed_samples, int(by_source[i]))
        return out


def _load_tokenizer(cfg: DataConfig):
    if cfg.tokenizer is None:
        raise ValueError("DataConfig.tokenizer is not set: give the HF tokenizer that built the indexed datasets")
    try:
        return AutoTokenizer.from_pretrained(cfg.tokenizer)
    except Exception as exc:
        raise ValueError(f"DataConfig.tokenizer={cfg.tokenizer!r}: cannot load the HF tokenizer ({exc})") from exc


def index_plan(cfg: DataConfig, num_train_sequences: int, vocab: Optional[LiquidVocab] = None,
               tokenizer=None) -> Tuple[IndexPlan, LiquidVocab]:
    """The mixed-task index plan of a config (opens the sources; reads only file metadata) and the vocabulary.

    ``vocab``/``tokenizer`` default to ``cfg.vocab``/``cfg.tokenizer``."""
    cfg.validate()
    vocab = vocab if vocab is not None else LiquidVocab.load(cfg.vocab) if cfg.vocab else None
    if vocab is None:
        raise ValueError("DataConfig.vocab is not set: give the liquid_vocab.json of the model being trained")
    tokenizer = tokenizer if tokenizer is not None else _load_tokenizer(cfg)
    if num_train_sequences < 1:
        raise ValueError(f"num_train_sequences={num_train_sequences} must be >= 1")
    return IndexPlan(cfg, num_train_sequences, open_sources(cfg, vocab, tokenizer)), vocab


def build_datasets(cfg: DataConfig, num_train_sequences: int, vocab: Optional[LiquidVocab] = None,
                   tokenizer=None) -> Tuple[PackedMixtureDataset, Dict[str, PackedDataset]]:
    """Packed training dataset (at least ``num_train_sequences`` long) and ``{task name: packed valid dataset}``.

    The index behind them is built once per key (by rank 0 of a job, the other ranks waiting; see
    `liquid_train.data.index.ensure`) and memory-mapped read-only. ``vocab``/``tokenizer`` default to
    ``cfg.vocab``/``cfg.tokenizer``."""
    plan, vocab = index_plan(cfg, num_train_sequences, vocab, tokenizer)
    reader, built = index_module.ensure(plan)
    meta = reader.meta
    datasets = [s.dataset(cfg, "train", m["samples"], tables=reader.source(s.id))
                for s, m in zip(plan.sources, meta["sources"])]
    stream = MixtureStream(datasets, reader.array("source"), reader.array("source_sample"), reader.array("footprint"))
    train = PackedMixtureDataset(stream, reader.pack_index(), cfg, vocab.pad_id, plan.sources, reader, built)
    for s, m in zip(plan.sources, meta["sources"]):
        if m["epochs"] > 1:
            logger.info("data source %s: %.2f epochs over the %d packed sequences built", s.key, m["epochs"],
                        meta["num_sequences"])

    valid: Dict[str, PackedDataset] = {}
    for name, info in meta["valid"].items():
        task = TASK_NAMES.index(name)
        parts = [s.dataset(cfg, "valid", n) for s, n in zip(plan.task_sources(task), info["sizes"])]
        source = parts[0] if len(parts) == 1 else ConcatStream(parts, info["sizes"])
        footprints = reader.array(f"valid-{name}-footprint")
        tasks = np.full(len(footprints), task, dtype=np.int64)
        valid[name] = PackedDataset(source, reader.pack_index(f"valid-{name}-"), cfg.seq_length, vocab.pad_id,
                                    footprints, tasks, f"valid-{name}")
    return train, valid


def build_data_loader(dataset: PackedDataset, consumed_samples: int, micro_batch_size: int, dp_rank: int = 0,
                      dp_size: int = 1, num_workers: int = 0, drop_last: bool = True) -> torch.utils.data.DataLoader:
    """Loader over packed sequences from ``consumed_samples`` on; rank ``dp_rank`` of ``dp_size`` gets its slice.

    Each yielded batch is a dict of ``[b, s]`` tensors plus megatron's ``PackedSeqParams`` (see `collate_packed`).
    The stream does not depend on ``num_workers``."""
    sampler = PretrainingBatchSampler(len(dataset), consumed_samples, micro_batch_size, dp_rank, dp_size, drop_last)
    return torch.utils.data.DataLoader(dataset, batch_sampler=sampler,
                                       collate_fn=collate_packed,
                                       num_workers=num_workers, persistent_workers=num_workers > 0)
