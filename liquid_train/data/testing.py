"""Tiny on-disk fixtures for tests and benchmarks: a word-level HF tokenizer and `pairs`/`text` indexed datasets
written with megatron's `IndexedDatasetBuilder` in the real format (docs/data_format.md). No downloads."""
from __future__ import annotations

import json
import os
import re
from typing import Optional, Tuple

import numpy as np
import torch
from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from liquid_train.data.config import I2T_PROMPT, T2I_INSTRUCTIONS
from liquid_train.vocab import LiquidVocab, default_test_vocab


def make_tiny_tokenizer(directory: str, extra_words: int = 64):
    """Word-level `PreTrainedTokenizerFast` (pad 0, bos 1, eos 2, unk 3) covering the template strings; saved."""
    words = ["<pad>", "<s>", "</s>", "<unk>"]
    for text in T2I_INSTRUCTIONS + [I2T_PROMPT]:
        for w in re.findall(r"\w+|[^\w\s]", text):
            if w not in words:
                words.append(w)
    words += [f"w{i}" for i in range(extra_words)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>")
    os.makedirs(directory, exist_ok=True)
    fast.save_pretrained(directory)
    return fast


def tiny_vocab(tokenizer, num_image_tokens: int = 64) -> LiquidVocab:
    base = len(tokenizer)
    return default_test_vocab(base_vocab_size=base, num_image_tokens=num_image_tokens, bos_id=1, eos_id=2, pad_id=0)


def write_indexed(prefix: str, documents, kind: str, meta: Optional[dict] = None) -> str:
    """Write documents (lists of int sequences) as a megatron IndexedDataset + ``<prefix>.meta.json``."""
    os.makedirs(os.path.dirname(prefix) or ".", exist_ok=True)
    builder = IndexedDatasetBuilder(prefix + ".bin", dtype=np.int32)
    num_tokens = 0
    for doc in documents:
        for seq in doc:
            builder.add_item(torch.as_tensor(np.asarray(seq, dtype=np.int32)))
            num_tokens += len(seq)
        builder.end_document()
    builder.finalize(prefix + ".idx")
    with open(prefix + ".meta.json", "w") as f:
        json.dump({"kind": kind, "num_documents": len(documents), "num_tokens": num_tokens, **(meta or {})}, f)
    return prefix


def write_tiny_datasets(directory: str, num_pairs: int = 200, num_texts: int = 150, image_grid: Tuple[int, int] = (4, 4),
                        caption_range=(1, 12), text_range=(1, 300), num_words: int = 64, num_image_tokens: int = 64,
                        seed: int = 0) -> Tuple[str, str]:
    """Random `pairs` (caption ids, codes) and `text` datasets; returns their prefixes. Caption/text ids are drawn
    from ids [4, 4 + num_words) of `make_tiny_tokenizer`'s vocabulary (any base-vocabulary ids do for the data side)."""
    rng = np.random.default_rng(seed)
    hw = image_grid[0] * image_grid[1]
    words = np.arange(4, 4 + num_words)
    pairs = [[rng.choice(words, rng.integers(*caption_range, endpoint=True)), rng.integers(0, num_image_tokens, hw)]
             for _ in range(num_pairs)]
    texts = [[rng.choice(words, rng.integers(*text_range, endpoint=True))] for _ in range(num_texts)]
    pairs_prefix = write_indexed(os.path.join(directory, "pairs"), pairs, "pairs",
                                 {"codebook_size": num_image_tokens, "image_grid": list(image_grid)})
    text_prefix = write_indexed(os.path.join(directory, "text"), texts, "text")
    return pairs_prefix, text_prefix
