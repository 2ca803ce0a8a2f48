"""Text corpus readers, streaming: JSON lines (``.jsonl``, ``.json``), parquet, plain text, each JSON/text format
optionally zstd-compressed (``.zst``).

The paper's text comes as DCLM ``*.json.zst`` (JSON lines despite the name), SlimPajama ``*.jsonl.zst`` and
StarCoder ``*.parquet`` (document in the ``content`` column: ``--text-key content``); all are read as they are.
Nothing loads a file whole (corpus files are often several GB): zstd through a stream reader that continues across
frames (``zstd`` and ``pzstd`` write multi-frame files) with a window limit large enough for ``--long`` archives, and
parquet batch by batch (``iter_batches`` over the one column). ``.txt`` with ``txt_mode='file'`` is the one case that
holds a whole file, by definition of a document.
"""
from __future__ import annotations

import io
import json
import os
from typing import Iterator

import pyarrow.parquet as pq
import zstandard

from .errors import DataError

TEXT_SUFFIXES = (".jsonl", ".json", ".parquet", ".txt")
JSON_LINES = (".jsonl", ".json")
MAX_ZSTD_WINDOW = 1 << 31
"""``zstd --long=31`` archives need a 2 GiB window; the default limit (128 MiB) would refuse them."""
PARQUET_BATCH_ROWS = 1024


def _open_text(path: str):
    if path.endswith(".zst"):
        raw = open(path, "rb")
        stream = zstandard.ZstdDecompressor(max_window_size=MAX_ZSTD_WINDOW).stream_reader(
            raw, read_across_frames=True, closefd=True)
        return io.TextIOWrapper(stream, encoding="utf-8")
    return open(path, "r", encoding="utf-8")


def base_suffix(path: str) -> str:
    p = path[:-4] if path.endswith(".zst") else path
    return os.path.splitext(p)[1]


def _iter_parquet(path: str, text_key: str) -> Iterator:
    if path.endswith(".zst"):
        raise DataError(f"{path}: parquet compresses internally; pass the .parquet file uncompressed")
    try:
        pf = pq.ParquetFile(path)
    except Exception as e:
        raise DataError(f"{path}: not a readable parquet file ({e})") from None
    if text_key not in pf.schema_arrow.names:
        raise DataError(f"{path}: no column {text_key!r} (columns: {pf.schema_arrow.names}); set --text-key")
    for batch in pf.iter_batches(columns=[text_key], batch_size=PARQUET_BATCH_ROWS):
        yield from batch.column(0).to_pylist()


def _iter_json_lines(f, path: str, text_key: str) -> Iterator:
    lineno = 0
    try:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: invalid JSON ({e}); a .json/.jsonl corpus needs one JSON object "
                                "per line") from None
            if not isinstance(obj, dict) or text_key not in obj:
                raise DataError(f"{path}:{lineno}: no field {text_key!r}; set --text-key to the document field")
            yield obj[text_key]
    except zstandard.ZstdError as e:
        raise DataError(f"{path}: zstd stream broken after line {lineno} ({e})") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 after line {lineno} ({e})") from None


def iter_text_documents(path: str, text_key: str = "text", txt_mode: str = "line") -> Iterator:
    """Documents of one file. JSON lines: ``text_key`` of each line; parquet: the ``text_key`` column; txt: one
    document per non-empty line (``txt_mode='line'``) or the whole file (``'file'``). Errors name file and line."""
    suffix = base_suffix(path)
    if suffix not in TEXT_SUFFIXES:
        raise DataError(f"{path}: unsupported text corpus format (use .jsonl, .json, .parquet or .txt, optionally .zst)")
    if suffix == ".parquet":
        yield from _iter_parquet(path, text_key)
        return
    with _open_text(path) as f:
        if suffix in JSON_LINES:
            yield from _iter_json_lines(f, path, text_key)
        elif txt_mode == "file":
            yield f.read()
        else:
            for line in f:
                if line.strip():
                    yield line.rstrip("\n")
