"""Mixed-task data (``liquid_train.data``, contract 6) -> the trainer's DataProvider.

Why an adapter: the trainer asks for micro-batch iterators by (consumed_samples, micro_batch_size, dp rank/size);
the data package builds packed datasets and megatron-style loaders. This module only connects the two; the stream
itself (templates, exact ratios, packing, resume) is the data package's.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Dict, Iterator

from liquid_train.data import build_data_loader, build_datasets
from liquid_train.training.preflight import data_config
from liquid_train.training.providers import DataProvider
from liquid_train.vocab import TASK_TEXT

logger = logging.getLogger(__name__)


def build(cfg, vocab) -> DataProvider:
    data_cfg = data_config(cfg)
    num_train = cfg.train.iters * cfg.train.global_batch_size
    train, valid = build_datasets(data_cfg, num_train, vocab=vocab)

    def train_iterator(consumed_samples: int, micro_batch_size: int, dp_rank: int, dp_size: int) -> Iterator:
        return iter(build_data_loader(train, consumed_samples, micro_batch_size, dp_rank, dp_size))

    def valid_iterators(micro_batch_size: int, dp_rank: int, dp_size: int) -> Dict[str, Iterator]:
        out = {}
        for task, dataset in valid.items():
            if len(dataset) < micro_batch_size * dp_size:
                logger.warning("validation set of %s has %d sequences, fewer than one micro-batch per DP rank; "
                               "not validated", task, len(dataset))
                continue
            out[task] = _cycle(dataset, micro_batch_size, dp_rank, dp_size, build_data_loader)
        return out

    grid = _image_grid(data_cfg)
    return DataProvider(train_iterator=train_iterator, valid_iterators=valid_iterators,
                        seq_length=data_cfg.seq_length, image_tokens=(grid[0] * grid[1]) if grid else None,
                        report=train.report)


def _image_grid(data_cfg):
    """The (h, w) code grid of the first image-text source (``<prefix>.meta.json``), or None: it only sizes the
    in-training sample images."""
    for task in data_cfg.active_tasks:
        if task == TASK_TEXT:
            continue
        meta = data_cfg.task_sources(task)[0].path + ".meta.json"
        if os.path.exists(meta):
            with open(meta) as f:
                return json.load(f).get("image_grid")
    return None


def _cycle(dataset, micro_batch_size, dp_rank, dp_size, build_data_loader):
    """Validation repeats from the start of its split when exhausted (every validation sees the same batches)."""
    while True:
        yielded = False
        for batch in build_data_loader(dataset, 0, micro_batch_size, dp_rank, dp_size):
            yielded = True
            yield batch
        if not yielded:
            return
