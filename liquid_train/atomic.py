"""Atomic file writes, for the whole project (trainer, converter, data pipeline, tools): write a temp file next to
the target, then rename it over the target.

Why: a run or an encode can be killed at any moment (preemption, OOM, kill -9). Readers then see either the old file
or the complete new one, never a torn one. The default temp name is unique per host and process, because ranks on
several nodes may write the same file on a shared filesystem. It keeps the target's extension, because some writers
(PIL, matplotlib, ``np.save``) pick the format from it. On error the temp file is removed and the target is left as
it was. Standard library only, so the data pipeline can use it on encode nodes without the trainer's packages.
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
    temp file), ``abort`` removes the temp file. For writers that live longer than one ``with`` block (a shard
    uses a fixed, visible temp name such as ``shard-N.tar.partial``)."""

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
    """Yield a temp path to write; on a clean exit it replaces ``path`` (``fsync``: forced to disk first).
    Creates the parent directory."""
    f = AtomicFile(path)
    try:
        yield f.tmp
        f.commit(fsync)
    finally:
        f.abort()


def atomic_write_text(path: str, text: str, fsync: bool = False) -> str:
    """Write ``text`` to ``path`` atomically; ``fsync`` also forces it to disk before the rename (checkpoint
    pointers such as ``latest``, which must survive a power loss)."""
    with atomic_path(path, fsync) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
    return path


def atomic_write_json(path: str, obj, **dump_kwargs) -> str:
    """``json.dump(obj, **dump_kwargs)`` to ``path`` atomically, with a trailing newline."""
    return atomic_write_text(path, json.dumps(obj, **dump_kwargs) + "\n")
