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

import ctypes
import functools
import mmap
import os
import sys
from collections import OrderedDict
from typing import Dict, Optional, Tuple

import numpy as np
import torch
from megatron.core.datasets.indexed_dataset import IndexedDataset
from megatron.core.datasets.utils import Split

from liquid_train.data import kernels
from liquid_train.data.templates import (PURPOSE_CFG_DROP, PURPOSE_INSTRUCTION, LiquidTemplates, Positions, Sample,
                                         _splitmix64)
from liquid_train.vocab import TASK_NAMES, TASK_T2I, TASK_TEXT


def open_indexed_dataset(prefix: str, kind: str, check: bool = True):
    """Open ``<prefix>.bin/.idx`` with megatron's reader; one clear error when missing or (``check``) of the wrong
    layout. The reader maps the files and reads nothing; the check reads the document table once."""
    if not (os.path.exists(prefix + ".idx") and os.path.exists(prefix + ".bin")):
        raise FileNotFoundError(
            f"{prefix}.bin/.idx: {kind} indexed dataset not found; build it with `python -m data_pipeline build` "
            f"and set DataConfig.{kind}_path to its prefix"
        )
    dataset = IndexedDataset(prefix, multimodal=False, mmap=True)
    if check:
        check_layout(dataset, prefix, kind)
    return dataset


def check_layout(dataset, prefix: str, kind: str, chunk: int = 1 << 22) -> None:
    """Every document of a ``pairs`` dataset is (caption, codes), of a ``text`` dataset one sequence (chunked, so a
    30M-document table costs no more than 32 MiB at a time)."""
    docs = np.asarray(dataset.document_indices)
    expected = 2 if kind == "pairs" else 1
    if len(docs) < 2:
        raise ValueError(f"{prefix}: the {kind} dataset holds no documents")
    for lo in range(0, len(docs) - 1, chunk):
        part = docs[lo:lo + chunk + 1]
        per_doc = np.diff(part)
        release_pages(part)
        if not np.all(per_doc == expected):
            bad = lo + int(np.nonzero(per_doc != expected)[0][0])
            raise ValueError(
                f"{prefix}: document {bad} has {per_doc[bad - lo]} sequences; a {kind} dataset needs exactly "
                f"{expected} per document (see docs/data_format.md)"
            )


def release_pages(array: np.ndarray) -> None:
    """Drop the pages of ``array`` from this process's resident set, when it is a read-only view of a file
    mapping (the pages stay in the page cache; a later read maps them again). Why: a pass over a 30M-document table
    would otherwise leave ~240 MiB counted against the process that built the index. No-op for anything else."""
    if not sys.platform.startswith("linux") or array.size == 0 or array.flags.writeable:
        return
    base = array
    while base is not None and not isinstance(base, (np.memmap, mmap.mmap)):
        base = base.obj if isinstance(base, memoryview) else getattr(base, "base", None)
    if base is None or (isinstance(base, np.memmap) and base.mode != "r"):
        return
    page = mmap.PAGESIZE
    begin = array.ctypes.data // page * page
    end = array.ctypes.data + array.nbytes
    _libc().madvise(ctypes.c_void_p(begin), ctypes.c_size_t(end - begin), _MADV_DONTNEED)


_MADV_DONTNEED = 4


@functools.lru_cache(maxsize=1)
def _libc():
    return ctypes.CDLL(None, use_errno=True)


def split_documents(num_documents: int, valid_fraction: float) -> Dict[str, Tuple[int, int]]:
    """Contiguous document ranges: train first, the last ``valid_fraction`` (>= 1 doc when > 0) for validation."""
    num_valid = 0 if valid_fraction <= 0 else max(1, int(round(num_documents * valid_fraction)))
    if num_valid >= num_documents:
        raise ValueError(f"valid_fraction={valid_fraction} leaves no training documents out of {num_documents}")
    return {"train": (0, num_documents - num_valid), "valid": (num_documents - num_valid, num_documents)}


def _progression(seqs: np.ndarray) -> Optional[Tuple[int, int]]:
    """(first, step) when ``seqs`` step evenly (checked at the ends and the first step; the layout check of
    `check_layout` makes every pair document 2 sequences and every text document 1)."""
    if len(seqs) < 2:
        return (int(seqs[0]), 1) if len(seqs) else None
    first, last = int(seqs[0]), int(seqs[-1])
    step = (last - first) // (len(seqs) - 1)
    if step >= 1 and first + step * (len(seqs) - 1) == last and int(seqs[1]) - first == step:
        return first, step
    return None


