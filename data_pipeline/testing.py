"""Small inputs in the real on-disk formats, for tests and benchmarks (no downloads): img2dataset-style tars,
jsonl/parquet tables with ``image_path`` + ``text``, and a word-level Hugging Face tokenizer directory."""
from __future__ import annotations

import io
import json
import tarfile
from typing import Dict, Iterable, List, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast


def image_bytes(width: int, height: int, seed: int, fmt: str = "PNG") -> bytes:
    """A smooth random image (gradients + blobs), so JPEG/LANCZOS behave as on photos, not on noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.zeros((height, width, 3), np.float32)
    for c in range(3):
        a, b, p = rng.uniform(-1, 1, 3)
        img[..., c] = 127 + 100 * np.sin(a * xx / 9 + b * yy / 7 + p * 6)
    buf = io.BytesIO()
    Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(buf, fmt)
    return buf.getvalue()


def add_member(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


def write_wds_tar(path: str, samples: Sequence[Dict[str, bytes]]) -> str:
    """``samples``: dicts of extension -> bytes plus ``"__key__"``; written in order like img2dataset."""
    with tarfile.open(path, "w") as tf:
        for s in samples:
            for ext, data in s.items():
                if ext != "__key__":
                    add_member(tf, f"{s['__key__']}.{ext}", data)
    return path


def write_jsonl_table(path: str, rows: Iterable[Dict]) -> str:
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return path


def write_parquet_table(path: str, rows: List[Dict]) -> str:
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def make_word_tokenizer(out_dir: str, words: Iterable[str]) -> str:
    """A word-level HF tokenizer (whitespace pre-tokenizer, ``[UNK]``) saved with ``save_pretrained``.

    Word-level keeps read-back checks exact: token ids map one-to-one to words.
    """
    vocab = {"[UNK]": 0, "[BOS]": 1, "[EOS]": 2, "[PAD]": 3}
    for w in words:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", bos_token="[BOS]", eos_token="[EOS]",
                                   pad_token="[PAD]")
    fast.save_pretrained(out_dir)
    return out_dir
