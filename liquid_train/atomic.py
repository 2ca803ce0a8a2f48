"""Atomic file writes: write a temp file next to the target, then rename it over the target.

Why: a run can be killed at any moment (preemption, OOM, kill -9). Readers then see either the old file or the
complete new one, never a torn one. The temp name is unique per host and process, because ranks on several
nodes may write the same file on a shared filesystem. It keeps the target's extension, because some writers
(PIL, matplotlib, ``np.save``) pick the format from it. On error the temp file is removed and the target is left
as it was.
"""
from __future__ import annotations

import json
import os
import socket
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yield a temp path to write; on a clean exit it replaces ``path``. Creates the parent directory."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    _, ext = os.path.splitext(path)
    tmp = f"{path}.{socket.gethostname()}.{os.getpid()}.tmp{ext}"
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: str, text: str, fsync: bool = False) -> str:
    """Write ``text`` to ``path`` atomically; ``fsync`` also forces it to disk before the rename (checkpoint
    pointers such as ``latest``, which must survive a power loss)."""
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            f.write(text)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
    return path


def atomic_write_json(path: str, obj, **dump_kwargs) -> str:
    """``json.dump(obj, **dump_kwargs)`` to ``path`` atomically, with a trailing newline."""
    return atomic_write_text(path, json.dumps(obj, **dump_kwargs) + "\n")
