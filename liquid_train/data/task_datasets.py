"""Per-task datasets over the ``pairs`` / ``text`` megatron `IndexedDataset`s.

A task dataset maps a sample index ``i`` (0, 1, 2, ... over as many epochs as the mixture asks for) to one templated
sample. Pairs: the units are documents; epoch ``e = i // num_units`` visits them in a permutation seeded by
(seed, task, e), so a task that runs out repeats with a new order. Text, ``text_sample="window"``: epoch ``e`` lays
the documents (``[bos] doc [eos]``) end to end in its own seeded order, the epochs follow each other as one endless
position stream, and sample ``i`` is positions ``[i*W, (i+1)*W)`` of it (W = ``text_chunk_length``), the way
megatron's GPTDataset cuts its samples; a window is *splittable*: the packer may cut it to fill the gap next to an
image. Text, ``text_sample="document"``: the units are document pieces of at most W positions, packed whole. Either
way a sample is a pure function of (seed, task, i).

The class looks like a megatron ``MegatronDataset`` (``unique_identifiers``, ``index_split``, ``__len__``,
``__getitem__``).

Memory: the indexed dataset's arrays stay memory-mapped views; what is derived from all documents (lengths per unit,
epoch permutations, the document starts of a text epoch, the pieces of document mode) is computed only when asked
for, which only the index builder does. A rank that trains gets those tables from the built index (``tables``, see
`liquid_train.data.index`), memory-mapped read-only, so it holds no per-document array of its own.
"""
from __future__ import annotations

import functools
import os
from collections import OrderedDict
from typing import Dict, Optional, Tuple

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


def _compact(array: np.ndarray) -> np.ndarray:
    """int32 when the values allow (permutations, sequence numbers): half the memory, the same values."""
    if array.size and array.max(initial=0) < np.iinfo(np.int32).max and array.min(initial=0) >= 0:
        return array.astype(np.int32)
    return array


