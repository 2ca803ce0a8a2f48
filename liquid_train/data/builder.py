"""Build the packed mixed-task training dataset, per-task validation datasets, and their data loaders.

Usage (the trainer's side)::

    from liquid_train.data import DataConfig, build_datasets, build_data_loader
    train, valid = build_datasets(cfg, num_train_sequences=train_iters * global_batch)
    loader = build_data_loader(train, consumed_samples, micro_batch_size, dp_rank, dp_size)
    for batch in loader: ...            # dict of tensors, see liquid_train/data/packing.py
    train.report(consumed_samples)      # per-task samples, epochs, packing efficiency

``consumed_samples`` counts packed sequences (what the trainer's global batch counts).
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from typing import Dict, Optional, Tuple

import numpy as np
import torch

from liquid_train.atomic import atomic_path
from liquid_train.data.config import DataConfig
from liquid_train.data.mixture import MixtureStream
from liquid_train.data.packing import PackedDataset, PackIndex, build_pack_index, collate_packed
from liquid_train.data.sampler import PretrainingBatchSampler
from liquid_train.data.task_datasets import LiquidTaskDataset, open_indexed_dataset, split_documents
from liquid_train.data.templates import LiquidTemplates
from liquid_train.vocab import TASK_NAMES, TASK_TEXT, LiquidVocab

logger = logging.getLogger(__name__)


class PackedMixtureDataset(PackedDataset):
    """The training dataset: packed sequences of the blended stream, plus per-task reporting."""

    def __init__(self, stream: MixtureStream, index: PackIndex, cfg: DataConfig, pad_id: int):
        super().__init__(stream, index, cfg.seq_length, pad_id, stream.footprints, stream.tasks, "train")
        self.config = cfg
        self.task_datasets = {d.task: d for d in stream.task_datasets}

    def report(self, consumed_samples: int) -> Dict[str, float]:
        """Per-task samples and epochs after ``consumed_samples`` packed sequences, plus packing efficiency."""
        counts = self.task_counts(consumed_samples)
        out: Dict[str, float] = {"packing_efficiency": self.packing_efficiency(0, max(1, consumed_samples))}
        for task, dataset in self.task_datasets.items():
            out[f"samples/{TASK_NAMES[task]}"] = int(counts[task])
            out[f"epochs/{TASK_NAMES[task]}"] = dataset.epochs(counts[task])
        return out


def _load_tokenizer(cfg: DataConfig):
    from transformers import AutoTokenizer

    if cfg.tokenizer is None:
        raise ValueError("DataConfig.tokenizer is not set: give the HF tokenizer that built the indexed datasets")
    try:
        return AutoTokenizer.from_pretrained(cfg.tokenizer)
    except Exception as exc:
        raise ValueError(f"DataConfig.tokenizer={cfg.tokenizer!r}: cannot load the HF tokenizer ({exc})") from exc


def _cache_dir(cfg: DataConfig) -> str:
    if cfg.cache_dir:
        return cfg.cache_dir
    base = cfg.pairs_path or cfg.text_path
    return os.path.join(os.path.dirname(os.path.abspath(base)), "cache")


def _atomic_save(path: str, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        np.save(tmp, array)


_PACK_FIELDS = ("offsets", "sample", "start", "length")
PACKER_VERSION = 2  # part of the cache key: bump whenever build_pack_index would pack the same stream differently


def _cached_pack_index(cfg: DataConfig, description: dict, footprints: np.ndarray, splittable: np.ndarray,
                       flush: bool) -> PackIndex:
    """Pack (or load the cached pack index of) a stream; keyed by the stream description and its footprints."""
    key = hashlib.md5(json.dumps(description, sort_keys=True).encode() + footprints.tobytes() +
                      np.packbits(splittable).tobytes(), usedforsecurity=False).hexdigest()
    directory = _cache_dir(cfg)
    paths = {name: os.path.join(directory, f"pack-{key}-{name}.npy") for name in _PACK_FIELDS}
    if all(os.path.exists(p) for p in paths.values()):
        return PackIndex(**{name: np.load(p) for name, p in paths.items()})
    index = build_pack_index(footprints, cfg.seq_length, cfg.pack_window, flush=flush, splittable=splittable)
    try:
        os.makedirs(directory, exist_ok=True)
        for name, array in index.arrays().items():  # offsets last: a complete set is what the check above reads
            if name != "offsets":
                _atomic_save(paths[name], array)
        _atomic_save(paths["offsets"], index.offsets)
    except OSError as exc:  # a read-only data dir must not stop training; the index is cheap to rebuild
        logger.warning("could not cache the pack index in %s: %s", directory, exc)
    return index


def _describe(cfg: DataConfig, split: str, size: int) -> dict:
    fields = {k: getattr(cfg, k) for k in ("pairs_path", "text_path", "mixture", "mix_by", "seq_length", "text_sample", "text_chunk_length", "seed",
                                            "cfg_drop_prob", "blend_algorithm", "valid_fraction", "pack_window", "t2i_instructions",
                                            "i2t_prompt")}
    fields["pairs_path"] = fields["pairs_path"] and os.path.abspath(fields["pairs_path"])
    fields["text_path"] = fields["text_path"] and os.path.abspath(fields["text_path"])
    return {"split": split, "size": size, "packer": PACKER_VERSION, **fields}


def build_datasets(cfg: DataConfig, num_train_sequences: int, vocab: Optional[LiquidVocab] = None,
                   tokenizer=None) -> Tuple[PackedMixtureDataset, Dict[str, PackedDataset]]:
    """Packed training dataset (at least ``num_train_sequences`` long) and ``{task name: packed valid dataset}``.

    ``vocab``/``tokenizer`` default to ``cfg.vocab``/``cfg.tokenizer``."""
    cfg.validate()
    vocab = vocab if vocab is not None else LiquidVocab.load(cfg.vocab) if cfg.vocab else None
    if vocab is None:
        raise ValueError("DataConfig.vocab is not set: give the liquid_vocab.json of the model being trained")
    tokenizer = tokenizer if tokenizer is not None else _load_tokenizer(cfg)
    if num_train_sequences < 1:
        raise ValueError(f"num_train_sequences={num_train_sequences} must be >= 1")

    templates = LiquidTemplates(vocab, tokenizer, cfg.seq_length, cfg.seed, cfg.cfg_drop_prob,
                                cfg.t2i_instructions, cfg.i2t_prompt)
    valid_templates = LiquidTemplates(vocab, tokenizer, cfg.seq_length, cfg.seed, 0.0,
                                      cfg.t2i_instructions, cfg.i2t_prompt)
    opened, splits = {}, {}
    for task in cfg.active_tasks:
        kind = "text" if task == TASK_TEXT else "pairs"
        prefix = getattr(cfg, f"{kind}_path")
        if prefix is None:
            raise ValueError(f"DataConfig.mixture gives {TASK_NAMES[task]} a weight but DataConfig.{kind}_path is unset")
        if kind not in opened:
            opened[kind] = (prefix, open_indexed_dataset(prefix, kind))
            num_docs = len(opened[kind][1].document_indices) - 1
            splits[kind] = split_documents(num_docs, cfg.valid_fraction)

    def task_dataset(task, split, num_samples, shuffle, tmpl):
        kind = "text" if task == TASK_TEXT else "pairs"
        prefix, indexed = opened[kind]
        return LiquidTaskDataset(task, indexed, prefix, tmpl, splits[kind][split], num_samples, split, shuffle,
                                 cfg.text_chunk_length, cfg.text_sample)

    # Mean footprint per task (one epoch, exact) -> stream size estimate, and token weights for mix_by=tokens.
    probes = {t: task_dataset(t, "train", 1, True, templates) for t in cfg.active_tasks}
    mean_len = {t: float(d.footprints(np.arange(d.num_units)).mean()) for t, d in probes.items()}
    weights = np.array([float(cfg.mixture[TASK_NAMES[t]]) for t in cfg.active_tasks])
    if cfg.mix_by == "tokens":
        weights = weights / np.array([mean_len[t] for t in cfg.active_tasks])
    weights = weights / weights.sum()
    mean_footprint = float(sum(w * mean_len[t] for w, t in zip(weights, cfg.active_tasks)))
    size = int(math.ceil(num_train_sequences * cfg.seq_length / mean_footprint / 0.95)) + 64

    while True:
        datasets = [task_dataset(t, "train", size, True, templates) for t in cfg.active_tasks]
        stream = MixtureStream(datasets, list(weights), size, cfg.seed, cfg.seq_length, cfg.blend_algorithm)
        index = _cached_pack_index(cfg, _describe(cfg, "train", size), stream.footprints, stream.splittable,
                                   flush=False)
        if len(index) >= num_train_sequences:
            break
        size = int(size * 1.25) + 64
    train = PackedMixtureDataset(stream, index, cfg, vocab.pad_id)

    valid: Dict[str, PackedDataset] = {}
    if cfg.valid_fraction > 0:
        for task in cfg.active_tasks:
            probe = task_dataset(task, "valid", 1, False, valid_templates)
            dataset = task_dataset(task, "valid", probe.num_units, False, valid_templates)
            footprints = dataset.footprints(np.arange(dataset.num_units))
            splittable = np.full(len(footprints), dataset.splittable)
            index = _cached_pack_index(cfg, _describe(cfg, f"valid-{TASK_NAMES[task]}", dataset.num_units),
                                       footprints, splittable, flush=True)
            tasks = np.full(len(footprints), task, dtype=np.int64)
            valid[TASK_NAMES[task]] = PackedDataset(dataset, index, cfg.seq_length, vocab.pad_id,
                                                    footprints, tasks, f"valid-{TASK_NAMES[task]}")
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
