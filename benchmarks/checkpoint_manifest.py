"""Cost of checkpoint manifests: hashing every file of a checkpoint (XXH3-128, streamed) as a percentage of the
save itself, and verifying it as a percentage of the load, at realistic shard sizes, on CPU.

The save is megatron-core's ``dist_checkpointing.save`` (torch_dist, its forked writers, fsync), the same call the
trainer makes; the manifest is what ``CheckpointManager`` does after it (list, hash, write ``manifest.json``).
Right after a save the files are in the page cache (what the trainer hashes); a verification before a resume may
read them from disk, so it is also timed after evicting them (``posix_fadvise(DONTNEED)``), next to a load from
the same cold cache. SHA-256 (``strong_digest``, for checking a checkpoint against a hash you trust) is timed for
comparison. All timings of a size come from the same run; the median of ``--repeats`` is printed.

Usage: python benchmarks/checkpoint_manifest.py [--sizes-mib 256 1024] [--repeats 3] [--dir /tmp/...]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time

import torch
from megatron.core import dist_checkpointing
from megatron.core.dist_checkpointing.mapping import ShardedTensor

from liquid_train import parallel
from liquid_train.training import checkpoint as ckpt
from liquid_train.training import ckpt_manifest


def _state_dict(total_bytes: int, tensor_mib: int = 64):
    """fp32 tensors of ``tensor_mib`` each (a layer's weights or Adam moments), as megatron ShardedTensors."""
    n = max(1, total_bytes // (tensor_mib << 20))
    g = torch.Generator().manual_seed(0)
    numel = (tensor_mib << 20) // 4
    return {f"layer{i}.weight": ShardedTensor.from_rank_offsets(f"layer{i}.weight",
                                                                torch.randn(numel, generator=g))
            for i in range(n)}


def _empty_like(st):
    """An empty ShardedTensor of the same shape to load into."""
    return ShardedTensor.from_rank_offsets(st.key, torch.empty_like(st.data))


def _evict(ckpt: str) -> None:
    for name in ckpt_manifest.list_files(ckpt):
        fd = os.open(os.path.join(ckpt, name), os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


class _ManifestClock:
    """Times what a save spends on the manifest (checksums + ``manifest.json``) on the training thread, by
    wrapping the two ``ckpt_manifest`` functions ``CheckpointManager`` calls for it."""

    def __init__(self):
        self.seconds = 0.0
        for name in ("describe", "write_manifest"):
            setattr(ckpt_manifest, name, self._wrap(getattr(ckpt_manifest, name)))

    def _wrap(self, fn):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start

        return timed

    def lap(self) -> float:
        seconds, self.seconds = self.seconds, 0.0
        return seconds


def measure(size_mib: int, root: str, repeats: int, clock: _ManifestClock):
    sd = _state_dict(size_mib << 20)
    keep = repeats + 1  # no pruning inside the timings
    sync = ckpt.CheckpointManager(os.path.join(root, f"sync{size_mib}"), keep_last=keep)
    background = ckpt.CheckpointManager(os.path.join(root, f"async{size_mib}"), keep_last=keep, async_save=True)
    sync.save(0, _state_dict(64 << 20), {})  # the first save of a process starts megatron's writer helpers
    background.save(0, _state_dict(64 << 20), {})
    background.finalize(blocking=True)
    clock.lap()
    rows = {k: [] for k in ("save", "manifest", "async_stall", "verify_cold", "load_cold", "sha256_cold")}
    for step in range(1, repeats + 1):
        t, _ = _timed(lambda: sync.save(step, sd, {}))
        manifest = clock.lap()
        rows["save"].append(t - manifest)  # the dist checkpoint alone (megatron's save, rename, latest)
        rows["manifest"].append(manifest)
        background.save(step, sd, {})
        background.finalize(blocking=True)
        rows["async_stall"].append(clock.lap())  # shard checksums were taken by the async writer
        path = os.path.join(sync.ckpt_dir, ckpt.iter_dirname(step))
        _evict(path)
        t, problem = _timed(lambda: ckpt_manifest.verify(path))
        assert problem is None, problem
        rows["verify_cold"].append(t)
        _evict(path)
        template = {k: _empty_like(v) for k, v in sd.items()}
        rows["load_cold"].append(_timed(lambda: dist_checkpointing.load(template, path))[0])
        _evict(path)
        rows["sha256_cold"].append(_timed(lambda: ckpt_manifest.strong_digest(path))[0])
    sync.close()
    background.close()
    return {k: statistics.median(v) for k, v in rows.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes-mib", type=int, nargs="+", default=[256, 1024])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dir", default=None, help="where to write (default: a temp dir under /tmp)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    parallel.initialize_parallel(1, 1)  # one gloo process (and megatron's CPU shims without a GPU)
    clock = _ManifestClock()
    root = tempfile.mkdtemp(prefix="ckpt-manifest-bench-", dir=args.dir)
    try:
        print("| shard | save | manifest (sync) | manifest / save | manifest (async, training thread) | verify (cold) | load (cold) "
              "| verify / load | sha256 (cold) |")
        print("|---|---|---|---|---|---|---|---|---|")
        for size in args.sizes_mib:
            t = measure(size, root, args.repeats, clock)
            print(f"| {size} MiB | {t['save']:.2f} s | {t['manifest']:.3f} s | {100 * t['manifest'] / t['save']:.1f}% "
                  f"| {t['async_stall']:.3f} s | {t['verify_cold']:.3f} s | {t['load_cold']:.2f} s | "
                  f"{100 * t['verify_cold'] / t['load_cold']:.1f}% | {t['sha256_cold']:.2f} s |", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
        parallel.destroy_parallel()


if __name__ == "__main__":
    main()
