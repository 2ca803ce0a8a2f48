"""Per-task datasets over the ``pairs`` / ``text`` megatron `IndexedDataset`s.

A task dataset maps a sample index ``i`` (0, 1, 2, ... over as many epochs as the mixture asks for) to one templated
sample. Pairs: the units are documents; epoch ``e = i // num_units`` visits them in a permutation seeded by
(seed, task, e), so a task that runs out repeats with a new order. Text, ``text_sample="window"``: epoch ``e`` lays
the documents (``[bos] doc [eos]``) end to end in its own seeded order, the epochs follow each other as one endless
position stream, and sample ``i`` is positions ``[i*W, (i+1)*W)`` of it (W = ``text_chunk_length``), the way
megatron's GPTDataset cuts its samples; a window is *splittable*: the packer may cut it to fill the gap next to an
image. Text, ``text_sample="document"``: the units are document pieces of at most W positions, packed whole. Either
way a sample is a pure function of (seed, task, i).

The class looks like a megatron ``MegatronDataset`` to `BlendedDataset` (``unique_identifiers``, ``index_split``,
``__len__``, ``__getitem__``), which is all BlendedDataset uses.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from typing import Dict, Tuple

import numpy as np
import torch

from liquid_train.data.templates import LiquidTemplates, Positions, Sample
from liquid_train.vocab import TASK_NAMES, TASK_T2I, TASK_TEXT


def open_indexed_dataset(prefix: str, kind: str):
    """Open ``<prefix>.bin/.idx`` with megatron's reader; one clear error when missing or of the wrong layout."""
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    if not (os.path.exists(prefix + ".idx") and os.path.exists(prefix + ".bin")):
        raise FileNotFoundError(
            f"{prefix}.bin/.idx: {kind} indexed dataset not found; build it with `python -m data_pipeline build` "
            f"and set DataConfig.{kind}_path to its prefix"
        )
    dataset = IndexedDataset(prefix, multimodal=False, mmap=True)
    docs = np.asarray(dataset.document_indices)
    per_doc = np.diff(docs)
    expected = 2 if kind == "pairs" else 1
    if len(per_doc) == 0:
        raise ValueError(f"{prefix}: the {kind} dataset holds no documents")
    if not np.all(per_doc == expected):
        bad = int(np.nonzero(per_doc != expected)[0][0])
        raise ValueError(
            f"{prefix}: document {bad} has {per_doc[bad]} sequences; a {kind} dataset needs exactly {expected} per "
            f"document (see docs/data_format.md)"
        )
    return dataset


def split_documents(num_documents: int, valid_fraction: float) -> Dict[str, Tuple[int, int]]:
    """Contiguous document ranges: train first, the last ``valid_fraction`` (>= 1 doc when > 0) for validation."""
    num_valid = 0 if valid_fraction <= 0 else max(1, int(round(num_documents * valid_fraction)))
    if num_valid >= num_documents:
        raise ValueError(f"valid_fraction={valid_fraction} leaves no training documents out of {num_documents}")
    return {"train": (0, num_documents - num_valid), "valid": (num_documents - num_valid, num_documents)}


class _EpochPermutations:
    """Seeded permutation of the units for each epoch (small LRU; epochs are visited nearly in order)."""

    def __init__(self, num_units: int, seed: int, task: int, shuffle: bool):
        self.num_units, self.seed, self.task, self.shuffle = num_units, seed, task, shuffle
        self._cache: "OrderedDict[int, np.ndarray]" = OrderedDict()

    def __call__(self, epoch: int) -> np.ndarray:
        perm = self._cache.get(epoch)
        if perm is None:
            if self.shuffle:
                perm = np.random.default_rng([self.seed, self.task, epoch, 0x51]).permutation(self.num_units)
            else:
                perm = np.arange(self.num_units)
            self._cache[epoch] = perm
            if len(self._cache) > 4:
                self._cache.popitem(last=False)
        return perm

    def units(self, indices: np.ndarray) -> np.ndarray:
        indices = np.asarray(indices, dtype=np.int64)
        epochs, positions = np.divmod(indices, self.num_units)
        out = np.empty_like(indices)
        for epoch in np.unique(epochs):
            sel = epochs == epoch
            out[sel] = self(int(epoch))[positions[sel]]
        return out


