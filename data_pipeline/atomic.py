"""Atomic file writes for the data pipeline: write a temp file next to the target, then rename it over the target.

Why: an encode or build can be killed at any moment (preemption, OOM, kill -9); readers then see the old file or the
complete new one, never a torn one. The default temp name is unique per host and process, because ranks on several
nodes write ``summary.json`` into one shared directory, and it keeps the target's extension, because some writers
(PIL, matplotlib, ``torch.save`` users) pick the format from it. A shard uses a fixed, visible temp name instead
(``shard-N.tar.partial``): exactly one rank writes it, and the name tells a person what is in progress.

``data_pipeline`` does not import ``liquid_train`` (it runs on encode nodes without the trainer), so it carries this
small helper of its own.
"""
from __future__ import annotations

import json
import os
import socket
from contextlib import contextmanager
from typing import Iterator, Optional


def default_tmp(path: str) -> str:
    _, ext = os.path.splitext(path)
    return f"{path}.{socket.gethostname()}.{os.getpid()}.tmp{ext}"


class AtomicFile:
    """A target path and the temp path it is written under. ``commit`` renames (after an optional fsync of the
    temp file), ``abort`` removes the temp file. For writers that live longer than one ``with`` block."""

    def __init__(self, path: str, tmp: Optional[str] = None):
        self.path = path
        self.tmp = tmp or default_tmp(path)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)

    def commit(self, fsync: bool = False) -> str:
        if fsync:
            fd = os.open(self.tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        if os.path.exists(self.tmp):
            os.unlink(self.tmp)


@contextmanager
def atomic_path(path: str, fsync: bool = False) -> Iterator[str]:
    """Yield a temp path to write; on a clean exit it replaces ``path``. Creates the parent directory; on an
    error the temp file is removed and ``path`` is left as it was."""
    f = AtomicFile(path)
    try:
        yield f.tmp
        f.commit(fsync)
    finally:
        f.abort()


def atomic_write_text(path: str, text: str, fsync: bool = False) -> str:
    with atomic_path(path, fsync) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
    return path


def atomic_write_json(path: str, obj) -> str:
    """Indented, key-sorted JSON (sidecars and summaries are compared byte for byte across reruns)."""
    return atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True) + "\n")
