"""Checkpoint manifests: every file of a checkpoint with its size and a streamed checksum, checked before loading.

Why: a dist checkpoint loads without complaint when bytes inside a shard have changed (a bit flip in the
embedding weights gave a loss of 815 instead of 4.3 and exit code 0), and a truncated or missing file fails deep
inside torch with an error that names no file. ``manifest.json`` is written last, just before the checkpoint
directory is renamed into place, so a checkpoint either has a manifest that describes it exactly or is not a
checkpoint. Verifying it names the first bad file and why.

The checksum is XXH3-128 (``xxhash``): it streams at memory speed, so it adds a few percent to a save (see
docs/benchmarks.md). It detects accidents (bit rot, truncated copies, a full disk), not tampering: it is not a
cryptographic hash. :func:`strong_digest` (SHA-256 over every file) is the value to compare against one published
by whoever made a checkpoint you did not make yourself (``python -m liquid_train.training.ckpt_manifest
<dir> --expect <sha256>``, which compares it before parsing anything).

Checkpoints without a manifest (made before manifests existed, or model checkpoints written by
``hf-to-megatron``) get :func:`check_structure`: metadata files parse and every stored item lies inside its file,
which catches missing and truncated files but not changed bytes.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import zipfile
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional

import xxhash
from torch.distributed.checkpoint import FileSystemReader

from liquid_train.atomic import atomic_write_text

MANIFEST = "manifest.json"
FORMAT = "liquid-train-checkpoint-manifest/1"
HASH = "xxh3_128"
PART_PREFIX = ".manifest-part-"  # a rank's shard checksums, computed by its async writer, consumed by describe
_CHUNK = 8 << 20
_RANK_FILE_RE = re.compile(r"^__(\d+)_\d+\.distcp$")


@dataclass(frozen=True)
class Problem:
    """Why a checkpoint does not verify: ``reason`` is one word (used in the moved-aside name), ``file`` the first
    bad file (relative to the checkpoint), ``detail`` a short sentence."""

    reason: str
    file: str
    detail: str

    def __str__(self) -> str:
        return f"{self.file}: {self.detail}"


def hash_file(path: str) -> str:
    """XXH3-128 hex digest of a file, read in 8 MiB chunks into one reused buffer."""
    h = xxhash.xxh3_128()
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while True:
            n = f.readinto(buf)
            if not n:
                break
            h.update(view[:n])
    return h.hexdigest()


def list_files(ckpt: str) -> List[str]:
    """Every regular file under ``ckpt`` except the manifest (and its parts), as sorted relative paths."""
    names = []
    for root, _, files in os.walk(ckpt):
        for name in files:
            rel = os.path.relpath(os.path.join(root, name), ckpt)
            if rel != MANIFEST and not rel.startswith(PART_PREFIX):
                names.append(rel)
    return sorted(names)


def owner(name: str, index: int, world: int) -> int:
    """The rank that hashes (and verifies) ``name``: a rank's own ``__<rank>_<i>.distcp`` shards are still in its
    page cache after the save; other files go round-robin."""
    m = _RANK_FILE_RE.match(os.path.basename(name))
    if m and int(m.group(1)) < world:
        return int(m.group(1))
    return index % world


def describe(ckpt: str, names: Iterable[str], rank: int = 0, world: int = 1) -> Dict[str, Dict]:
    """``{name: {"size", HASH}}`` for the files of ``names`` that ``rank`` owns. Checksums its async writer already
    computed (:func:`hash_own_shards`) are used when the size still matches; the part file is then removed."""
    part_path = os.path.join(ckpt, f"{PART_PREFIX}{rank}.json")
    known: Dict[str, Dict] = {}
    if os.path.exists(part_path):
        try:
            with open(part_path) as f:
                known = json.load(f)
        except (OSError, ValueError):
            known = {}
        os.unlink(part_path)
    out = {}
    for i, name in enumerate(names):
        if owner(name, i, world) == rank:
            path = os.path.join(ckpt, name)
            size = os.path.getsize(path)
            entry = known.get(name)
            if not (isinstance(entry, dict) and entry.get("size") == size and entry.get(HASH)):
                entry = {"size": size, HASH: hash_file(path)}
            out[name] = entry
    return out


def hash_own_shards(ckpt: str, rank: int) -> None:
    """Checksum this rank's ``__<rank>_*.distcp`` shards into a part file for :func:`describe`. Called by the async
    writer process right after it wrote them, so that the training thread does not read them again."""
    names = [n for n in os.listdir(ckpt) if (m := _RANK_FILE_RE.match(n)) and int(m.group(1)) == rank]
    entries = {n: {"size": os.path.getsize(os.path.join(ckpt, n)), HASH: hash_file(os.path.join(ckpt, n))}
               for n in names}
    atomic_write_text(os.path.join(ckpt, f"{PART_PREFIX}{rank}.json"), json.dumps(entries))


def write_manifest(ckpt: str, files: Dict[str, Dict], step: int, layout: Optional[Dict] = None) -> str:
    """Write ``manifest.json`` (atomically, fsynced) from :func:`describe` entries of all ranks."""
    doc = {"format": FORMAT, "hash": HASH, "step": step, "layout": layout or {},
           "files": {name: files[name] for name in sorted(files)}}
    return atomic_write_text(os.path.join(ckpt, MANIFEST), json.dumps(doc, indent=1) + "\n", fsync=True)


def read_manifest(ckpt: str):
    """The manifest as a dict, None when there is none, or a :class:`Problem` when it cannot be used."""
    path = os.path.join(ckpt, MANIFEST)
    if not os.path.exists(path):
        return None
    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read().decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return Problem("manifest", MANIFEST, f"unreadable ({type(exc).__name__}: {exc})")
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("files"), dict):
        return Problem("manifest", MANIFEST, f"not a {FORMAT} manifest")
    return doc


def verify(ckpt: str, rank: int = 0, world: int = 1) -> Optional[Problem]:
    """The first problem of ``ckpt`` against its manifest, or None. Every rank checks that every file exists
    with its size; each rank hashes only the files it :func:`owner`-s (call on all ranks and combine).

    Raises ``FileNotFoundError`` when there is no manifest (see :func:`check_structure`)."""
    doc = read_manifest(ckpt)
    if doc is None:
        raise FileNotFoundError(os.path.join(ckpt, MANIFEST))
    if isinstance(doc, Problem):
        return doc
    files = doc["files"]
    for name, entry in files.items():
        path = os.path.join(ckpt, name)
        if not os.path.isfile(path):
            return Problem("missing", name, "missing")
        size = os.path.getsize(path)
        if size != entry.get("size"):
            kind = "truncated" if size < entry.get("size", 0) else "size"
            return Problem(kind, name, f"{size} bytes, the manifest says {entry.get('size')}")
    for i, (name, entry) in enumerate(files.items()):
        if owner(name, i, world) == rank and hash_file(os.path.join(ckpt, name)) != entry.get(HASH):
            return Problem("checksum", name, f"{HASH} checksum differs from the manifest (the bytes changed)")
    return None


def check_structure(ckpt: str) -> Optional[Problem]:
    """For a checkpoint without a manifest: ``metadata.json`` parses, ``common.pt`` is a complete zip, and (torch
    DCP) every stored item of ``.metadata`` lies inside its file. Note: reading ``.metadata`` unpickles it."""
    meta_path = os.path.join(ckpt, "metadata.json")
    if not os.path.isfile(meta_path):
        return Problem("missing", "metadata.json", "missing (not a dist checkpoint?)")
    try:
        with open(meta_path, "rb") as f:
            meta = json.loads(f.read().decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return Problem("structure", "metadata.json", f"unreadable ({type(exc).__name__})")
    common = os.path.join(ckpt, "common.pt")
    if os.path.exists(common) and not zipfile.is_zipfile(common):
        return Problem("truncated", "common.pt", "not a complete torch file (truncated?)")
    if not isinstance(meta, dict) or meta.get("sharded_backend") != "torch_dist":
        return None
    if not os.path.isfile(os.path.join(ckpt, ".metadata")):
        return Problem("missing", ".metadata", "missing")

    try:
        storage = FileSystemReader(ckpt).read_metadata().storage_data
    except Exception as exc:  # torch raises what unpickling a damaged file raises (EOFError, UnpicklingError...)
        return Problem("structure", ".metadata", f"unreadable ({type(exc).__name__})")
    ends: Dict[str, int] = {}
    for info in storage.values():
        ends[info.relative_path] = max(ends.get(info.relative_path, 0), info.offset + info.length)
    for name in sorted(ends):
        path = os.path.join(ckpt, name)
        if not os.path.isfile(path):
            return Problem("missing", name, "missing")
        if os.path.getsize(path) < ends[name]:
            return Problem("truncated", name, f"{os.path.getsize(path)} bytes, items end at {ends[name]}")
    return None


def strong_digest(ckpt: str) -> str:
    """SHA-256 over every file but the manifest, in name order (name, size, bytes): one value to compare with one
    you trust. Reads bytes only (unpickles nothing)."""
    h = hashlib.sha256()
    for name in list_files(ckpt):
        path = os.path.join(ckpt, name)
        h.update(f"{name}\0{os.path.getsize(path)}\0".encode())
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(_CHUNK), b""):
                h.update(chunk)
    return h.hexdigest()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m liquid_train.training.ckpt_manifest",
        description="Verify a checkpoint directory against its manifest and print its SHA-256 digest.")
    parser.add_argument("ckpt", help="a checkpoint directory (iter_*)")
    parser.add_argument("--expect", help="the SHA-256 digest you trust: compared first, before anything is parsed; "
                                         "exit 1 if it differs")
    parser.add_argument("--write-manifest", action="store_true",
                        help="write manifest.json from the files as they are now (a checkpoint without one that you "
                             "know is good, e.g. repaired by hand); the step is read from trainer_state.json")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.ckpt):
        print(f"error: {args.ckpt} is not a directory", file=sys.stderr)
        return 2
    digest = strong_digest(args.ckpt)
    if args.expect and args.expect.lower() != digest:
        print(f"error: {args.ckpt}: sha256 {digest} differs from --expect {args.expect}; do not load it",
              file=sys.stderr)
        return 1
    if args.write_manifest:
        step = None
        try:
            with open(os.path.join(args.ckpt, "trainer_state.json")) as f:
                step = json.load(f).get("iteration")
        except (OSError, ValueError):
            pass
        write_manifest(args.ckpt, describe(args.ckpt, list_files(args.ckpt)), step=step)
    try:
        problem = verify(args.ckpt)
    except FileNotFoundError:
        print(f"{args.ckpt}: no {MANIFEST}; checking the structure only (this unpickles .metadata)")
        problem = check_structure(args.ckpt)
    if problem is not None:
        print(f"error: {args.ckpt}: {problem}", file=sys.stderr)
        return 2
    print(f"{args.ckpt}: verifies; sha256 {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
