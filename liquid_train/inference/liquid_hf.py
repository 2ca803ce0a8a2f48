"""An exported Liquid model as stock ``transformers`` sees it: the HF model, its tokenizer and the vocabulary layout.

Why a bundle: every sampling task needs the same three things read from one directory written by
``tools/convert_checkpoint.py megatron-to-hf`` (``config.json`` + safetensors, the tokenizer with ``<boi>``/``<eoi>``/
``<unconditional>``, ``liquid_vocab.json``) plus the VQ tokenizer named there. Loading them in one place means the
image-id range used to restrict sampling is the one the model was trained with, never ``len(tokenizer)``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from liquid_train.vocab import LiquidVocab


class LiquidModelError(ValueError):
    """An exported model directory that cannot be sampled from (the message names the file and the fix)."""


@dataclass
class LiquidHF:
    model: torch.nn.Module
    tokenizer: object
    vocab: LiquidVocab
    path: str

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode_text(self, text: str) -> List[int]:
        """Token ids of ``text`` without the tokenizer's own bos/eos (the templates place those explicitly)."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def decode_text(self, ids: Sequence[int]) -> str:
        """Text of generated ids, stopping at the first eos; image ids and specials are dropped."""
        out = []
        for i in ids:
            i = int(i)
            if i == self.vocab.eos_id:
                break
            if self.vocab.is_image_id(np.int64(i)) or i in (self.vocab.boi_id, self.vocab.eoi_id,
                                                            self.vocab.uncond_id, self.vocab.pad_id,
                                                            self.vocab.bos_id):
                continue
            out.append(i)
        return self.tokenizer.decode(out, skip_special_tokens=True)


def load_liquid_hf(path: str, device: str = "cpu", dtype: Optional[torch.dtype] = None) -> LiquidHF:
    """Load an exported directory; clear errors for what a sampler cannot do without."""
    if not os.path.isdir(path):
        raise LiquidModelError(f"{path}: not a directory; pass the output of "
                               "`tools/convert_checkpoint.py megatron-to-hf --out DIR`")
    for name, fix in (("config.json", "export the checkpoint with tools/convert_checkpoint.py megatron-to-hf"),
                      (LiquidVocab.FILENAME, "it is written by megatron-to-hf; a plain HF base model has no image "
                                             "vocabulary")):
        if not os.path.exists(os.path.join(path, name)):
            raise LiquidModelError(f"{path}: no {name}; {fix}")
    if not any(os.path.exists(os.path.join(path, f)) for f in ("tokenizer.json", "tokenizer.model",
                                                                "tokenizer_config.json")):
        raise LiquidModelError(f"{path}: no tokenizer files; re-export with "
                               "`megatron-to-hf --tokenizer-dir <the tokenizer that built the datasets>`")
    vocab = LiquidVocab.load(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    for tok, want in ((vocab.boi_token, vocab.boi_id), (vocab.eoi_token, vocab.eoi_id),
                      (vocab.uncond_token, vocab.uncond_id)):
        got = tokenizer.convert_tokens_to_ids(tok)
        if got != want:
            raise LiquidModelError(f"{path}: the tokenizer maps {tok!r} to {got} but {LiquidVocab.FILENAME} says "
                                   f"{want}; the tokenizer was not exported with this model")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or torch.float32).to(device).eval()
    rows = model.get_input_embeddings().weight.shape[0]
    if rows < vocab.vocab_size:
        raise LiquidModelError(f"{path}: the model has {rows} embedding rows but {LiquidVocab.FILENAME} needs "
                               f"{vocab.vocab_size}")
    return LiquidHF(model, tokenizer, vocab, path)
