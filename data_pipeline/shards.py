"""Writing VQ code shards (docs/data_format.md) atomically and reproducibly, and reading them back.

A shard is written to ``<name>.partial`` and renamed when complete; its sidecar ``<name>.json`` is written last and
marks it done, so a preempted run leaves either a finished shard or nothing that counts (both through
``atomic.py``). Tar headers carry fixed
mtime/owner so a rerun produces byte-identical shards.
"""
from __future__ import annotations

import glob
import io
import json
import os
import tarfile
from typing import Dict, Iterator, List

import numpy as np
import webdataset as wds

from liquid_train.atomic import AtomicFile, atomic_write_json

SHARD_PATTERN = "shard-{:06d}.tar"


def shard_path(out_dir: str, unit_index: int) -> str:
    return os.path.join(out_dir, SHARD_PATTERN.format(unit_index))


def sidecar_path(shard: str) -> str:
    return shard + ".json"


def npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


class ShardWriter:
    """One output shard in progress."""

    def __init__(self, path: str):
        self.path = path
        self._atomic = AtomicFile(path, tmp=path + ".partial")
        self.partial = self._atomic.tmp
        self._file = open(self.partial, "wb")
        self._tar = wds.TarWriter(self._file, encoder=False, mtime=0.0, user="liquid", group="liquid", mode=0o444)
        self.count = 0

    def write(self, key: str, codes: np.ndarray, caption: str, meta: Dict) -> None:
        self._tar.write({
            "__key__": key,
            "codes.npy": npy_bytes(codes.astype(np.int16)),
            "txt": caption.encode("utf-8"),
            "json": json.dumps(meta, sort_keys=True, ensure_ascii=False).encode("utf-8"),
        })
        self.count += 1

    def commit(self, sidecar: Dict) -> None:
        self._tar.close()
        self._file.close()
        self._atomic.commit(fsync=True)
        atomic_write_json(sidecar_path(self.path), sidecar, indent=1, sort_keys=True)

    def abort(self) -> None:
        try:
            self._tar.close()
            self._file.close()
        finally:
            self._atomic.abort()


def is_done(out_dir: str, unit_index: int) -> bool:
    p = shard_path(out_dir, unit_index)
    return os.path.exists(p) and os.path.exists(sidecar_path(p))


def finished_shards(out_dir: str) -> List[str]:
    return sorted(p for p in glob.glob(os.path.join(out_dir, "shard-*.tar")) if os.path.exists(sidecar_path(p)))


def read_sidecar(shard: str) -> Dict:
    with open(sidecar_path(shard)) as f:
        return json.load(f)


def iter_shard(path: str) -> Iterator[Dict]:
    """Yields ``{"key", "codes" (int16 [h,w]), "caption", "meta"}`` in stored order."""
    with tarfile.open(path, "r|") as tf:
        current: Dict = {}
        for info in tf:
            name = info.name
            key, ext = name.split(".", 1)
            data = tf.extractfile(info).read()
            if current and current["key"] != key:
                yield current
                current = {}
            current["key"] = key
            if ext == "codes.npy":
                current["codes"] = np.load(io.BytesIO(data), allow_pickle=False)
            elif ext == "txt":
                current["caption"] = data.decode("utf-8")
            elif ext == "json":
                current["meta"] = json.loads(data)
        if current:
            yield current
