"""``python -m data_pipeline encode``: image-text pairs -> VQ code shards, batched, distributed, resumable.

Pipeline per process: DataLoader workers read and decode images of whole work units (CPU-bound, parallel) and hand
over uint8 batches; the main process normalises on the device, encodes a batch at once (bf16 + channels_last on
GPU), and appends to that unit's shard. Batches never mix units, so a unit re-encoded after preemption yields the
same bytes as an uninterrupted run.

Order of a run, so that bad input costs nothing: inputs are found and planned, the output directory is checked
(a directory or creatable, writable), the recorded settings are compared (``settings.py``), and only then is the VQ
loaded and the output directory created. Every problem on the way is one :class:`DataError` line.
"""
from __future__ import annotations

import collections
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from tqdm import tqdm

from liquid_train.atomic import atomic_write_json

from .distributed import RankInfo, detect_rank
from .errors import DataError
from .preprocess import PreprocessConfig, Rejected, clean_caption, decode_image, preprocess_image
from .readers import WorkUnit, expand_inputs, iter_unit, plan_units
from .settings import (SETTINGS_FILE, check_output_dir, encode_settings, first_difference, forced_output_dir,
                       mismatch_error, read_settings, record_settings, settings_hash)
from .shards import ShardWriter, finished_shards, is_done, read_sidecar, shard_path
from .threads import WorkerThreads, default_threads, set_threads
from .vq import load_vq_tokenizer

log = logging.getLogger(__name__)
MAX_ERRORS_KEPT = 20


@dataclass
class EncodeConfig:
    inputs: List[str]
    output_dir: str
    vq_tokenizer: str = "chameleon-vqgan"
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    batch_size: int = 64
    num_workers: int = 4
    rows_per_shard: int = 10000
    """Rows of a jsonl/parquet input per output shard (a webdataset input tar maps to one shard)."""
    image_root: Optional[str] = None
    """Base directory for relative ``image_path`` values (default: the table's directory)."""
    device: str = "auto"
    dtype: Optional[str] = None
    """Encoder compute dtype: bfloat16 on GPU and float32 on CPU by default."""
    rank: Optional[int] = None
    world_size: Optional[int] = None
    max_units: Optional[int] = None
    """Stop after this many units (for smoke runs)."""
    progress: bool = True
    threads: Optional[int] = None
    """torch intra-op threads of the encoder process and of each decode worker; None -> cores // (workers + 1)."""
    force: bool = False
    """If the output directory holds an output made with other settings, start a new one next to it."""


class UnitBatches(IterableDataset):
    """Yields per-unit batches: ``{"unit", "keys", "pixels" uint8 [B,3,S,S], "captions", "metas", "rejected",
    "errors", "read", "final"}``. Each worker owns whole units, so a unit's batches arrive in order."""

    def __init__(self, units: Sequence[WorkUnit], pre: PreprocessConfig, batch_size: int, vq_name: str):
        self.units, self.pre, self.batch_size, self.vq_name = list(units), pre, batch_size, vq_name

    def __iter__(self):
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        for unit in self.units[wid::nw]:
            yield from self._unit_batches(unit)

    def _empty(self, unit: WorkUnit) -> Dict:
        return {"unit": unit.index, "keys": [], "pixels": [], "captions": [], "metas": [],
                "rejected": collections.Counter(), "errors": [], "read": 0, "final": False}

    def _unit_batches(self, unit: WorkUnit) -> Iterator[Dict]:
        batch = self._empty(unit)
        for position, rec in enumerate(iter_unit(unit)):
            batch["read"] += 1
            try:
                if rec.reject:
                    raise Rejected(rec.reject, rec.reject_detail)
                caption = clean_caption(rec.caption)
                pixels, meta = preprocess_image(decode_image(rec.image_bytes, self.pre), self.pre)
            except Rejected as r:
                batch["rejected"][r.reason] += 1
                if len(batch["errors"]) < MAX_ERRORS_KEPT:
                    batch["errors"].append(f"{rec.source}: {r}")
                continue
            batch["keys"].append(f"{unit.index:06d}_{position:07d}")
            batch["pixels"].append(pixels)
            batch["captions"].append(caption)
            batch["metas"].append({"source": rec.source, **meta, **rec.extra, "vq_tokenizer": self.vq_name,
                                   "resolution": self.pre.resolution})
            if len(batch["pixels"]) == self.batch_size:
                yield self._finish(batch)
                batch = self._empty(unit)
        batch["final"] = True
        yield self._finish(batch)

    @staticmethod
    def _finish(batch: Dict) -> Dict:
        batch["pixels"] = torch.from_numpy(np.stack(batch["pixels"])) if batch["pixels"] else None
        batch["rejected"] = dict(batch["rejected"])
        return batch