def _hash_key(seed: int, task: int, purpose: int) -> np.uint64:
    """The part of `templates.sample_hash` that does not depend on the sample index."""
    with np.errstate(over="ignore"):
        h = _splitmix64(np.array([int(seed) & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))
        return _splitmix64(h ^ np.uint64(task * 0x100 + purpose))[0]


def _lengths(lengths: np.ndarray, seqs: np.ndarray, offset: int = 0) -> np.ndarray:
    """``lengths[seqs + offset]``: a strided view of the mapped array when ``seqs`` step evenly (every checked
    dataset: a pair document is 2 sequences, a text document 1), so a 30M-document table costs no memory."""
    progression = _progression(seqs)
    if progression is not None:
        first, step = progression
        return lengths[first + offset:first + offset + step * (len(seqs) - 1) + 1:step]
    return lengths[np.asarray(seqs) + offset]


class _EpochPermutations:
    """Seeded permutation of the units for each epoch (small LRU; epochs are visited nearly in order), or the one
    stored in the built index (``tables``: ``perm-e<epoch>``, memory-mapped). ``on_compute(epoch, perm)``, when
    set, sees every permutation computed here (the index builder stores them as they come)."""

    def __init__(self, num_units: int, seed: int, task: int, shuffle: bool, tables=None):
        self.num_units, self.seed, self.task, self.shuffle = num_units, seed, task, shuffle
        self.tables = tables
        self.on_compute = None
        self._cache: "OrderedDict[int, np.ndarray]" = OrderedDict()
        self._pending: Dict[int, object] = {}

    def prefetch(self, epoch: int, executor) -> None:
        """Compute epoch ``epoch``'s permutation on ``executor`` (a shuffle runs outside the GIL)."""
        if self.shuffle and epoch not in self._cache and epoch not in self._pending and (
                self.tables is None or self.tables.array(f"perm-e{epoch}") is None):
            self._pending[epoch] = executor.submit(self.compute, epoch)

    def compute(self, epoch: int) -> np.ndarray:
        """``default_rng([seed, task, epoch, 0x51]).permutation(num_units)``, as int32 when it fits: ``shuffle``
        of an ``arange`` is what ``permutation`` does, whatever the dtype, so the values are the same."""
        dtype = np.int32 if self.num_units < np.iinfo(np.int32).max else np.int64
        perm = np.arange(self.num_units, dtype=dtype if self.shuffle else np.int64)
        if self.shuffle:
            np.random.default_rng([self.seed, self.task, epoch, 0x51]).shuffle(perm)
        return perm

    def __call__(self, epoch: int) -> np.ndarray:
        perm = self._cache.get(epoch)
        if perm is None:
            perm = self.tables.array(f"perm-e{epoch}") if self.tables is not None else None
            if perm is None:
                pending = self._pending.pop(epoch, None)
                perm = pending.result() if pending is not None else self.compute(epoch)
                if self.on_compute is not None:
                    self.on_compute(epoch, perm)
            self._cache[epoch] = perm
            if len(self._cache) > 2:
                self._cache.popitem(last=False)
        return perm

    def units(self, indices: np.ndarray) -> np.ndarray:
        indices = np.asarray(indices, dtype=np.int64)
        if indices.size == 0:
            return np.empty_like(indices)
        epochs, positions = np.divmod(indices, self.num_units)
        first, last = int(epochs.min()), int(epochs.max())
        if first == last:
            return self(first)[positions]
        out = np.empty_like(indices)
        for epoch in range(first, last + 1):
            sel = epochs == epoch
            if sel.any():
                out[sel] = self(epoch)[positions[sel]]
        return out


class LiquidTaskDataset(torch.utils.data.Dataset):
    """One task (text / t2i / i2t) of one split of one source, ``num_samples`` long (wrapping into new epochs).

    ``tables`` (optional): the source's tables in a built index (an object with ``array(name)`` and
    ``value(name)``, None for what it lacks); without them every table is computed from the documents."""

    def __init__(self, task: int, indexed, prefix: str, templates: LiquidTemplates, doc_range: Tuple[int, int],
                 num_samples: int, split: str = "train", shuffle: bool = True, text_chunk_length: int = None,
                 text_sample: str = "window", tables=None, name: str = None):
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
            self.epoch_positions = int(stored) if stored is not None else \
                int(self.doc_length.sum(dtype=np.int64)) + len(first_seq)  # [bos] doc -> doc [eos]
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

    # --- tables derived from every document (views of the mapped index, or computed on first use) -------------
    @functools.cached_property
    def unit_caption_len(self) -> np.ndarray:
        return _lengths(self._seq_lengths, self.unit_caption_seq)

    @functools.cached_property
    def unit_image_len(self) -> np.ndarray:
        return _lengths(self._seq_lengths, self.unit_caption_seq, 1)

    @functools.cached_property
    def doc_length(self) -> np.ndarray:
        return _lengths(self._seq_lengths, self.doc_seq)

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

    def tables_to_store(self, last_epoch: int, have=()):
        """What a rank needs to read samples up to epoch ``last_epoch`` without any per-document computation, as
        ``(name, array or int)``, one at a time (each can be written and dropped): the epoch permutations (and the
        document starts of text epochs), the pieces of document mode, scalars. Names in ``have`` are skipped."""
        if self.splittable:
            yield "epoch_positions", self.epoch_positions
        elif self.task == TASK_TEXT:
            yield "num_units", self.num_units
            for k, v in self._text_units().items():
                yield f"units-{k}", v
        if self.permutations.shuffle:
            for epoch in range(last_epoch + 1):
                if f"perm-e{epoch}" not in have:
                    yield f"perm-e{epoch}", self.permutations(epoch)
                if self.splittable and f"starts-e{epoch}" not in have:
                    yield f"starts-e{epoch}", self._epoch_document_starts(epoch)

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

    def mean_footprint(self, chunk: int = 1 << 22) -> float:
        """Mean footprint of samples ``0 .. num_units - 1`` (one epoch), exact (integer sum / count, which is what
        numpy's mean of the whole array gives). Only T2I depends on the order (its instruction and CFG drop follow
        the sample index), so the others sum the units' table without a permutation."""
        n, total = self.num_units, 0
        first_epoch = []
        for lo in range(0, n, chunk):
            hi = min(n, lo + chunk)
            if self.task == TASK_T2I:  # kept: the stream's first T2I samples are these
                first_epoch.append(self.footprints_range(lo, hi).astype(self._footprint_dtype))
                total += int(first_epoch[-1].sum(dtype=np.int64))
            elif self.splittable:
                total += int(self.footprints_range(lo, hi).sum(dtype=np.int64))
            elif self.task == TASK_TEXT:
                total += int(self.unit_footprint_base[lo:hi].sum(dtype=np.int64))
            else:
                total += int(self.templates.i2t_footprints(self.unit_caption_len[lo:hi],
                                                           self.unit_image_len[lo:hi]).sum(dtype=np.int64))
        if first_epoch:
            self._first_epoch_footprints = np.concatenate(first_epoch)
        return total / n

    @property
    def _footprint_dtype(self):
        return np.int16 if self.templates.seq_length < np.iinfo(np.int16).max else np.int32

    def footprints_range(self, lo: int, hi: int) -> np.ndarray:
        """``footprints(np.arange(lo, hi))``, reading each epoch's permutation as slices (the index builder's
        chunks are ranges of sample indices)."""
        if self.splittable or lo >= hi:
            return self.footprints(np.arange(lo, hi))
        n = self.num_units
        known = getattr(self, "_first_epoch_footprints", None)
        if known is not None and hi <= len(known):
            return known[lo:hi].astype(np.int64)
        units = np.concatenate([self.permutations(e)[max(lo, e * n) - e * n:min(hi, (e + 1) * n) - e * n]
                                for e in range(lo // n, (hi - 1) // n + 1)])
        if self.task == TASK_TEXT:
            return self.unit_footprint_base[units]
        progression = _progression(self.unit_caption_seq)
        if progression is not None:  # compiled: one pass, one read per sample
            t = self.templates
            out = np.empty(hi - lo, dtype=np.int64)
            kernels.pair_footprints(self.task == TASK_T2I, units, lo, self._seq_lengths, progression[0],
                                    progression[1], _hash_key(t.seed, TASK_T2I, PURPOSE_CFG_DROP),
                                    _hash_key(t.seed, TASK_T2I, PURPOSE_INSTRUCTION), t.cfg_drop_prob,
                                    t.instruction_lengths, len(t.i2t_prompt_ids), t.seq_length, out)
            return out
        if self.task == TASK_T2I:
            return self.templates.t2i_footprints(np.arange(lo, hi), self.unit_caption_len[units],
                                                 self.unit_image_len[units])
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
                positions = self.doc_length[self.permutations(epoch)]
                positions += 1  # [bos] doc -> doc [eos]
                starts = np.zeros(len(self.doc_seq) + 1, dtype=np.int64)
                np.cumsum(positions, dtype=np.int64, out=starts[1:])
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
