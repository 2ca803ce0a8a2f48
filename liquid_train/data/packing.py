"""Packing whole samples into ``seq_length`` sequences, and the batch layout the trainer consumes.

The pack index is a pure function of the sample stream's footprints: an online best-fit packer with a bounded window
of open sequences (``pack_window``). A sample goes into the open sequence with the least room that still fits it;
when none fits and the window is full, the fullest open sequence is emitted. Samples are never split. The index is
stored CSR-style, as megatron stores its sample index: packed sequence ``k`` holds stream samples
``order[offsets[k]:offsets[k+1]]``, so sequence ``k`` is found without replaying the stream (resume is O(1)).

The packer is online, so the first emitted sequences do not depend on how long the stream is: a longer stream only
appends sequences (the open ones at the end of a training stream are dropped, not flushed, to keep that property).

Batch layout (all ``[b, s]`` unless noted):
``tokens``, ``labels`` (int64), ``loss_mask`` (float32), ``position_ids`` (restart at 0 for every sample),
``task_ids`` (TASK_* per position, TASK_PAD on padding), ``segment_ids`` (sample number within the row, padding is
its own last segment), ``attention_mask`` ``[b, 1, s, s]`` bool (True = masked: block-diagonal causal; padding
attends causally to padding only, so no softmax row is empty), ``cu_seqlens`` ``[b, max_segments + 1]`` int32
(per-row cumulative segment lengths, padding segment included, right-padded with -1), ``max_seqlen`` ``[b]`` int32.
`flat_packed_seq_params` turns a batch's cu_seqlens into the single THD ``cu_seqlens`` TE's ``PackedSeqParams`` takes.
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch

from liquid_train.vocab import TASK_PAD


def build_pack_index(footprints: np.ndarray, seq_length: int, window: int = 8,
                     flush: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    """Pack stream samples with the given footprints; returns ``(offsets[int64, n+1], order[int64])``.

    ``flush=False`` drops the sequences still open at the end of the stream (prefix stability for training);
    ``flush=True`` emits them too (finite validation sets)."""
    footprints = np.asarray(footprints, dtype=np.int64)
    if footprints.size and footprints.max() > seq_length:
        bad = int(np.argmax(footprints))
        raise ValueError(f"stream sample {bad} has footprint {footprints[bad]} > seq_length {seq_length}")
    if footprints.size and footprints.min() < 1:
        raise ValueError("stream samples must have a footprint of at least 1 token")
    room: List[int] = []
    members: List[List[int]] = []
    emitted: List[List[int]] = []
    for i, f in enumerate(footprints.tolist()):
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
            room.append(seq_length - f)
            members.append([i])
        else:
            room[best] -= f
            members[best].append(i)
            if room[best] == 0:
                emitted.append(members.pop(best))
                room.pop(best)
    if flush:
        emitted.extend(members)
    offsets = np.zeros(len(emitted) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(m) for m in emitted])
    order = np.fromiter((i for m in emitted for i in m), dtype=np.int64, count=int(offsets[-1]))
    return offsets, order


class PackedDataset(torch.utils.data.Dataset):
    """Packed sequence ``k`` -> fixed-size ``[s]`` tensors (see the module docstring for the fields).

    ``stream`` is any object with ``sample(i) -> Sample`` (a task dataset or a `MixtureStream`)."""

    def __init__(self, stream, offsets: np.ndarray, order: np.ndarray, seq_length: int, pad_id: int,
                 footprints: np.ndarray, stream_tasks: np.ndarray, name: str = "train"):
        self.stream = stream
        self.offsets = offsets
        self.order = order
        self.seq_length = int(seq_length)
        self.pad_id = int(pad_id)
        self.name = name
        self.stream_footprints = footprints
        self.stream_tasks = stream_tasks

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def stream_indices(self, k: int) -> np.ndarray:
        return self.order[self.offsets[k]:self.offsets[k + 1]]

    def __getitem__(self, k: int) -> Dict[str, torch.Tensor]:
        if not 0 <= k < len(self):
            raise IndexError(f"packed sequence {k} out of range [0, {len(self)})")
        s = self.seq_length
        tokens = np.full(s, self.pad_id, dtype=np.int64)
        labels = np.full(s, self.pad_id, dtype=np.int64)
        loss_mask = np.zeros(s, dtype=np.float32)
        position_ids = np.zeros(s, dtype=np.int64)
        task_ids = np.full(s, TASK_PAD, dtype=np.int64)
        segment_ids = np.zeros(s, dtype=np.int64)
        seg_lengths = []
        pos = 0
        for seg, i in enumerate(self.stream_indices(k).tolist()):
            sample = self.stream.sample(i)
            n = len(sample.tokens) - 1
            tokens[pos:pos + n] = sample.tokens[:-1]
            labels[pos:pos + n] = sample.tokens[1:]
            loss_mask[pos:pos + n] = sample.target[1:]
            position_ids[pos:pos + n] = np.arange(n)
            task_ids[pos:pos + n] = sample.task
            segment_ids[pos:pos + n] = seg
            seg_lengths.append(n)
            pos += n
        if pos < s:
            position_ids[pos:] = np.arange(s - pos)
            segment_ids[pos:] = len(seg_lengths)
            seg_lengths.append(s - pos)
        return {
            "tokens": torch.from_numpy(tokens),
            "labels": torch.from_numpy(labels),
            "loss_mask": torch.from_numpy(loss_mask),
            "position_ids": torch.from_numpy(position_ids),
            "task_ids": torch.from_numpy(task_ids),
            "segment_ids": torch.from_numpy(segment_ids),
            "seq_lengths": torch.tensor(seg_lengths, dtype=torch.int32),
        }

    # --- reporting ----------------------------------------------------------------------------------------------
    def packing_efficiency(self, start: int = 0, stop: int = None) -> float:
        """Useful (sample) positions / all positions over packed sequences [start, stop)."""
        stop = len(self) if stop is None else stop
        if stop <= start:
            return float("nan")
        used = self.stream_footprints[self.order[self.offsets[start]:self.offsets[stop]]].sum()
        return float(used) / float((stop - start) * self.seq_length)

    def task_counts(self, num_sequences: int) -> np.ndarray:
        """Samples per task (indexed by TASK_*) in the first ``num_sequences`` packed sequences."""
        taken = self.order[:self.offsets[min(num_sequences, len(self))]]
        return np.bincount(self.stream_tasks[taken], minlength=3)


def block_causal_mask(segment_ids: torch.Tensor) -> torch.Tensor:
    """``[b, s]`` segment ids -> ``[b, 1, s, s]`` bool mask, True = masked (other segment, or the future)."""
    s = segment_ids.shape[-1]
    future = torch.triu(torch.ones(s, s, dtype=torch.bool), diagonal=1)
    other = segment_ids[:, :, None] != segment_ids[:, None, :]
    return (other | future).unsqueeze(1)


def collate_packed(items: Sequence[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
    """Stack packed sequences into a micro-batch and add ``attention_mask``, ``cu_seqlens``, ``max_seqlen``."""
    keys = ("tokens", "labels", "loss_mask", "position_ids", "task_ids", "segment_ids")
    batch = {key: torch.stack([item[key] for item in items]) for key in keys}
    batch["attention_mask"] = block_causal_mask(batch["segment_ids"])
    width = max(len(item["seq_lengths"]) for item in items) + 1
    cu = torch.full((len(items), width), -1, dtype=torch.int32)
    for row, item in enumerate(items):
        lengths = item["seq_lengths"]
        cu[row, 0] = 0
        cu[row, 1:len(lengths) + 1] = torch.cumsum(lengths, 0, dtype=torch.int32)
    batch["cu_seqlens"] = cu
    batch["max_seqlen"] = torch.stack([item["seq_lengths"].max() for item in items]).to(torch.int32)
    return batch


def flat_packed_seq_params(batch: Dict[str, torch.Tensor]) -> Tuple[torch.Tensor, int]:
    """The whole micro-batch as one THD stream: (cu_seqlens int32 [n+1], max_seqlen) for TE's PackedSeqParams."""
    b, s = batch["tokens"].shape
    parts = [torch.zeros(1, dtype=torch.int32)]
    for row in range(b):
        cu = batch["cu_seqlens"][row]
        cu = cu[cu >= 0]
        parts.append(cu[1:] + row * s)
    return torch.cat(parts).to(torch.int32), int(batch["max_seqlen"].max())
