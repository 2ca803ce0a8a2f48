"""The config's data sources, opened: one `Source` per (task, indexed dataset), numbered task by task.

Why a module: the index builder, the index key and the training datasets all need the same list in the same order
(the source id in the index is a position in it), the same train/valid document split, and the same seeds.
Opening a source maps its ``.idx``/``.bin`` (megatron's `IndexedDataset`) and reads nothing else, so every rank can
do it cheaply; T2I and I2T sources over one ``pairs`` dataset share the mapping.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, List

import numpy as np

from liquid_train.data.config import SOURCE_KINDS, DataConfig
from liquid_train.data.task_datasets import LiquidTaskDataset, check_layout, open_indexed_dataset, split_documents
from liquid_train.data.templates import LiquidTemplates
from liquid_train.vocab import TASK_NAMES, LiquidVocab


def source_seed(seed: int, task: int, number: int) -> int:
    """Seed of the ``number``-th source of a task: the run seed for the first (so a one-source config keeps the
    stream it had before sources existed), an independent one derived from (seed, task, number) for the others."""
    if number == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed), int(task), int(number), 0x5C]).generate_state(1, np.uint64)[0] >> 1)


@dataclass
class Source:
    id: int
    task: int
    number: int
    """Position among its task's sources."""
    label: str
    path: str
    weight: float
    indexed: object
    splits: Dict[str, tuple]
    templates: LiquidTemplates
    valid_templates: LiquidTemplates

    @property
    def key(self) -> str:
        """``<task>/<label>``: the source's name in reports and metrics."""
        return f"{TASK_NAMES[self.task]}/{self.label}"

    def dataset(self, cfg: DataConfig, split: str, num_samples: int, tables=None) -> LiquidTaskDataset:
        train = split == "train"
        return LiquidTaskDataset(self.task, self.indexed, self.path, self.templates if train else self.valid_templates,
                                 self.splits[split], num_samples, split, train, cfg.text_chunk_length,
                                 cfg.text_sample, tables=tables, name=self.label)

    def check(self) -> None:
        """The layout check `open_sources` leaves to whoever builds the index (it reads every document)."""
        check_layout(self.indexed, self.path, SOURCE_KINDS[TASK_NAMES[self.task]])

    def identity(self) -> dict:
        """What the index key needs to know of the files: absolute prefix, and size + mtime of ``.idx``/``.bin``."""
        files = {}
        for ext in ("idx", "bin"):
            st = os.stat(f"{self.path}.{ext}")
            files[ext] = [st.st_size, st.st_mtime_ns]
        return {"task": TASK_NAMES[self.task], "name": self.label, "path": os.path.abspath(self.path),
                "weight": float(self.weight), "files": files}


def open_sources(cfg: DataConfig, vocab: LiquidVocab, tokenizer) -> List[Source]:
    """The sources of the active tasks, in TASK_NAMES order, each task's in the order the config lists them."""
    opened: Dict[tuple, tuple] = {}
    sources: List[Source] = []
    for task in cfg.active_tasks:
        kind = SOURCE_KINDS[TASK_NAMES[task]]
        for number, spec in enumerate(cfg.task_sources(task)):
            where = (os.path.abspath(spec.path), kind)
            if where not in opened:  # layout checked by the index build (`Source.check`), not on every rank
                indexed = open_indexed_dataset(spec.path, kind, check=False)
                num_docs = len(indexed.document_indices) - 1
                opened[where] = (indexed, split_documents(num_docs, cfg.valid_fraction))
            indexed, splits = opened[where]
            seed = source_seed(cfg.seed, task, number)
            templates = LiquidTemplates(vocab, tokenizer, cfg.seq_length, seed, cfg.cfg_drop_prob,
                                        cfg.t2i_instructions, cfg.i2t_prompt)
            valid_templates = LiquidTemplates(vocab, tokenizer, cfg.seq_length, seed, 0.0,
                                              cfg.t2i_instructions, cfg.i2t_prompt)
            sources.append(Source(len(sources), task, number, spec.label, spec.path, float(spec.weight), indexed,
                                  splits, templates, valid_templates))
    return sources
