"""Liquid's three task templates, as pure functions of (seed, task, sample index).

A sample is a full token sequence plus a per-token *target* flag (does this token receive loss when it is predicted).
Packing later turns a sample of length L into L-1 input positions: inputs ``tokens[:-1]``, labels ``tokens[1:]``,
loss mask ``target[1:]``; so labels never cross a sample boundary and a sample's footprint in a packed sequence is
``L - 1`` tokens.

- T2I: ``[bos] caption+instruction <boi> codes <eoi> [eos]``; targets: codes, ``<eoi>``, ``[eos]``. With probability
  ``cfg_drop_prob`` the caption+instruction become ``<unconditional>`` (classifier-free guidance).
- I2T: ``[bos] <boi> codes <eoi> "The caption of this image is:" caption [eos]``; targets: caption, ``[eos]``.
- text: every document is ``[bos] doc [eos]`` (targets: everything; the bos is never a label). Two ways to cut the
  document stream into samples (``DataConfig.text_sample``): ``window`` (default), fixed windows of
  ``text_chunk_length`` positions of the concatenated stream, as megatron's GPTDataset samples are (a window holds
  several documents or part of one, and the packer may split it to fill the gap next to an image); ``document``,
  ``[bos] piece`` where pieces cut ``doc + [eos]`` into chunks of at most ``text_chunk_length`` positions, packed
  whole.

Captions that would not let an image sample fit in ``seq_length`` are truncated (the image never is); a
``seq_length`` that cannot hold the image grid at all is a configuration error.

Randomness (instruction choice, CFG drop) comes from a counter-based hash of (seed, task, index, purpose), so any
sample can be rebuilt alone, in any worker, in any order, and the lengths of a million samples can be computed
vectorised without building them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from liquid_train.data.config import I2T_PROMPT, T2I_INSTRUCTIONS
from liquid_train.vocab import TASK_I2T, TASK_T2I, TASK_TEXT, LiquidVocab

_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)
PURPOSE_CFG_DROP, PURPOSE_INSTRUCTION = 1, 2


def _splitmix64(x: np.ndarray) -> np.ndarray:
    x = (x + np.uint64(0x9E3779B97F4A7C15)) & _M64
    x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _M64
    x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _M64
    return x ^ (x >> np.uint64(31))


def sample_hash(seed: int, task: int, index, purpose: int) -> np.ndarray:
    """64-bit hash of (seed, task, index, purpose); vectorised over ``index``. Pure: no generator state."""
    with np.errstate(over="ignore"):
        idx = np.atleast_1d(np.asarray(index, dtype=np.int64)).astype(np.uint64)
        h = _splitmix64(np.full(idx.shape, np.uint64(seed & 0xFFFFFFFFFFFFFFFF), dtype=np.uint64))
        h = _splitmix64(h ^ np.uint64(task * 0x100 + purpose))
        return _splitmix64(h ^ idx)


def sample_uniform(seed: int, task: int, index, purpose: int) -> np.ndarray:
    """Uniform floats in [0, 1) from `sample_hash` (53 high bits)."""
    return (sample_hash(seed, task, index, purpose) >> np.uint64(11)).astype(np.float64) / float(1 << 53)


@dataclass
class Sample:
    task: int
    tokens: np.ndarray
    """int64 [L]: the whole templated sequence, bos first."""
    target: np.ndarray
    """bool [L]: token gets loss when predicted (target[0] is always False)."""

    @property
    def footprint(self) -> int:
        """Positions the sample occupies in a packed sequence (inputs = tokens[:-1])."""
        return len(self.tokens) - 1

    def positions(self, start: int = 0, stop: Optional[int] = None) -> "Positions":
        """Packed positions ``[start, stop)`` of this sample (one segment)."""
        stop = self.footprint if stop is None else stop
        starts = np.zeros(stop - start, dtype=bool)
        starts[:1] = True
        return Positions(self.task, self.tokens[start:stop], self.tokens[start + 1:stop + 1],
                         self.target[start + 1:stop + 1], starts)


@dataclass
class Positions:
    """A run of packed positions: what a packed sequence is assembled from.

    ``inputs[p]`` is fed at position p, ``labels[p]`` is its next token *within the same document or sample* and
    ``loss_mask[p]`` says whether that label gets loss. ``segment_starts[p]`` marks where a new attention segment
    (a sample, or a document inside a text window) begins; position ids restart there. ``stream_span`` is the
    ``[begin, end)`` of these positions in the task's continuous text stream (None for image-text samples), so the
    packer's caller can tell that two runs in one row continue each other and keep them in one segment."""
    task: int
    inputs: np.ndarray
    labels: np.ndarray
    loss_mask: np.ndarray
    segment_starts: np.ndarray
    stream_span: Optional[tuple] = None

    def __len__(self) -> int:
        return len(self.inputs)


