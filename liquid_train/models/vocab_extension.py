"""Per-family vocabulary extension: where image codes and <boi>/<eoi>/<unconditional> live, and how new rows start.

Layout decisions (one explicit ``image_token_offset`` = the base model's embedding rows, never ``len(tokenizer)``):

==========  ==============================================  ===================================================
family      <boi>, <eoi>, <unconditional>                   image codes
==========  ==============================================  ===================================================
gemma(2)    unused slots 7, 8, 9 (``<unused0..2>``), as     [256000, 256000 + K): Liquid-7B's layout
            Liquid-7B does
llama3.2    reserved specials bos+2, bos+3, bos+5           [128256, 128256 + K)
            (``<|reserved_special_token_0..2|>``; bos+4 is
            Llama 3.2's finetune pad token)
qwen2.5     added tokens ``<boi> <eoi> <unconditional>`` at  [config vocab, + K) (151936 or 152064): the spare
            the tokenizer's length (151665..151667), i.e.   rows between tokenizer and config vocab are kept,
            in the spare embedding rows Qwen already has    so the base checkpoint loads unchanged
==========  ==============================================  ===================================================

New embedding/output rows (image codes, and Qwen's special rows, which were never trained) start at the mean of the
existing text rows plus seeded Gaussian noise (``noise_std`` x the rows' std), so the first steps neither favour nor
starve image tokens. TP padding rows are zero and are masked to ``-inf`` logits by the builder, and dropped on export.
"""
from __future__ import annotations

import inspect
from typing import List

import torch

from liquid_train.models.families import ModelArch
from liquid_train.vocab import LiquidVocab

DEFAULT_NUM_IMAGE_TOKENS = 8192


def special_token_ids(arch: ModelArch) -> List[int]:
    if arch.family in ("gemma", "gemma2"):
        ids = [7, 8, 9]
    elif arch.family == "llama3.2":
        ids = [arch.bos_token_id + 2, arch.bos_token_id + 3, arch.bos_token_id + 5]
    elif arch.family == "qwen2.5":
        n = arch.tokenizer_vocab_size or arch.vocab_size
        if n + 3 > arch.vocab_size:
            raise ValueError(f"qwen2.5: no spare embedding rows for <boi>/<eoi>/<unconditional> after the tokenizer's "
                             f"{n} tokens (config vocab_size {arch.vocab_size}); the tokenizer's length decides where "
                             "they go: give the tokenizer (--tokenizer DIR)")
        ids = [n, n + 1, n + 2]
    else:
        raise ValueError(f"no vocabulary plan for family {arch.family!r}")
    if max(ids) >= arch.vocab_size:
        raise ValueError(f"{arch.family}: <boi>/<eoi>/<unconditional> would be ids {ids}, past config vocab_size "
                         f"{arch.vocab_size}")
    return ids


def special_token_strings(arch: ModelArch) -> List[str]:
    if arch.family in ("gemma", "gemma2"):
        return ["<unused0>", "<unused1>", "<unused2>"]
    if arch.family == "llama3.2":
        return [f"<|reserved_special_token_{i}|>" for i in range(3)]
    return ["<boi>", "<eoi>", "<unconditional>"]


def plan_vocab(arch: ModelArch, num_image_tokens: int = DEFAULT_NUM_IMAGE_TOKENS,
               vq_tokenizer: str = "chameleon-vqgan") -> LiquidVocab:
    """The LiquidVocab of ``arch`` extended by ``num_image_tokens`` image codes."""
    boi, eoi, uncond = special_token_ids(arch)
    names = special_token_strings(arch)
    offset = arch.vocab_size
    return LiquidVocab(
        base_vocab_size=arch.vocab_size, image_token_offset=offset, num_image_tokens=num_image_tokens,
        vocab_size=offset + num_image_tokens, boi_id=boi, eoi_id=eoi, uncond_id=uncond,
        bos_id=arch.bos_token_id, eos_id=arch.eos_token_id, pad_id=arch.pad_token_id,
        boi_token=names[0], eoi_token=names[1], uncond_token=names[2], vq_tokenizer=vq_tokenizer,
    )


def new_row_ids(arch: ModelArch, vocab: LiquidVocab) -> List[int]:
    """Rows initialised by mean resizing: image codes, plus special rows that were never trained (Qwen)."""
    rows = list(range(vocab.image_token_offset, vocab.image_token_end))
    if arch.family == "qwen2.5":
        rows = [vocab.boi_id, vocab.eoi_id, vocab.uncond_id] + rows
    return rows


def extend_embedding(weight: torch.Tensor, arch: ModelArch, vocab: LiquidVocab, padded_rows: int,
                     seed: int = 0, noise_std: float = 0.02) -> torch.Tensor:
    """[base rows, h] -> [padded_rows, h]: new rows = mean(text rows) + seeded noise; padding rows zero."""
    if weight.size(0) != vocab.base_vocab_size:
        raise ValueError(f"embedding has {weight.size(0)} rows, the vocabulary plan expects base "
                         f"{vocab.base_vocab_size} (config vocab_size)")
    real_text = arch.tokenizer_vocab_size or vocab.base_vocab_size
    src = weight[: min(real_text, weight.size(0))].float()
    mean, std = src.mean(0), src.std(0).mean()
    out = torch.zeros(padded_rows, weight.size(1), dtype=torch.float32)
    out[: weight.size(0)] = weight.float()
    ids = torch.tensor(new_row_ids(arch, vocab), dtype=torch.long)  # may be empty (no image tokens)
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(len(ids), weight.size(1), generator=gen) * (noise_std * std)
    out[ids] = mean + noise
    return out.to(weight.dtype)


def extend_tokenizer(tokenizer, vocab: LiquidVocab):
    """Make ``tokenizer`` know <boi>/<eoi>/<unconditional> as single special tokens with exactly the planned ids."""
    wanted = {vocab.boi_token: vocab.boi_id, vocab.eoi_token: vocab.eoi_id, vocab.uncond_token: vocab.uncond_id}
    missing = [t for t, i in wanted.items() if tokenizer.convert_tokens_to_ids(t) != i]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False) \
            if _accepts_replace(tokenizer) else tokenizer.add_special_tokens({"additional_special_tokens": missing})
    for tok, idx in wanted.items():
        got = tokenizer.convert_tokens_to_ids(tok)
        if got != idx:
            raise ValueError(f"tokenizer maps {tok!r} to {got}, the vocabulary plan needs {idx}; the tokenizer does "
                             f"not belong to this model family/size (length {len(tokenizer)})")
    return tokenizer


def _accepts_replace(tokenizer) -> bool:
    try:
        return "replace_extra_special_tokens" in inspect.signature(tokenizer.add_special_tokens).parameters
    except (TypeError, ValueError):
        return False
