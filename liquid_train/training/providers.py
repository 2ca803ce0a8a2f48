"""What the trainer is given: the model (megatron's per-stage factory, the vocabulary, the architecture) and the
data (micro-batch iterators), as megatron's ``pretrain(model_provider, ...)`` takes them.

The default model provider builds the project's families through the one build path; the default data provider is
:func:`liquid_train.training.data_adapter.build`. Programmatic callers (benchmarks, the tests) may pass their own.
These types live apart from the trainer so that the data adapter and the trainer both import them, not each other.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, Optional

import torch

from liquid_train import image_meta
from liquid_train.models import builder
from liquid_train.models.sidecar import MODEL_SIDECAR, read_sidecar
from liquid_train.training.preflight import vocab_path
from liquid_train.vocab import LiquidVocab

logger = logging.getLogger(__name__)


@dataclass
class ModelProvider:
    """What the trainer needs to build the model."""

    provider: Callable[..., torch.nn.Module]
    """``provider(pre_process, post_process, vp_stage=None) -> GPTModel`` (a ``ModelBuild``)."""
    vocab: Any
    """``LiquidVocab``."""
    arch: Any
    """The ``ModelArch`` (parameter and FLOPs accounting, the sidecar)."""
    sidecar: Optional[Dict] = None
    """Contents of ``liquid_model.json`` written next to each checkpoint."""

    def describe(self) -> Optional[Dict]:
        describe = getattr(self.provider, "describe", None)
        return describe() if describe is not None else None


@dataclass
class DataProvider:
    """Micro-batch iterators. A batch holds ``[b, s]`` tokens, labels, loss_mask, position_ids, task_ids,
    segment_ids and megatron's ``PackedSeqParams`` (``liquid_train.data.packing.collate_packed``)."""

    train_iterator: Callable[[int, int, int, int], Iterator[Dict[str, Any]]]
    """``(consumed_samples, micro_batch_size, dp_rank, dp_size) -> iterator`` over this DP rank's micro-batches."""
    valid_iterators: Optional[Callable[[int, int, int], Dict[str, Iterator[Dict[str, Any]]]]] = None
    """``(micro_batch_size, dp_rank, dp_size) -> {task: iterator}``, restarted at every validation."""
    seq_length: int = 0
    image_tokens: Optional[int] = None
    report: Optional[Callable[[int], Dict[str, float]]] = None
    """``consumed_samples -> {packing_efficiency, samples/<task>, epochs/<task>, ...}`` of the training stream."""


def default_model_provider(cfg) -> ModelProvider:
    """The project's model families and vocabulary, through the one build path (``models.builder``)."""
    arch = builder.arch_from_run_config(cfg.model)
    vocab = LiquidVocab.load(vocab_path(cfg))
    build = builder.build(arch, vocab, builder.options_from_run_config(cfg))
    logger.info("model build: %s", build.describe())
    sidecar = {"family": arch.family, "size": arch.size, "arch": arch.to_dict(),
               **image_meta.sidecar_entries(cfg.data)}  # grid, VQ, templates, tokenizer: for the export
    if cfg.model.init_from and os.path.exists(os.path.join(cfg.model.init_from, MODEL_SIDECAR)):
        hf_config = read_sidecar(cfg.model.init_from).get("hf_config")  # export writes back what was imported
        if hf_config is not None:
            sidecar["hf_config"] = hf_config
    return ModelProvider(provider=build, vocab=vocab, arch=arch, sidecar=sidecar)
