"""Input readers: img2dataset webdataset tars, and jsonl/parquet tables with ``image_path`` + ``text``.

Inputs are cut into *work units* (a whole tar, or a fixed row range of a table). A unit is the unit of output
(one shard), of resumption and of distribution across ranks, so it must be enumerable identically by every rank
without coordination: units are derived from the sorted input list and row counts only.

Each unit yields :class:`RawRecord` objects; a record that cannot even be read yields a record carrying its
rejection reason, so every input is counted exactly once.
"""
from __future__ import annotations

import glob
import json
import os
import tarfile
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence

import pyarrow.parquet as pq

from .errors import DataError
from .preprocess import CORRUPT_RECORD, EMPTY_FILE, MISSING_IMAGE, TRUNCATED_TAR

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
TABLE_EXTS = (".jsonl", ".parquet")


@dataclass(frozen=True)
class WorkUnit:
    index: int
    path: str
    kind: str  # "tar" | "jsonl" | "parquet"
    start: int = 0
    end: Optional[int] = None  # rows [start, end) for tables; None for tars (whole file)
    image_root: Optional[str] = None

    @property
    def num_rows(self) -> Optional[int]:
        return None if self.end is None else self.end - self.start


@dataclass
class RawRecord:
    source: str
    """Where the record came from, stored in the output ``.json``: ``tar#key``, ``table.jsonl:LINE`` (the 1-based
    line number an editor shows) or ``table.parquet:ROW`` (1-based row)."""
    image_bytes: Optional[bytes] = None
    caption: Optional[str] = None
    extra: Dict = field(default_factory=dict)
    reject: Optional[str] = None
    reject_detail: str = ""


def expand_inputs(inputs: Sequence[str]) -> List[str]:
    """Files, directories (searched for tars/jsonl/parquet) and globs -> sorted unique file list."""
    files = set()
    for spec in inputs:
        if os.path.isdir(spec):
            for ext in ("*.tar", "*.jsonl", "*.parquet"):
                files.update(glob.glob(os.path.join(spec, "**", ext), recursive=True))
        elif any(ch in spec for ch in "*?["):
            files.update(glob.glob(spec, recursive=True))
        elif os.path.isfile(spec):
            files.add(spec)
        else:
            raise DataError(f"input {spec}: no such file or directory (expected a .tar, .jsonl, .parquet, dir or glob)")
    bad = sorted(f for f in files if not f.endswith((".tar",) + TABLE_EXTS))
    if bad:
        raise DataError(f"input {bad[0]}: unsupported file type ({len(bad)} such files); expected webdataset .tar, "
                        ".jsonl or .parquet")
    if not files:
        raise DataError(f"inputs {' '.join(inputs)}: no .tar, .jsonl or .parquet files found")
    return sorted(os.path.abspath(f) for f in files)


def _count_jsonl_rows(path: str) -> int:
    n = 0
    with open(path, "rb") as f:
        for line in f:
            if line.strip():
                n += 1
    return n


def _count_parquet_rows(path: str) -> int:
    try:
        return pq.ParquetFile(path).metadata.num_rows
    except Exception as e:
        raise DataError(f"{path}: cannot read parquet metadata ({e}); fix or remove the file") from None


def plan_units(files: Sequence[str], rows_per_shard: int = 10000, image_root: Optional[str] = None) -> List[WorkUnit]:
    units: List[WorkUnit] = []
    for path in files:
        if path.endswith(".tar"):
            units.append(WorkUnit(len(units), path, "tar", image_root=image_root))
            continue
        kind = "jsonl" if path.endswith(".jsonl") else "parquet"
        n = _count_jsonl_rows(path) if kind == "jsonl" else _count_parquet_rows(path)
        for start in range(0, n, rows_per_shard):
            units.append(WorkUnit(len(units), path, kind, start, min(n, start + rows_per_shard), image_root))
    return units


def _key_and_ext(name: str):
    base = os.path.basename(name)
    dirname = os.path.dirname(name)
    if "." not in base:
        return name, ""
    stem, ext = base.split(".", 1)
    return (f"{dirname}/{stem}" if dirname else stem), ext.lower()


def _caption_from_members(members: Dict[str, bytes], extra: Dict) -> Optional[str]:
    if "txt" in members:
        return members["txt"].decode("utf-8", errors="replace")
    for k in ("caption", "text"):
        if isinstance(extra.get(k), str):
            return extra[k]
    return None


