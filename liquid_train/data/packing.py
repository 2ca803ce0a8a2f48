"""Packing the sample stream into ``seq_length`` sequences, and the batch layout the trainer consumes.

The pack index is a pure function of the stream's footprints and of which samples are splittable: an online packer
with a bounded window of open sequences (``pack_window``). Image-text samples are never split: each goes into the
open sequence with the least room that still fits it; when none fits and the window is full, the fullest open
sequence is emitted. Text windows (``text_sample: window``) are a token stream and are poured into the oldest open
sequence, so the ~970 positions a 1024-code image leaves free at seq_length 2048 are filled by the text that comes
next. The index is stored CSR-style, as megatron stores its sample index (`PackIndex`), so sequence ``k`` is found
without replaying the stream (resume is O(1)).

The packer is online, so the first emitted sequences do not depend on how long the stream is: a longer stream only
appends sequences (the open ones at the end of a training stream are dropped, not flushed, to keep that property).

Batch layout (all ``[b, s]`` unless noted):
``tokens``, ``labels`` (int64), ``loss_mask`` (float32), ``position_ids`` (restart at 0 for every segment:
a sample, a document, or a text run that does not continue the run before it),
``task_ids`` (TASK_* per position, TASK_PAD on padding), ``segment_ids`` (sample number within the row, padding is
its own last segment), and ``packed_seq_params``: megatron's ``PackedSeqParams`` (``qkv_format="thd"``) over the
micro-batch's rows laid end to end, with ``cu_seqlens`` at every segment boundary (see `collate_packed`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from megatron.core.packed_seq_params import PackedSeqParams

from liquid_train.vocab import TASK_PAD


@dataclass
class PackIndex:
    """Packed sequence ``k`` is the runs ``offsets[k] <= r < offsets[k+1]``: positions
    ``[start[r], start[r] + length[r])`` of stream sample ``sample[r]``, in row order. A sample that is not
    splittable is one run (start 0, its whole footprint)."""
    offsets: np.ndarray
    sample: np.ndarray
    start: np.ndarray
    length: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def runs(self, k: int):
        lo, hi = int(self.offsets[k]), int(self.offsets[k + 1])
        return zip(self.sample[lo:hi].tolist(), self.start[lo:hi].tolist(), self.length[lo:hi].tolist())

    def arrays(self) -> Dict[str, np.ndarray]:
        return {"offsets": self.offsets, "sample": self.sample, "start": self.start, "length": self.length}


def build_pack_index(footprints: np.ndarray, seq_length: int, window: int = 8, flush: bool = False,
                     splittable: Optional[np.ndarray] = None) -> PackIndex:
    """Pack stream samples with the given footprints (positions each) into ``seq_length`` rows.

    Whole samples go best-fit into the open rows (a new row when none fits; when the window is full the fullest
    open row is emitted first). Splittable samples (text windows) are poured, in stream order, into the oldest open
    row, as many positions as it has room for, then the next one; that fills the gap an image sample leaves with
    the text that comes next in the stream. ``flush=False`` drops the rows still open at the end of the stream
    (prefix stability for training); ``flush=True`` emits them too (finite validation sets)."""
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


class PackedDataset(torch.utils.data.Dataset):
    """Packed sequence ``k`` -> fixed-size ``[s]`` tensors (see the module docstring for the fields).

    ``stream`` is any object with ``positions(i, start, stop) -> Positions`` (a task dataset or a `MixtureStream`).
    """

    def __init__(self, stream, index: PackIndex, seq_length: int, pad_id: int, footprints: np.ndarray,
                 stream_tasks: np.ndarray, name: str = "train"):
        self.stream = stream
        self.index = index
        self.seq_length = int(seq_length)
        self.pad_id = int(pad_id)
        self.name = name
        self.stream_footprints = footprints
        self.stream_tasks = stream_tasks

    def __len__(self) -> int:
        return len(self.index)

    def stream_indices(self, k: int) -> np.ndarray:
        """Stream samples (wholly or in part) in packed sequence ``k``, in row order."""
        return self.index.sample[self.index.offsets[k]:self.index.offsets[k + 1]]

    def __getitem__(self, k: int) -> Dict[str, torch.Tensor]:
        if not 0 <= k < len(self):
            raise IndexError(f"packed sequence {k} out of range [0, {len(self)})")
        s = self.seq_length
        tokens = np.full(s, self.pad_id, dtype=np.int64)
        labels = np.full(s, self.pad_id, dtype=np.int64)
        loss_mask = np.zeros(s, dtype=np.float32)
        task_ids = np.full(s, TASK_PAD, dtype=np.int64)
        starts = np.zeros(s, dtype=bool)
        pos = 0
        previous_end = None  # where the previous run of this row ended in the text stream (text runs only)
        for i, start, length in self.index.runs(k):
            run = self.stream.positions(i, start, start + length)
            n = len(run)
            tokens[pos:pos + n] = run.inputs
            labels[pos:pos + n] = run.labels
            loss_mask[pos:pos + n] = run.loss_mask
            task_ids[pos:pos + n] = run.task
            starts[pos:pos + n] = run.segment_starts
            # a run that continues the previous one's text stream stays in its segment (no attention cut)
            continues = run.stream_span is not None and run.stream_span[0] == previous_end
            starts[pos] = starts[pos] or not continues
            previous_end = run.stream_span[1] if run.stream_span is not None else None
            pos += n
        starts[pos:pos + 1] = True  # padding is its own last segment
        begin = np.flatnonzero(starts)
        segment_ids = np.cumsum(starts) - 1
        position_ids = np.arange(s) - begin[segment_ids]
        seg_lengths = np.diff(np.append(begin, s))
        return {
            "tokens": torch.from_numpy(tokens),
            "labels": torch.from_numpy(labels),
            "loss_mask": torch.from_numpy(loss_mask),
            "position_ids": torch.from_numpy(position_ids),
            "task_ids": torch.from_numpy(task_ids),
            "segment_ids": torch.from_numpy(segment_ids),
            "seq_lengths": torch.from_numpy(seg_lengths.astype(np.int32)),
        }

    # --- reporting ----------------------------------------------------------------------------------------------
    def packing_efficiency(self, start: int = 0, stop: int = None) -> float:
        """Useful (sample) positions / all positions over packed sequences [start, stop)."""
        stop = len(self) if stop is None else stop
        if stop <= start:
            return float("nan")
        used = self.index.length[self.index.offsets[start]:self.index.offsets[stop]].sum(dtype=np.int64)
        return float(used) / float((stop - start) * self.seq_length)

    def task_counts(self, num_sequences: int) -> np.ndarray:
        """Samples per task (indexed by TASK_*) begun in the first ``num_sequences`` packed sequences."""
        end = self.index.offsets[min(num_sequences, len(self))]
        begun = self.index.sample[:end][self.index.start[:end] == 0]
        return np.bincount(self.stream_tasks[begun], minlength=3)


def collate_packed(items: Sequence[Dict[str, torch.Tensor]]) -> Dict[str, object]:
    """Stack packed sequences into a micro-batch (``[b, s]`` fields) and describe its attention segments as
    megatron's ``PackedSeqParams`` (THD): the ``b`` rows laid end to end are one stream of ``b * s`` positions whose
    ``cu_seqlens`` mark every segment (padding included), ``max_seqlen`` the longest. That object is what TE's fused
    attention and the project's local/flex core attention consume; no ``[s, s]`` mask is ever built. Lengths are
    known here on the host, so ``max_seqlen`` costs the trainer no device sync."""
    keys = ("tokens", "labels", "loss_mask", "position_ids", "task_ids", "segment_ids")
    batch: Dict[str, object] = {key: torch.stack([item[key] for item in items]) for key in keys}
    lengths = torch.cat([item["seq_lengths"] for item in items])
    cu_seqlens = torch.zeros(len(lengths) + 1, dtype=torch.int32)
    torch.cumsum(lengths, 0, dtype=torch.int32, out=cu_seqlens[1:])
    max_seqlen = int(lengths.max())
    batch["packed_seq_params"] = PackedSeqParams(qkv_format="thd", cu_seqlens_q=cu_seqlens, cu_seqlens_kv=cu_seqlens,
                                                 max_seqlen_q=max_seqlen, max_seqlen_kv=max_seqlen)
    return batch