def _resolve_device(name: str, local_rank: int) -> torch.device:
    """``auto``: this process's GPU (local rank; modulo the visible GPUs, for clusters that give each task only
    its own GPU as cuda:0), else the CPU."""
    if name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device(f"cuda:{local_rank % torch.cuda.device_count()}")
    try:
        return torch.device(name)
    except RuntimeError as e:
        raise DataError(f"--device {name}: {e}; use auto, cpu, cuda or cuda:N") from None


def write_summary(out_dir: str, run_stats: Optional[Dict] = None) -> Dict:
    """``summary.json``: the recorded settings and the sums over every finished shard's sidecar (from all ranks).

    Describes what is on disk, not this process's flags. Ranks finishing together may each write it; each lists the
    finished shards again after writing and rewrites while that list changed, so the last writer saw every shard.
    """
    with open(os.path.join(out_dir, SETTINGS_FILE)) as f:
        settings = json.load(f)
    shards, summary = None, {}
    while True:
        listed = finished_shards(out_dir)
        if listed == shards:
            return summary
        shards = listed
        read = written = 0
        rejected = collections.Counter()
        for shard in shards:
            side = read_sidecar(shard)
            read += side["read"]
            written += side["written"]
            rejected.update(side["rejected"])
        units_total = settings["units_total"]
        summary = {
            "units_total": units_total, "units_done": len(shards), "complete": len(shards) == units_total,
            "read": read, "written": written, "rejected": dict(sorted(rejected.items())),
            "rejected_total": sum(rejected.values()), "balanced": read == written + sum(rejected.values()),
            "vq_tokenizer": settings["vq_tokenizer"], "resolution": settings["resolution"], "settings": settings,
            "settings_hash": settings_hash(settings), "inputs": settings["inputs"],
        }
        if run_stats:
            summary["last_run"] = run_stats
        atomic_write_json(os.path.join(out_dir, "summary.json"), summary, indent=1, sort_keys=True)


def _plan(cfg: EncodeConfig):
    """Input files (never our own output shards) and their work units. Creates nothing."""
    out_abs = os.path.abspath(cfg.output_dir) + os.sep
    files = [f for f in expand_inputs(cfg.inputs)
             if not f.startswith(out_abs) and not os.path.exists(os.path.join(os.path.dirname(f), SETTINGS_FILE))]
    if not files:
        raise DataError(f"inputs {' '.join(cfg.inputs)}: no input files outside encode outputs "
                        f"(the output directory {cfg.output_dir} and directories holding {SETTINGS_FILE})")
    if cfg.rows_per_shard < 1:
        raise DataError(f"--rows-per-shard must be >= 1, got {cfg.rows_per_shard}")
    return files, plan_units(files, cfg.rows_per_shard, cfg.image_root)


def _resolve_dtype(cfg: EncodeConfig, device: torch.device) -> str:
    return cfg.dtype or ("bfloat16" if device.type == "cuda" else "float32")


def _choose_output(cfg: EncodeConfig, wanted: Dict, load_tokenizer) -> tuple:
    """(output dir, full settings, tokenizer): checks the record before and after the VQ is loaded."""
    out = cfg.output_dir
    check_output_dir(out)
    recorded = read_settings(out)
    diff = first_difference(recorded, wanted) if recorded is not None else None
    if diff and not cfg.force:
        raise mismatch_error(out, diff[1])
    tokenizer = load_tokenizer()
    identity = getattr(tokenizer, "identity", None)
    if identity is None:
        raise TypeError("the tokenizer passed to run_encode needs an `identity` (see VQTokenizer.identity)")
    settings = dict(wanted, vq_tokenizer=tokenizer.name, vq_identity=identity)
    if recorded is not None and diff is None:
        diff = first_difference(recorded, settings)
        if diff and not cfg.force:
            raise mismatch_error(out, diff[1])
    if diff:
        out = forced_output_dir(cfg.output_dir, settings)
        print(f"liquid-data encode: {diff[1]}; --force: writing a new output in {out}", file=sys.stderr)
        check_output_dir(out)
        again = read_settings(out)
        if again is not None and first_difference(again, settings):
            raise mismatch_error(out, first_difference(again, settings)[1])
    return out, settings, tokenizer