class _EpochPermutations:
    """Seeded permutation of the units for each epoch (small LRU; epochs are visited nearly in order), or the one
    stored in the built index (``tables``: ``perm-e<epoch>``, memory-mapped)."""

    def __init__(self, num_units: int, seed: int, task: int, shuffle: bool, tables=None):
        self.num_units, self.seed, self.task, self.shuffle = num_units, seed, task, shuffle
        self.tables = tables
        self._cache: "OrderedDict[int, np.ndarray]" = OrderedDict()

    def compute(self, epoch: int) -> np.ndarray:
        if self.shuffle:
            return _compact(np.random.default_rng([self.seed, self.task, epoch, 0x51]).permutation(self.num_units))
        return np.arange(self.num_units)

    def __call__(self, epoch: int) -> np.ndarray:
        perm = self._cache.get(epoch)
        if perm is None:
            stored = self.tables.array(f"perm-e{epoch}") if self.tables is not None else None
            perm = stored if stored is not None else self.compute(epoch)
            self._cache[epoch] = perm
            if len(self._cache) > 2:
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
    """One task (text / t2i / i2t) of one split of one source, ``num_samples`` long (wrapping into new epochs).

    ``tables`` (optional): the source's tables in a built index (an object with ``array(name)`` and
    ``value(name)``, None for what it lacks); without them every table is computed from the documents."""

    def __init__(self, task: int, indexed, prefix: str, templates: LiquidTemplates, doc_range: Tuple[int, int],
                 num_samples: int, split: str = "train", shuffle: bool = True, text_chunk_length: int = None,
                 text_sample: str = "window", tables=None, name: str = None):
        from megatron.core.datasets.utils import Split

        self.task = task
        self.indexed = indexed
        self.templates = templates
        self.tables = tables
        self.name = name or os.path.basename(prefix)
        self.num_samples = int(num_samples)
        self.index_split = Split.train if split == "train" else Split.valid
        self._seq_lengths = np.asarray(indexed.sequence_lengths)  # int32 view of the mapped .idx
        docs = np.asarray(indexed.document_indices)
        start, end = doc_range
        first_seq = docs[start:end]  # a view: the first sequence of each document
        if len(first_seq) == 0:
            raise ValueError(f"{prefix}: no {split} documents for task {TASK_NAMES[task]}")
        self.splittable = task == TASK_TEXT and text_sample == "window"
        self.wraps = split == "train"  # validation visits one epoch; its last window may be shorter
        if self.splittable:
            self.window = int(text_chunk_length or templates.seq_length)
            self.doc_seq = first_seq
            stored = tables.value("epoch_positions") if tables is not None else None
            self.epoch_positions = int(stored) if stored is not None else int(self.doc_positions.sum())
            self.num_units = -(-self.epoch_positions // self.window)  # windows per epoch (the last may straddle)
            num_permuted = len(first_seq)
        elif task == TASK_TEXT:
            self._piece_length = min(text_chunk_length or templates.seq_length, templates.seq_length)
            self._first_seq = first_seq
            self._units: Optional[Dict[str, np.ndarray]] = None
            stored = tables.value("num_units") if tables is not None else None
            self.num_units = int(stored) if stored is not None else len(self.unit_seq)
            num_permuted = self.num_units
        else:
            self.unit_caption_seq = first_seq
            self.num_units = num_permuted = len(first_seq)
            if tables is None:  # a built index was checked when it was built
                templates.check_image_fits(int(self.unit_image_len.max()), where=f"{prefix} ({TASK_NAMES[task]})")
        self.permutations = _EpochPermutations(num_permuted, templates.seed, task, shuffle, tables)
        self._epoch_starts: "OrderedDict[int, np.ndarray]" = OrderedDict()
        self.unique_identifiers = OrderedDict(
            [("class", type(self).__name__), ("task", TASK_NAMES[task]), ("path", prefix), ("split", split),
             ("doc_range", list(doc_range)), ("num_samples", self.num_samples), ("shuffle", shuffle),
             ("seed", templates.seed), ("seq_length", templates.seq_length),
             ("text_chunk_length", text_chunk_length), ("text_sample", text_sample if task == TASK_TEXT else None)]
        )

    # --- tables derived from every document (computed on first use: the index builder, validation splits) ------
    @functools.cached_property
    def unit_caption_len(self) -> np.ndarray:
        return self._seq_lengths[self.unit_caption_seq]

    @functools.cached_property
    def unit_image_len(self) -> np.ndarray:
        return self._seq_lengths[self.unit_caption_seq + 1]

    @functools.cached_property
    def doc_length(self) -> np.ndarray:
        return self._seq_lengths[self.doc_seq].astype(np.int64)

    @functools.cached_property
    def doc_positions(self) -> np.ndarray:
        return self.doc_length + 1  # [bos] doc -> doc [eos]

    def _document_length(self, doc: int) -> int:
        return int(self._seq_lengths[self.doc_seq[doc]])

    def _text_units(self) -> Dict[str, np.ndarray]:
        """Document mode: the pieces of ``doc + [eos]`` of at most the piece length, from the index or computed."""
        if self._units is None:
            names = ("seq", "offset", "read_len", "ends", "footprint")
            stored = {n: self.tables.array(f"units-{n}") for n in names} if self.tables is not None else {}
            if all(v is not None for v in stored.values()) and stored:
                self._units = stored
            else:
                self._units = self._build_text_units(self._first_seq, self._seq_lengths[self._first_seq].astype(np.int64),
                                                     self._piece_length)
        return self._units

    unit_seq = property(lambda self: self._text_units()["seq"])
    unit_offset = property(lambda self: self._text_units()["offset"])
    unit_read_len = property(lambda self: self._text_units()["read_len"])
    unit_ends = property(lambda self: self._text_units()["ends"])
    unit_footprint_base = property(lambda self: self._text_units()["footprint"])

    @staticmethod
    def _build_text_units(seqs: np.ndarray, lengths: np.ndarray, seq_length: int) -> Dict[str, np.ndarray]:
        stream = lengths + 1  # document + [eos]
        pieces = (stream + seq_length - 1) // seq_length
        owner = np.repeat(np.arange(len(seqs)), pieces)
        first_piece = np.repeat(np.cumsum(pieces) - pieces, pieces)
        piece_no = np.arange(len(owner)) - first_piece
        offset = piece_no * seq_length
        piece_len = np.minimum(seq_length, stream[owner] - offset)  # footprint = len([bos]+piece) - 1
        ends = offset + piece_len == stream[owner]
        return {"seq": seqs[owner], "offset": offset, "read_len": piece_len - ends, "ends": ends,
                "footprint": piece_len}

    def tables_to_store(self, last_epoch: int) -> Dict[str, object]:
        """What a rank needs to read samples ``0 .. (epoch last_epoch)`` without any per-document computation:
        the epoch permutations (and text epochs' document starts), the pieces of document mode, and scalars."""
        out: Dict[str, object] = {}
        if self.permutations.shuffle:
            for epoch in range(last_epoch + 1):
                out[f"perm-e{epoch}"] = self.permutations(epoch)
                if self.splittable:
                    out[f"starts-e{epoch}"] = self._epoch_document_starts(epoch)
        if self.splittable:
            out["epoch_positions"] = self.epoch_positions
        elif self.task == TASK_TEXT:
            out.update({f"units-{k}": v for k, v in self._text_units().items()})
            out["num_units"] = self.num_units
        return out

    def last_epoch(self, num_taken: int) -> int:
        """The last epoch that samples ``0 .. num_taken - 1`` reach (a text window may straddle two)."""
        if num_taken <= 0:
            return 0
        if self.splittable:
            return (num_taken * self.window - 1) // self.epoch_positions
        return (num_taken - 1) // self.num_units

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
            starts = self.tables.array(f"starts-e{epoch}") if self.tables is not None else None
            if starts is None:
                starts = np.zeros(len(self.doc_seq) + 1, dtype=np.int64)
                np.cumsum(self.doc_positions[self.permutations(epoch)], out=starts[1:])
            self._epoch_starts[epoch] = starts
            if len(self._epoch_starts) > 2:
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
            length = self._document_length(doc)
            b = min(length + 1, a + (end - at))
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
