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
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch

from megatron.core.packed_seq_params import PackedSeqParams

from liquid_train.data import kernels
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


def check_footprints(footprints: np.ndarray, splittable: np.ndarray, seq_length: int, base: int = 0) -> None:
    """The packer's preconditions: whole samples fit a row, every sample has a position (``base``: the stream
    index of ``footprints[0]``, for the message)."""
    whole = footprints[~splittable]
    if whole.size and whole.max() > seq_length:
        bad = int(np.nonzero(~splittable)[0][np.argmax(whole)])
        raise ValueError(f"stream sample {base + bad} has footprint {footprints[bad]} > seq_length {seq_length}")
    if footprints.size and footprints.min() < 1:
        raise ValueError("stream samples must have a footprint of at least 1 token")


class StreamPacker:
    """The online packer of `build_pack_index`, fed the stream chunk by chunk (compiled: `kernels.pack_chunk`).

    `feed` returns the rows the chunk completed, as ``(row_lengths, sample, start, length)`` arrays (runs per row,
    then the runs in row order); the open rows carry over to the next chunk, so feeding a stream in any chunking
    gives the rows of one `build_pack_index` call. Memory: the open rows plus one output buffer.

    With ``tally_every`` > 0 it also counts, per block of that many emitted rows, the samples that begin there per
    source (``source_of``: the source of every stream sample fed so far, indexable by stream position) and the
    positions used: `tally` returns them (what the training report reads instead of scanning the rows)."""

    def __init__(self, seq_length: int, window: int = 8, buffer_runs: int = 1 << 22, tally_every: int = 0,
                 num_sources: int = 1):
        if window < 1:
            raise ValueError("pack window must be >= 1")
        self.seq_length, self.window = int(seq_length), int(window)
        self.num_samples = 0
        self._state = np.array([0, window, 0], dtype=np.int64)  # open rows, free slots, rows emitted
        self._order = np.zeros(window, dtype=np.int64)
        self._free = np.arange(window, dtype=np.int64)[::-1].copy()
        self._room = np.zeros(window, dtype=np.int64)
        self._count = np.zeros(window, dtype=np.int64)
        self._runs = np.zeros((window, self.seq_length, 3), dtype=np.int64)
        self._capacity = max(int(buffer_runs), 8 * self.seq_length)
        self._every = int(tally_every)
        self._begun = np.zeros((1, num_sources), dtype=np.int64)
        self._used = np.zeros(1, dtype=np.int64)

    @property
    def num_rows(self) -> int:
        return int(self._state[2])

    def _buffers(self, capacity: int):
        return (np.empty(capacity, np.int64), np.empty(capacity, np.int32), np.empty(capacity, np.int32),
                np.empty(capacity, np.int64), np.zeros(2, np.int64))

    def _tally(self, source_of: Optional[np.ndarray], rows_ahead: int):
        if self._every <= 0:
            return (np.zeros(1, np.int16), self._begun, self._used, 0)
        need = (self.num_rows + rows_ahead) // self._every + 1
        if need > len(self._used):
            grow = max(need, 2 * len(self._used)) - len(self._used)
            self._begun = np.concatenate([self._begun, np.zeros((grow, self._begun.shape[1]), np.int64)])
            self._used = np.concatenate([self._used, np.zeros(grow, np.int64)])
        return (source_of, self._begun, self._used, self._every)

    @staticmethod
    def _take(buffers):
        sample, start, length, rows, cursor = buffers
        r, k = int(cursor[0]), int(cursor[1])
        return rows[:k], sample[:r], start[:r], length[:r]

    def feed(self, footprints: np.ndarray, splittable: np.ndarray, source_of: Optional[np.ndarray] = None):
        footprints = np.ascontiguousarray(footprints, dtype=np.int64)
        splittable = np.ascontiguousarray(splittable, dtype=np.bool_)
        check_footprints(footprints, splittable, self.seq_length, self.num_samples)
        worst = int(footprints.max(initial=0)) // self.seq_length + 3
        # enough for the whole chunk in one call: a run ends its sample or fills its row
        need = len(footprints) + int(footprints.sum()) // self.seq_length + worst * self.seq_length + 1
        capacity = max(min(self._capacity, need), 2 * worst * self.seq_length)
        parts, done = [], 0
        while done < len(footprints) or not parts:
            buffers = self._buffers(capacity)
            done += kernels.pack_chunk(footprints[done:], splittable[done:], self.num_samples + done,
                                       self.seq_length, self.window, self._state, self._order, self._free,
                                       self._room, self._count, self._runs, buffers,
                                       self._tally(source_of, capacity))
            parts.append(self._take(buffers))
        self.num_samples += len(footprints)
        if len(parts) == 1:
            return parts[0]
        return tuple(np.concatenate(column) for column in zip(*parts))

    def flush(self, source_of: Optional[np.ndarray] = None):
        """Emit the rows still open (oldest first); the packer is then empty."""
        buffers = self._buffers(max(1, int(self._count.sum())))
        kernels.flush_open(self._state, self._order, self._count, self._runs, buffers,
                           self._tally(source_of, self.window))
        self._free = np.arange(self.window, dtype=np.int64)[::-1].copy()
        self._state[1] = self.window
        return self._take(buffers)

    def tally(self) -> Tuple[np.ndarray, np.ndarray]:
        """Cumulative ``(begun[b, source], used[b])`` over the rows before row ``b * tally_every``, for every
        ``b`` up to the block of the last row emitted (inclusive of its end)."""
        blocks = self.num_rows // self._every + 1
        begun = np.zeros((blocks + 1, self._begun.shape[1]), dtype=np.int64)
        np.cumsum(self._begun[:blocks], axis=0, out=begun[1:])
        used = np.zeros(blocks + 1, dtype=np.int64)
        np.cumsum(self._used[:blocks], out=used[1:])
        return begun, used


def build_pack_index(footprints: np.ndarray, seq_length: int, window: int = 8, flush: bool = False,
                     splittable: Optional[np.ndarray] = None) -> PackIndex:
    """Pack stream samples with the given footprints (positions each) into ``seq_length`` rows.

    Whole samples go best-fit into the open rows (a new row when none fits; when the window is full the fullest
    open row is emitted first). Splittable samples (text windows) are poured, in stream order, into the oldest open
    row, as many positions as it has room for, then the next one; that fills the gap an image sample leaves with
    the text that comes next in the stream. ``flush=False`` drops the rows still open at the end of the stream
    (prefix stability for training); ``flush=True`` emits them too (finite validation sets).

    Compiled (`StreamPacker`); identical to `liquid_train.data.reference.build_pack_index`."""
    footprints = np.asarray(footprints, dtype=np.int64)
    split = np.zeros(len(footprints), dtype=bool) if splittable is None else np.asarray(splittable, dtype=bool)
    packer = StreamPacker(seq_length, window)
    parts = [packer.feed(footprints, split)]
    if flush:
        parts.append(packer.flush())
    rows, sample, start, length = (np.concatenate(column) for column in zip(*parts))
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(rows, out=offsets[1:])
    return PackIndex(offsets, sample, start, length)


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