def run_encode(cfg: EncodeConfig, tokenizer=None) -> Dict:
    """Encode this rank's unfinished units; returns this rank's run stats and the summary of the output on disk
    (``result["output_dir"]`` is where it went: ``cfg.output_dir``, or the new directory ``--force`` chose)."""
    try:
        ranks: RankInfo = detect_rank(rank=cfg.rank, world_size=cfg.world_size)
    except ValueError as e:
        raise DataError(str(e)) from None
    files, units = _plan(cfg)
    device = _resolve_device(cfg.device, ranks.local_rank)
    wanted = encode_settings(cfg.preprocess, files, len(units), cfg.rows_per_shard, cfg.image_root,
                             _resolve_dtype(cfg, device))

    def load():
        if tokenizer is not None:
            return tokenizer
        return load_vq_tokenizer(cfg.vq_tokenizer, device=device, dtype=getattr(torch, _resolve_dtype(cfg, device)))

    out_dir, settings, tokenizer = _choose_output(cfg, wanted, load)
    os.makedirs(out_dir, exist_ok=True)
    record_settings(out_dir, settings)
    mine = [u for u in units if u.index % ranks.world_size == ranks.rank]
    pending = [u for u in mine if not is_done(out_dir, u.index)]
    todo = pending if cfg.max_units is None else pending[: cfg.max_units]
    workers = min(cfg.num_workers, len(todo))
    threads = cfg.threads or default_threads(workers)
    threads_before = torch.get_num_threads()
    set_threads(threads)
    try:
        stats = _encode_units(cfg, out_dir, units, todo, tokenizer, device, ranks, workers, threads,
                              settings_hash(settings))
        stats["units_skipped"] = len(mine) - len(pending)
    finally:
        set_threads(threads_before)  # an in-process caller keeps its own setting
    summary = write_summary(out_dir, stats)
    return {"run": stats, "summary": summary, "output_dir": out_dir}


def _encode_units(cfg: EncodeConfig, out_dir: str, units: List[WorkUnit], todo: List[WorkUnit], tokenizer,
                  device: torch.device, ranks: RankInfo, workers: int, threads: int, settings_id: str) -> Dict:
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    vq_name = tokenizer.name
    log.info("rank %d/%d: %d units total, %d to do, %d threads x (%d workers + 1)", ranks.rank, ranks.world_size,
             len(units), len(todo), threads, workers)
    stats = {"rank": ranks.rank, "world_size": ranks.world_size, "units_done": 0, "read": 0, "written": 0,
             "seconds": 0.0, "threads": threads, "workers": workers}
    if not todo:
        return stats
    dataset = UnitBatches(todo, cfg.preprocess, cfg.batch_size, vq_name)
    loader = DataLoader(dataset, batch_size=None, num_workers=workers, pin_memory=device.type == "cuda",
                        prefetch_factor=4 if workers > 0 else None, persistent_workers=False,
                        worker_init_fn=WorkerThreads(threads) if workers > 0 else None)
    total_rows = sum(u.num_rows for u in todo) if all(u.num_rows is not None for u in todo) else None
    writers: Dict[int, ShardWriter] = {}
    counts: Dict[int, Dict] = {}
    t0 = time.perf_counter()
    bar = tqdm(total=total_rows, unit="img", desc=f"encode r{ranks.rank}", disable=not cfg.progress,
               dynamic_ncols=True, smoothing=0.1)
    try:
        for batch in loader:
            u = batch["unit"]
            if u not in writers:
                writers[u] = ShardWriter(shard_path(out_dir, u))
                counts[u] = {"read": 0, "written": 0, "rejected": collections.Counter(), "errors": []}
            c = counts[u]
            c["read"] += batch["read"]
            c["rejected"].update(batch["rejected"])
            c["errors"].extend(batch["errors"][: MAX_ERRORS_KEPT - len(c["errors"])])
            if batch["pixels"] is not None:
                codes = tokenizer.encode_uint8(batch["pixels"]).to("cpu", torch.int16).numpy()
                for key, code, caption, meta in zip(batch["keys"], codes, batch["captions"], batch["metas"]):
                    writers[u].write(key, code, caption, meta)
                c["written"] += len(batch["keys"])
            bar.update(batch["read"])
            if batch["final"]:
                writer = writers.pop(u)
                side = counts.pop(u)
                unit = units[u]
                side = {"unit": u, "input": unit.path, "rows": [unit.start, unit.end], "read": side["read"],
                        "written": side["written"], "rejected": dict(sorted(side["rejected"].items())),
                        "errors": side["errors"], "vq_tokenizer": vq_name, "resolution": cfg.preprocess.resolution,
                        "settings_hash": settings_id}
                assert side["read"] == side["written"] + sum(side["rejected"].values()), side
                writer.commit(side)
                stats["units_done"] += 1
                stats["read"] += side["read"]
                stats["written"] += side["written"]
            elapsed = time.perf_counter() - t0
            so_far = stats["written"] + sum(x["written"] for x in counts.values())
            bar.set_postfix(written=so_far, img_s=f"{so_far / max(elapsed, 1e-9):.1f}")
    finally:
        bar.close()
        for writer in writers.values():  # interrupted: drop unfinished shards; a rerun redoes them
            writer.abort()
    stats["seconds"] = round(time.perf_counter() - t0, 3)
    stats["images_per_s"] = round(stats["written"] / max(stats["seconds"], 1e-9), 2)
    return stats