class LiquidTaskDataset(torch.utils.data.Dataset):
    """One task (text / t2i / i2t) of one split, ``num_samples`` long (wrapping into new epochs)."""

    def __init__(self, task: int, indexed, prefix: str, templates: LiquidTemplates, doc_range: Tuple[int, int],
                 num_samples: int, split: str = "train", shuffle: bool = True, text_chunk_length: int = None,
                 text_sample: str = "window"):
        from megatron.core.datasets.utils import Split

        self.task = task
        self.indexed = indexed
        self.templates = templates
        self.num_samples = int(num_samples)
        self.index_split = Split.train if split == "train" else Split.valid
        seq_lengths = np.asarray(indexed.sequence_lengths, dtype=np.int64)
        docs = np.asarray(indexed.document_indices, dtype=np.int64)
        start, end = doc_range
        first_seq = docs[start:end]
        self.splittable = task == TASK_TEXT and text_sample == "window"
        self.wraps = split == "train"  # validation visits one epoch; its last window may be shorter
        if self.splittable:
            self.window = int(text_chunk_length or templates.seq_length)
            self._build_text_stream(first_seq, seq_lengths[first_seq])
        elif task == TASK_TEXT:
            chunk = min(text_chunk_length or templates.seq_length, templates.seq_length)
            self._build_text_units(first_seq, seq_lengths[first_seq], chunk)
        else:
            self.unit_caption_seq = first_seq
            self.unit_caption_len = seq_lengths[first_seq]
            self.unit_image_len = seq_lengths[first_seq + 1]
            if len(first_seq):
                templates.check_image_fits(int(self.unit_image_len.max()), where=f"{prefix} ({TASK_NAMES[task]})")
        if self.splittable:
            self.num_units = -(-self.epoch_positions // self.window)  # windows per epoch (the last may straddle)
            num_permuted = len(first_seq)
        else:
            self.num_units = len(self.unit_footprint_base) if task == TASK_TEXT else len(first_seq)
            num_permuted = self.num_units
        if len(first_seq) == 0:
            raise ValueError(f"{prefix}: no {split} documents for task {TASK_NAMES[task]}")
        self.permutations = _EpochPermutations(num_permuted, templates.seed, task, shuffle)
        self._epoch_starts: "OrderedDict[int, np.ndarray]" = OrderedDict()
        self.unique_identifiers = OrderedDict(
            [("class", type(self).__name__), ("task", TASK_NAMES[task]), ("path", prefix), ("split", split),
             ("doc_range", list(doc_range)), ("num_samples", self.num_samples), ("shuffle", shuffle),
             ("seed", templates.seed), ("seq_length", templates.seq_length),
             ("text_chunk_length", text_chunk_length), ("text_sample", text_sample if task == TASK_TEXT else None)]
        )

    def _build_text_stream(self, seqs: np.ndarray, lengths: np.ndarray) -> None:
        self.doc_seq = seqs
        self.doc_length = lengths
        self.doc_positions = lengths + 1  # [bos] doc -> doc [eos]
        self.epoch_positions = int(self.doc_positions.sum())

    def _build_text_units(self, seqs: np.ndarray, lengths: np.ndarray, seq_length: int) -> None:
        stream = lengths + 1  # document + [eos]
        pieces = (stream + seq_length - 1) // seq_length
        owner = np.repeat(np.arange(len(seqs)), pieces)
        first_piece = np.repeat(np.cumsum(pieces) - pieces, pieces)
        piece_no = np.arange(len(owner)) - first_piece
        self.unit_seq = seqs[owner]
        self.unit_offset = piece_no * seq_length
        piece_len = np.minimum(seq_length, stream[owner] - self.unit_offset)  # footprint = len([bos]+piece) - 1
        self.unit_ends = self.unit_offset + piece_len == stream[owner]
        self.unit_read_len = piece_len - self.unit_ends
        self.unit_footprint_base = piece_len

    # --- megatron-dataset surface ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> Dict[str, np.ndarray]:
        if self.splittable:
            run = self.positions(index)
            return {"inputs": run.inputs, "labels": run.labels}
        sample = self.sample(index)
        return {"tokens": sample.tokens, "target": sample.target}

    # --- ours ---------------------------------------------------------------------------------------------------
    def epochs(self, num_taken: float) -> float:
        """Epochs over this task's data after ``num_taken`` samples."""
        if self.splittable:
            return num_taken * self.window / self.epoch_positions
        return num_taken / self.num_units

    def footprints(self, indices) -> np.ndarray:
        """Packed-sequence positions of samples ``indices`` (vectorised; reads no tokens)."""
        indices = np.asarray(indices, dtype=np.int64)
        if self.splittable:
            if self.wraps:
                return np.full(indices.shape, self.window, dtype=np.int64)
            return np.clip(self.epoch_positions - indices * self.window, 0, self.window)
        units = self.permutations.units(indices)
        if self.task == TASK_TEXT:
            return self.unit_footprint_base[units]
        if self.task == TASK_T2I:
            return self.templates.t2i_footprints(indices, self.unit_caption_len[units], self.unit_image_len[units])
        return self.templates.i2t_footprints(self.unit_caption_len[units], self.unit_image_len[units])

    def positions(self, index: int, start: int = 0, stop: int = None) -> Positions:
        """Packed positions ``[start, stop)`` of sample ``index`` (reads only the tokens they need)."""
        if not self.splittable:
            return self.sample(index).positions(start, stop)
        stop = int(self.footprints([index])[0]) if stop is None else stop
        begin = index * self.window + start
        return self._text_stream_positions(begin, begin + (stop - start))

    def _epoch_document_starts(self, epoch: int) -> np.ndarray:
        """Stream offsets (within the epoch) at which each document of epoch ``epoch``'s order begins."""
        starts = self._epoch_starts.get(epoch)
        if starts is None:
            starts = np.zeros(len(self.doc_seq) + 1, dtype=np.int64)
            np.cumsum(self.doc_positions[self.permutations(epoch)], out=starts[1:])
            self._epoch_starts[epoch] = starts
            if len(self._epoch_starts) > 4:
                self._epoch_starts.popitem(last=False)
        return starts

    def _text_stream_positions(self, begin: int, end: int) -> Positions:
        """Positions ``[begin, end)`` of the endless text stream; a segment starts at every document start."""
        inputs, labels, seg_starts = [], [], []
        at = begin
        while at < end:
            epoch, offset = divmod(at, self.epoch_positions)
            starts = self._epoch_document_starts(epoch)
            k = int(np.searchsorted(starts, offset, side="right")) - 1
            doc = int(self.permutations(epoch)[k])
            a = offset - int(starts[k])
            b = min(int(self.doc_positions[doc]), a + (end - at))
            length = int(self.doc_length[doc])
            first = max(a - 1, 0)
            count = min(b, length) - first
            tokens = self.indexed.get(int(self.doc_seq[doc]), first, count) if count > 0 else np.empty(0, np.int64)
            x, y = self.templates.text_document_positions(tokens, length, first, a, b)
            inputs.append(x)
            labels.append(y)
            flags = np.zeros(b - a, dtype=bool)
            flags[0] = a == 0
            seg_starts.append(flags)
            at += b - a
        seg = np.concatenate(seg_starts)
        return Positions(TASK_TEXT, np.concatenate(inputs), np.concatenate(labels), np.ones(len(seg), np.float32),
                         seg, (begin, end))

    def sample(self, index: int) -> Sample:
        if self.splittable:
            raise TypeError("a text window is not a single templated sample; use positions(index)")
        unit = int(self.permutations.units(np.array([index]))[0])
        if self.task == TASK_TEXT:
            piece = self.indexed.get(int(self.unit_seq[unit]), int(self.unit_offset[unit]),
                                     int(self.unit_read_len[unit]))
            return self.templates.text(piece, bool(self.unit_ends[unit]))
        seq = int(self.unit_caption_seq[unit])
        caption, codes = self.indexed.get(seq), self.indexed.get(seq + 1)
        if self.task == TASK_T2I:
            return self.templates.t2i(index, caption, codes)
        return self.templates.i2t(index, caption, codes)
