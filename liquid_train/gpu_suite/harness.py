"""Inputs and trainers for the suite's model sections: synthetic packed micro-batches in the trainer's own layout
(:func:`liquid_train.data.packing.collate_packed`, megatron ``PackedSeqParams`` THD) and :class:`TrainModule` objects
built through the one build path.

Why synthetic text: the sections measure numerics, speed and memory, which do not depend on what the tokens mean,
and a bare GPU machine holds no data set. The stream is a fixed random Markov chain (each token has a few possible
successors), so a model can learn it and a loss curve falls: two precisions trained on it can be compared step by
step. Documents have random lengths and are packed end to end with a padding segment at the end of a row, as the
packer leaves them.
"""
from __future__ import annotations

import dataclasses
import os
import time
from typing import Dict, List, Sequence

import numpy as np
import torch

from liquid_train.data.packing import collate_packed
from liquid_train.gpu_suite.context import timed
from liquid_train.models import builder
from liquid_train.models.options import BuildOptions
from liquid_train.parallel import set_seed
from liquid_train.training import ModelProvider, TrainModule, load_config
from liquid_train.vocab import TASK_PAD, TASK_TEXT, LiquidVocab


class MarkovText:
    """A learnable token stream over ``states`` ids of the text vocabulary, ``successors`` choices per token."""

    def __init__(self, text_rows: int, seed: int = 0, states: int = 4096, successors: int = 4):
        rng = np.random.default_rng(seed)
        self.ids = rng.choice(text_rows, size=min(states, text_rows), replace=False).astype(np.int64)
        self.next = rng.integers(0, len(self.ids), size=(len(self.ids), successors))

    def document(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n + 1`` ids: inputs are the first ``n``, labels the last ``n``."""
        state = int(rng.integers(len(self.ids)))
        out = np.empty(n + 1, dtype=np.int64)
        choices = rng.integers(0, self.next.shape[1], size=n + 1)
        for i in range(n + 1):
            out[i] = self.ids[state]
            state = int(self.next[state, choices[i]])
        return out


def _text_segment(doc: np.ndarray) -> Dict[str, np.ndarray]:
    """A document of ``n + 1`` ids as a segment: inputs the first ``n``, labels the last ``n``, all in the loss."""
    n = len(doc) - 1
    return {"tokens": doc[:-1], "labels": doc[1:], "loss_mask": np.ones(n, np.float32),
            "task_ids": np.full(n, TASK_TEXT, np.int64)}


def _item(segments: Sequence[Dict[str, np.ndarray]], seq: int, pad_id: int) -> Dict[str, torch.Tensor]:
    """One packed row (the fields ``PackedDataset.__getitem__`` yields) from segments laid end to end."""
    tokens = np.full(seq, pad_id, dtype=np.int64)
    labels = np.full(seq, pad_id, dtype=np.int64)
    loss_mask = np.zeros(seq, dtype=np.float32)
    task_ids = np.full(seq, TASK_PAD, dtype=np.int64)
    position_ids = np.zeros(seq, dtype=np.int64)
    segment_ids = np.zeros(seq, dtype=np.int64)
    lengths, pos = [], 0
    for k, seg in enumerate(segments):
        n = len(seg["tokens"])
        for name, target in (("tokens", tokens), ("labels", labels), ("loss_mask", loss_mask),
                             ("task_ids", task_ids)):
            target[pos:pos + n] = seg[name]
        position_ids[pos:pos + n] = np.arange(n)
        segment_ids[pos:pos + n] = k
        lengths.append(n)
        pos += n
    if pos < seq:  # padding is its own last segment
        position_ids[pos:] = np.arange(seq - pos)
        segment_ids[pos:] = len(segments)
        lengths.append(seq - pos)
    return {"tokens": torch.from_numpy(tokens), "labels": torch.from_numpy(labels),
            "loss_mask": torch.from_numpy(loss_mask), "position_ids": torch.from_numpy(position_ids),
            "task_ids": torch.from_numpy(task_ids), "segment_ids": torch.from_numpy(segment_ids),
            "seq_lengths": torch.tensor(lengths, dtype=torch.int32)}


def packed_micro_batch(stream: MarkovText, rng: np.random.Generator, rows: int, seq: int, doc_lengths,
                       pad_id: int, fill: float = 0.97) -> Dict:
    """``rows`` packed rows of documents with lengths drawn from ``doc_lengths`` (lo, hi), each row filled to about
    ``fill`` of ``seq`` (the rest is padding), collated as the trainer's data loader collates them."""
    lo, hi = doc_lengths
    items = []
    for _ in range(rows):
        docs, used, target = [], 0, max(1, int(fill * seq))
        while used < target:
            n = min(int(rng.integers(lo, hi + 1)), target - used)
            docs.append(_text_segment(stream.document(rng, n)))
            used += n
        items.append(_item(docs, seq, pad_id))
    return collate_packed(items)


def segments_alone(batch: Dict, pad_id: int) -> List[Dict]:
    """Every attention segment with loss tokens of a packed micro-batch as a one-row micro-batch of its own,
    padded (a padding segment of its own) to the packed stream's length so every call has one shape."""
    flat = {k: v.reshape(-1) for k, v in batch.items() if torch.is_tensor(v)}
    total = flat["tokens"].numel()
    cu = batch["packed_seq_params"].cu_seqlens_q.tolist()
    out = []
    for lo, hi in zip(cu[:-1], cu[1:]):
        if float(flat["loss_mask"][lo:hi].sum()) == 0:
            continue
        segment = {name: flat[name][lo:hi].numpy() for name in ("tokens", "labels", "loss_mask", "task_ids")}
        out.append(collate_packed([_item([segment], total, pad_id)]))
    return out


def make_trainer(arch, vocab: LiquidVocab, options: BuildOptions, *, seq: int, micro_batch_size: int,
                 run_dir: str, lr: float = 3e-4, seed: int = 1234) -> TrainModule:
    """The trainer's step (``TrainModule``: megatron DDP, optimizer, scheduler, the project's loss) on
    ``builder.build(arch, vocab, options)``, seeded so that two of the same architecture start from the same
    weights."""
    os.makedirs(run_dir, exist_ok=True)
    cfg = load_config(overrides=[
        f"run_dir={run_dir}", f"model.family={arch.family}", f"model.precision={options.precision}",
        f"model.attention_backend={options.attention_backend}", f"data.seq_length={seq}",
        f"train.global_batch_size={micro_batch_size}", f"train.micro_batch_size={micro_batch_size}",
        f"optimizer.lr={lr}", "optimizer.clip_grad=1.0", "schedule.style=constant", "checkpoint.save_at_end=false",
        "checkpoint.resume=false", "logging.wandb_mode=disabled", "logging.tensorboard=false",
        "logging.progress=false"])
    set_seed(seed)
    build = builder.build(arch, vocab, options)
    return TrainModule(cfg, ModelProvider(provider=build, vocab=vocab, arch=arch))


def unwrap(chunk):
    return chunk.module if hasattr(chunk, "module") else chunk


def main_grads(trainer: TrainModule) -> torch.Tensor:
    """All gradients of the trainer's model (megatron's fp32 ``main_grad`` buffers), concatenated."""
    return torch.cat([p.main_grad.detach().reshape(-1).float().clone() for chunk in trainer.model
                      for p in chunk.parameters() if p.requires_grad])


def zero_grads(trainer: TrainModule) -> None:
    for chunk in trainer.model:
        chunk.zero_grad_buffer()


def to_device(batch: Dict, device) -> Dict:
    """A collated micro-batch on ``device`` (tensors and the ``PackedSeqParams`` boundaries)."""
    out = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}
    params = batch["packed_seq_params"]
    cu = params.cu_seqlens_q.to(device)
    out["packed_seq_params"] = dataclasses.replace(params, cu_seqlens_q=cu, cu_seqlens_kv=cu)
    return out


def train_steps(ctx, trainer: TrainModule, batches: Sequence[Dict], budget_s: float,
                min_steps: int = 6) -> Dict[str, List[float]]:
    """Optimizer steps of the trainer, one micro-batch each, until the batches run out or, after ``min_steps``,
    ``budget_s`` has passed: the loss and the wall time (GPU-synchronised) of every step."""
    losses, seconds = [], []
    stop = time.monotonic() + budget_s
    for batch in batches:
        with timed(ctx) as t:
            summary = trainer.train_step([batch])
        losses.append(float(summary["loss"]))
        seconds.append(t["s"])
        if len(losses) >= min_steps and time.monotonic() > stop:
            break
    return {"losses": losses, "step_s": seconds}