def _tar_record(path: str, key: str, members: Dict[str, bytes]) -> RawRecord:
    src = f"{os.path.basename(path)}#{key}"
    extra = {}
    if "json" in members:
        try:
            extra = json.loads(members["json"].decode("utf-8"))
            if not isinstance(extra, dict):
                extra = {}
        except (UnicodeDecodeError, ValueError):  # a broken sidecar carries no extras; the image is judged alone
            extra = {}
    img_ext = next((e for e in IMAGE_EXTS if e in members), None)
    if img_ext is None:
        return RawRecord(src, reject=MISSING_IMAGE, reject_detail=f"members {sorted(members)} hold no image")
    rec = RawRecord(src, image_bytes=members[img_ext], caption=_caption_from_members(members, extra))
    if isinstance(extra.get("url"), str):
        rec.extra["url"] = extra["url"]
    return rec


def iter_tar(path: str) -> Iterator[RawRecord]:
    """Stream a webdataset tar, grouping consecutive members by key (webdataset's convention).

    Written with ``tarfile`` directly rather than webdataset's iterators so that a truncated or corrupt tar ends in
    one accounted ``truncated_tar`` record (the sample being read when it broke) instead of an exception that loses
    the count.
    """
    key, members = None, {}
    try:
        with tarfile.open(path, mode="r|*") as tf:
            for info in tf:
                if not info.isfile():
                    continue
                k, ext = _key_and_ext(info.name)
                if ext == "" or os.path.basename(info.name).startswith("."):
                    continue
                if key is not None and k != key:
                    yield _tar_record(path, key, members)
                    members = {}
                key = k  # set before reading, so a truncation is charged to the sample being read
                data = tf.extractfile(info).read()
                if len(data) != info.size:
                    raise tarfile.ReadError(f"member {info.name} truncated")
                members[ext] = data
    except (tarfile.TarError, EOFError, OSError, ValueError) as e:
        yield RawRecord(f"{os.path.basename(path)}#{key or '?'}", reject=TRUNCATED_TAR,
                        reject_detail=f"{path}: {type(e).__name__}: {e}")
        return
    if key is not None:
        yield _tar_record(path, key, members)


def _table_record(row: Dict, source: str, base_dir: str) -> RawRecord:
    if not isinstance(row, dict):
        return RawRecord(source, reject=CORRUPT_RECORD, reject_detail="row is not an object")
    image_path = row.get("image_path")
    if image_path is None:
        return RawRecord(source, reject=CORRUPT_RECORD, reject_detail="no 'image_path' field")
    if not isinstance(image_path, str):
        return RawRecord(source, reject=CORRUPT_RECORD,
                         reject_detail=f"'image_path' is {type(image_path).__name__}, not a path")
    if not image_path.strip():
        return RawRecord(source, reject=CORRUPT_RECORD, reject_detail="'image_path' is empty")
    full = image_path if os.path.isabs(image_path) else os.path.join(base_dir, image_path)
    try:
        with open(full, "rb") as f:
            data = f.read()
    except OSError as e:
        return RawRecord(source, reject=MISSING_IMAGE, reject_detail=f"{full}: {e.strerror or e}")
    if not data:
        return RawRecord(source, reject=EMPTY_FILE, reject_detail=f"{full}: 0 bytes")
    rec = RawRecord(source, image_bytes=data, caption=row.get("text"))
    rec.extra["image_path"] = image_path
    return rec


def iter_jsonl(unit: WorkUnit) -> Iterator[RawRecord]:
    base_dir = unit.image_root or os.path.dirname(unit.path)
    row = -1  # rows (non-blank lines) define the units; the source names the file line
    with open(unit.path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            row += 1
            if row < unit.start:
                continue
            if row >= unit.end:
                break
            source = f"{os.path.basename(unit.path)}:{lineno}"
            try:
                obj = json.loads(line)
            except ValueError as e:  # json.JSONDecodeError
                yield RawRecord(source, reject=CORRUPT_RECORD, reject_detail=f"bad JSON: {e}")
                continue
            yield _table_record(obj, source, base_dir)


def iter_parquet(unit: WorkUnit) -> Iterator[RawRecord]:
    base_dir = unit.image_root or os.path.dirname(unit.path)
    table = pq.ParquetFile(unit.path)
    cols = [c for c in ("image_path", "text") if c in table.schema_arrow.names]
    row = 0
    for batch in table.iter_batches(batch_size=4096, columns=cols):
        for obj in batch.to_pylist():
            if unit.start <= row < unit.end:
                yield _table_record(obj, f"{os.path.basename(unit.path)}:{row + 1}", base_dir)
            row += 1
            if row >= unit.end:
                return


def iter_unit(unit: WorkUnit) -> Iterator[RawRecord]:
    if unit.kind == "tar":
        return iter_tar(unit.path)
    if unit.kind == "jsonl":
        return iter_jsonl(unit)
    return iter_parquet(unit)
