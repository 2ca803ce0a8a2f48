"""Text corpus readers: jsonl / parquet / txt, each optionally zstd-compressed (``.zst``)."""
from __future__ import annotations

import io
import json
import os
from typing import Iterator

TEXT_SUFFIXES = (".jsonl", ".json", ".parquet", ".txt")


def _open_text(path: str):
    if path.endswith(".zst"):
        import zstandard
        raw = open(path, "rb")
        stream = zstandard.ZstdDecompressor().stream_reader(raw)
        return io.TextIOWrapper(stream, encoding="utf-8")
    return open(path, "r", encoding="utf-8")


def _base_suffix(path: str) -> str:
    p = path[:-4] if path.endswith(".zst") else path
    return os.path.splitext(p)[1]


def iter_text_documents(path: str, text_key: str = "text", txt_mode: str = "line") -> Iterator[str]:
    """Documents of one file. jsonl: ``text_key`` of each line; parquet: the ``text_key`` column;
    txt: one document per non-empty line (``txt_mode='line'``) or the whole file (``'file'``)."""
    suffix = _base_suffix(path)
    if suffix not in TEXT_SUFFIXES:
        raise ValueError(f"{path}: unsupported text corpus format (use .jsonl, .parquet or .txt, optionally .zst)")
    if suffix == ".parquet":
        import pyarrow.parquet as pq
        if path.endswith(".zst"):
            raise ValueError(f"{path}: parquet compresses internally; pass the .parquet file uncompressed")
        pf = pq.ParquetFile(path)
        if text_key not in pf.schema_arrow.names:
            raise ValueError(f"{path}: no column {text_key!r} (columns: {pf.schema_arrow.names}); set --text-key")
        for batch in pf.iter_batches(columns=[text_key], batch_size=4096):
            yield from batch.column(0).to_pylist()
        return
    with _open_text(path) as f:
        if suffix == ".txt":
            if txt_mode == "file":
                yield f.read()
            else:
                for line in f:
                    if line.strip():
                        yield line.rstrip("\n")
            return
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: invalid JSON ({e})") from None
            if not isinstance(obj, dict) or text_key not in obj:
                raise ValueError(f"{path}:{lineno}: no field {text_key!r}; set --text-key to the document field")
            yield obj[text_key]