class LiquidTemplates:
    """Builds samples of the three tasks. The constant strings are tokenized once here."""

    def __init__(self, vocab: LiquidVocab, tokenizer, seq_length: int, seed: int, cfg_drop_prob: float = 0.1,
                 t2i_instructions: Optional[Sequence[str]] = None, i2t_prompt: Optional[str] = None):
        self.vocab = vocab
        self.seq_length = int(seq_length)
        self.seed = int(seed)
        self.cfg_drop_prob = float(cfg_drop_prob)
        instructions = list(t2i_instructions if t2i_instructions is not None else T2I_INSTRUCTIONS)
        prompt = i2t_prompt if i2t_prompt is not None else I2T_PROMPT
        self.instruction_ids = [self._encode(tokenizer, s) for s in instructions]
        self.instruction_lengths = np.array([len(x) for x in self.instruction_ids], dtype=np.int64)
        self.i2t_prompt_ids = self._encode(tokenizer, prompt)
        self._image_offset = np.int64(vocab.image_token_offset)

    @staticmethod
    def _encode(tokenizer, text: str) -> np.ndarray:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        return np.asarray(ids, dtype=np.int64)

    # --- budgets -----------------------------------------------------------------------------------------------
    def t2i_caption_budget(self, image_tokens: int) -> np.ndarray:
        """Max caption tokens per instruction choice so that a T2I sample fits: footprint = text + image + 3."""
        return self.seq_length - 3 - int(image_tokens) - self.instruction_lengths

    def i2t_caption_budget(self, image_tokens: int) -> int:
        """Max caption tokens of an I2T sample: footprint = image + prompt + caption + 3."""
        return self.seq_length - 3 - int(image_tokens) - len(self.i2t_prompt_ids)

    def check_image_fits(self, image_tokens: int, where: str = "pairs dataset") -> None:
        need = int(image_tokens) + 4 + max(int(self.instruction_lengths.max()), len(self.i2t_prompt_ids))
        if need > self.seq_length:
            raise ValueError(
                f"{where}: images of {image_tokens} codes need seq_length >= {need} (image + specials + the longest "
                f"instruction + one caption token); DataConfig.seq_length is {self.seq_length}. Raise seq_length "
                f"or use a smaller image grid."
            )

    # --- per-sample random choices -------------------------------------------------------------------------------
    def t2i_choices(self, index):
        """(dropped: bool[n], instruction: int[n]) for T2I sample indices; pure in (seed, index)."""
        dropped = sample_uniform(self.seed, TASK_T2I, index, PURPOSE_CFG_DROP) < self.cfg_drop_prob
        which = (sample_hash(self.seed, TASK_T2I, index, PURPOSE_INSTRUCTION) % np.uint64(len(self.instruction_ids)))
        return dropped, which.astype(np.int64)

    # --- footprints (vectorised, no token reads) -------------------------------------------------------------------
    def t2i_footprints(self, index, caption_lengths, image_lengths) -> np.ndarray:
        dropped, which = self.t2i_choices(index)
        image_lengths = np.asarray(image_lengths, dtype=np.int64)
        budget = self.seq_length - 3 - image_lengths - self.instruction_lengths[which]
        caption = np.minimum(np.asarray(caption_lengths, dtype=np.int64), budget)
        text = np.where(dropped, 1, caption + self.instruction_lengths[which])
        return text + image_lengths + 3

    def i2t_footprints(self, caption_lengths, image_lengths) -> np.ndarray:
        image_lengths = np.asarray(image_lengths, dtype=np.int64)
        budget = self.seq_length - 3 - image_lengths - len(self.i2t_prompt_ids)
        caption = np.minimum(np.asarray(caption_lengths, dtype=np.int64), budget)
        return image_lengths + len(self.i2t_prompt_ids) + caption + 3

    # --- sample construction ---------------------------------------------------------------------------------------
    def t2i(self, index: int, caption: np.ndarray, codes: np.ndarray) -> Sample:
        v = self.vocab
        dropped, which = self.t2i_choices(index)
        image = np.asarray(codes, dtype=np.int64) + self._image_offset
        if dropped[0]:
            text = np.array([v.uncond_id], dtype=np.int64)
        else:
            w = int(which[0])
            budget = self.seq_length - 3 - len(image) - int(self.instruction_lengths[w])
            text = np.concatenate([np.asarray(caption[:budget], dtype=np.int64), self.instruction_ids[w]])
        tokens = np.concatenate([[v.bos_id], text, [v.boi_id], image, [v.eoi_id, v.eos_id]]).astype(np.int64)
        target = np.zeros(len(tokens), dtype=bool)
        target[len(text) + 2:] = True  # codes, <eoi>, [eos]
        return Sample(TASK_T2I, tokens, target)

    def i2t(self, index: int, caption: np.ndarray, codes: np.ndarray) -> Sample:
        v = self.vocab
        image = np.asarray(codes, dtype=np.int64) + self._image_offset
        budget = self.i2t_caption_budget(len(image))
        caption = np.asarray(caption[:budget], dtype=np.int64)
        head = np.concatenate([[v.bos_id, v.boi_id], image, [v.eoi_id], self.i2t_prompt_ids]).astype(np.int64)
        tokens = np.concatenate([head, caption, [v.eos_id]]).astype(np.int64)
        target = np.zeros(len(tokens), dtype=bool)
        target[len(head):] = True  # caption, [eos]
        return Sample(TASK_I2T, tokens, target)

    def text_document_positions(self, doc: np.ndarray, doc_length: int, first: int, start: int,
                                stop: int) -> tuple:
        """(inputs, labels) of positions ``[start, stop)`` of ``[bos] doc [eos]`` (position p feeds ``bos`` or
        ``doc[p-1]`` and predicts ``doc[p]`` or ``eos``); ``doc`` holds ``doc[first:...]``, the tokens the range
        needs (``first = max(start - 1, 0)``)."""
        p = np.arange(start, stop)
        padded = np.concatenate([np.asarray(doc, dtype=np.int64), [self.vocab.eos_id]])
        last = len(padded) - 1
        inputs = np.where(p == 0, self.vocab.bos_id, padded[np.clip(p - 1 - first, 0, last)])
        labels = np.where(p < doc_length, padded[np.clip(p - first, 0, last)], self.vocab.eos_id)
        return inputs.astype(np.int64), labels.astype(np.int64)

    def text(self, piece: np.ndarray, ends_document: bool) -> Sample:
        """``piece`` = tokens of the document stream; ``ends_document`` appends the document's [eos]."""
        v = self.vocab
        parts = [[v.bos_id], np.asarray(piece, dtype=np.int64)]
        if ends_document:
            parts.append([v.eos_id])
        tokens = np.concatenate(parts).astype(np.int64)
        target = np.ones(len(tokens), dtype=bool)
        target[0] = False
        return Sample(TASK_TEXT, tokens, target)
