"""``python -m data_pipeline encode``: image-text pairs -> VQ code shards, batched, distributed, resumable.

Pipeline per process: DataLoader workers read and decode images of whole work units (CPU-bound, parallel) and hand
over uint8 batches; the main process normalises on the device, encodes a batch at once (bf16 + channels_last on
GPU), and appends to that unit's shard. Batches never mix units, so a unit re-encoded after preemption yields the
same bytes as an uninterrupted run.
"""
from __future__ import annotations

import collections
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from tqdm import tqdm

from .distributed import RankInfo, detect_rank
from .preprocess import PreprocessConfig, Rejected, clean_caption, decode_image, preprocess_image
from .readers import WorkUnit, expand_inputs, iter_unit, plan_units
from .shards import ShardWriter, atomic_write_json, finished_shards, is_done, read_sidecar, shard_path

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
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    return torch.device(name)


def write_summary(cfg: EncodeConfig, units_total: int, run_stats: Optional[Dict] = None) -> Dict:
    """Aggregate every finished shard's sidecar (from all ranks) into ``summary.json``."""
    read = written = 0
    rejected = collections.Counter()
    shards = finished_shards(cfg.output_dir)
    for shard in shards:
        side = read_sidecar(shard)
        read += side["read"]
        written += side["written"]
        rejected.update(side["rejected"])
    summary = {
        "units_total": units_total, "units_done": len(shards), "complete": len(shards) == units_total,
        "read": read, "written": written, "rejected": dict(sorted(rejected.items())),
        "rejected_total": sum(rejected.values()), "balanced": read == written + sum(rejected.values()),
        "vq_tokenizer": cfg.vq_tokenizer, "resolution": cfg.preprocess.resolution,
        "preprocess": asdict(cfg.preprocess), "inputs": cfg.inputs,
    }
    if run_stats:
        summary["last_run"] = run_stats
    atomic_write_json(os.path.join(cfg.output_dir, "summary.json"), summary)
    return summary


def run_encode(cfg: EncodeConfig, tokenizer=None) -> Dict:
    """Encode this rank's unfinished units; returns this rank's run stats (and rewrites ``summary.json``)."""
    from .vq import load_vq_tokenizer

    ranks: RankInfo = detect_rank(rank=cfg.rank, world_size=cfg.world_size)
    os.makedirs(cfg.output_dir, exist_ok=True)
    out_abs = os.path.abspath(cfg.output_dir) + os.sep
    # our own shards are .tar files too: never read them back as inputs when the output lies inside an input dir
    files = [f for f in expand_inputs(cfg.inputs) if not f.startswith(out_abs)]
    if not files:
        raise FileNotFoundError(f"no input files in {cfg.inputs} outside the output directory {cfg.output_dir}")
    units = plan_units(files, cfg.rows_per_shard, cfg.image_root)
    mine = [u for u in units if u.index % ranks.world_size == ranks.rank]
    todo = [u for u in mine if not is_done(cfg.output_dir, u.index)]
    if cfg.max_units is not None:
        todo = todo[: cfg.max_units]
    device = _resolve_device(cfg.device, ranks.local_rank)
    if tokenizer is None:
        dtype = getattr(torch, cfg.dtype) if cfg.dtype else None
        tokenizer = load_vq_tokenizer(cfg.vq_tokenizer, device=device, dtype=dtype)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    vq_name = tokenizer.name
    log.info("rank %d/%d: %d units total, %d mine, %d to do", ranks.rank, ranks.world_size, len(units), len(mine), len(todo))

    stats = {"rank": ranks.rank, "world_size": ranks.world_size, "units_skipped": len(mine) - len(todo),
             "units_done": 0, "read": 0, "written": 0, "seconds": 0.0}
    if todo:
        dataset = UnitBatches(todo, cfg.preprocess, cfg.batch_size, vq_name)
        workers = min(cfg.num_workers, len(todo))
        loader = DataLoader(dataset, batch_size=None, num_workers=workers, pin_memory=device.type == "cuda",
                            prefetch_factor=4 if workers > 0 else None, persistent_workers=False)
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
                    writers[u] = ShardWriter(shard_path(cfg.output_dir, u))
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
                            "errors": side["errors"], "vq_tokenizer": vq_name,
                            "resolution": cfg.preprocess.resolution}
                    assert side["read"] == side["written"] + sum(side["rejected"].values()), side
                    writer.commit(side)
                    stats["units_done"] += 1
                    stats["read"] += side["read"]
                    stats["written"] += side["written"]
                elapsed = time.perf_counter() - t0
                bar.set_postfix(written=stats["written"] + sum(x["written"] for x in counts.values()),
                                img_s=f"{(stats['written'] + sum(x['written'] for x in counts.values())) / max(elapsed, 1e-9):.1f}")
        finally:
            bar.close()
            for writer in writers.values():  # interrupted: drop unfinished shards; a rerun redoes them
                writer.abort()
        stats["seconds"] = round(time.perf_counter() - t0, 3)
        stats["images_per_s"] = round(stats["written"] / max(stats["seconds"], 1e-9), 2)
    summary = write_summary(cfg, len(units), stats)
    return {"run": stats, "summary": summary}
