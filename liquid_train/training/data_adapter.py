"""Mixed-task data (``liquid_train.data``, contract 6) -> the trainer's DataProvider.

Why an adapter: the trainer asks for micro-batch iterators by (consumed_samples, micro_batch_size, dp rank/size);
the data package builds packed datasets and megatron-style loaders. This module only connects the two; the stream
itself (templates, exact ratios, packing, resume) is the data package's.
"""
from __future__ import annotations

import logging
from typing import Dict, Iterator

from omegaconf import OmegaConf

logger = logging.getLogger(__name__)


def _data_config(cfg):
    from liquid_train.data import DataConfig

    if OmegaConf.is_config(cfg.data):
        return OmegaConf.to_object(cfg.data) if OmegaConf.get_type(cfg.data) is DataConfig else \
            DataConfig(**OmegaConf.to_container(cfg.data, resolve=True))
    return cfg.data


def build(cfg, vocab):
    from liquid_train.data import build_data_loader, build_datasets
    from liquid_train.training.trainer import DataProvider

    data_cfg = _data_config(cfg)
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

    grid = None
    try:
        import json
        import os

        if data_cfg.pairs_path and os.path.exists(data_cfg.pairs_path + ".meta.json"):
            with open(data_cfg.pairs_path + ".meta.json") as f:
                grid = json.load(f).get("image_grid")
    except Exception:  # the grid only sizes the sample images
        grid = None
    return DataProvider(train_iterator=train_iterator, valid_iterators=valid_iterators,
                        seq_length=data_cfg.seq_length, image_tokens=(grid[0] * grid[1]) if grid else None,
                        report=train.report)


def _cycle(dataset, micro_batch_size, dp_rank, dp_size, build_data_loader):
    """Validation repeats from the start of its split when exhausted (every validation sees the same batches)."""
    while True:
        yielded = False
        for batch in build_data_loader(dataset, 0, micro_batch_size, dp_rank, dp_size):
            yielded = True
            yield batch
        if not yielded:
            return
