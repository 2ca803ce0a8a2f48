"""The mixed-task index on disk: its key, its build, its atomic publication and its read-only memory-mapped load.

Why: the index (which source and sample each stream position is, each position's footprint, the packed rows, the
per-epoch tables of every source) is a pure function of the config, the dataset files and the number of packed
sequences asked for. At paper scale (60M samples) it is ~2 GiB of arrays: built once per key, by rank 0 of the job
while the other ranks wait at a barrier (`ensure`) or ahead of time (``python -m liquid_train.data index``), and
then memory-mapped read-only by every rank, which holds only the pages it reads.

Layout: ``<cache_dir>/index-<key>/`` holds ``meta.json``, one ``.npy`` per array and the marker ``COMPLETE`` (the
key). A build writes everything into a private temporary directory, fsyncs each file, writes the marker last, then
renames the directory into place (one atomic step), so an interrupted build leaves nothing that `load` accepts; a
rerun cleans up what a dead build of this host left and builds again. The build streams the blend and the packer
chunk by chunk (`liquid_train.data.kernels`), so its memory stays bounded (about 40 bytes per stream position for the
per-position arrays it writes, not held).

Key: a hash of `IndexPlan.description`: index format and packer versions, the fields of the config that shape the
stream, the template constants' token ids, every source's absolute path, weight and the size and mtime of its
``.idx``/``.bin``, and the number of training sequences asked for.
"""
from __future__ import annotations

import concurrent.futures
import errno
import hashlib
import json
import logging
import math
import os
import queue
import shutil
import socket
import threading
import time
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch.distributed as dist

from liquid_train.atomic import atomic_write_text
from liquid_train.data.config import DataConfig
from liquid_train.data.mixture import Blend
from liquid_train.data.packing import PackIndex, StreamPacker, build_pack_index
from liquid_train.data.sources import Source
from liquid_train.vocab import TASK_NAMES

logger = logging.getLogger(__name__)

INDEX_VERSION = 1
PACKER_VERSION = 2  # bump whenever the packer would pack the same stream differently
CHUNK = 1 << 20  # stream positions per build step
COUNTS_EVERY = 1024  # packed rows between the report's cumulative count checkpoints
MARKER = "COMPLETE"
_PACK_FIELDS = ("offsets", "sample", "start", "length")

Progress = Callable[[str], None]


def _rank_and_world() -> Tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class IndexPlan:
    """What determines the index, and where it lives; cheap to make on every rank (reads only file metadata)."""

    def __init__(self, cfg: DataConfig, num_train_sequences: int, sources: List[Source]):
        if num_train_sequences < 1:
            raise ValueError(f"num_train_sequences={num_train_sequences} must be >= 1")
        self.cfg = cfg
        self.num_train_sequences = int(num_train_sequences)
        self.sources = sources
        templates = sources[0].templates
        fields = ("mix_by", "seq_length", "text_sample", "text_chunk_length", "seed", "cfg_drop_prob",
                  "blend_algorithm", "valid_fraction", "pack_window")
        self.description = {
            "index_version": INDEX_VERSION, "packer": PACKER_VERSION,
            "num_train_sequences": self.num_train_sequences,
            "config": {k: getattr(cfg, k) for k in fields},
            "mixture": {TASK_NAMES[t]: float(cfg.mixture[TASK_NAMES[t]]) for t in cfg.active_tasks},
            "templates": {"instructions": [ids.tolist() for ids in templates.instruction_ids],
                          "prompt": templates.i2t_prompt_ids.tolist()},
            "sources": [s.identity() for s in sources],
        }
        self.key = hashlib.sha256(json.dumps(self.description, sort_keys=True).encode()).hexdigest()[:24]
        self.cache_dir = os.path.abspath(cfg.cache_dir or os.path.join(
            os.path.dirname(os.path.abspath(cfg.pairs_path or cfg.text_path or sources[0].path)), "cache"))
        self.directory = os.path.join(self.cache_dir, f"index-{self.key}")

    @property
    def tasks(self) -> List[int]:
        return list(self.cfg.active_tasks)

    def task_sources(self, task: int) -> List[Source]:
        return [s for s in self.sources if s.task == task]


# --- writing ---------------------------------------------------------------------------------------------------
def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _NpyWriter:
    """A 1-D ``.npy`` written by appending chunks (the header is rewritten with the final length; numpy leaves
    room for that in place), then fsynced."""

    def __init__(self, path: str, dtype):
        self.path, self.dtype, self.length = path, np.dtype(dtype), 0
        self._file = open(path, "wb")
        self._header_size = self._write_header()

    def _write_header(self) -> int:
        self._file.seek(0)
        np.lib.format.write_array_header_1_0(self._file, {"descr": np.lib.format.dtype_to_descr(self.dtype),
                                                          "fortran_order": False, "shape": (self.length,)})
        return self._file.tell()

    def append(self, array: np.ndarray) -> None:
        array = np.ascontiguousarray(array, dtype=self.dtype)
        self._file.write(memoryview(array).cast("B"))
        self.length += len(array)

    def close(self) -> None:
        self._file.flush()
        if self._write_header() != self._header_size:  # numpy reserves growth room; never expected
            raise RuntimeError(f"{self.path}: .npy header changed size")
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()


def _save(path: str, array: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, np.ascontiguousarray(array))
        f.flush()
        os.fsync(f.fileno())


def _stream_weights(plan: IndexPlan, train_sets) -> Tuple[List[float], List[List[float]], float]:
    """Task weights (as the megatron BlendedDataset path normalised them), source weights per task, and the mean
    footprint of a stream sample (sizes the stream)."""
    cfg = plan.cfg
    mean_len = {}
    source_weights = []
    for task in plan.tasks:
        srcs = plan.task_sources(task)
        w = np.array([s.weight for s in srcs], dtype=np.float64)
        w = w / w.sum()
        source_weights.append([float(x) for x in w])
        means = [train_sets[s.id].mean_footprint() for s in srcs]
        mean_len[task] = means[0] if len(srcs) == 1 else float(sum(wi * m for wi, m in zip(w, means)))
    weights = np.array([float(cfg.mixture[TASK_NAMES[t]]) for t in plan.tasks])
    if cfg.mix_by == "tokens":
        weights = weights / np.array([mean_len[t] for t in plan.tasks])
    weights = weights / weights.sum()
    mean_footprint = float(sum(w * mean_len[t] for w, t in zip(weights, plan.tasks)))
    if len(weights) > 1:  # BlendedDataset normalised once more (megatron.core.datasets.utils.normalize)
        weights = np.array((weights / np.sum(weights)).tolist())
    return [float(w) for w in weights], source_weights, mean_footprint


def _build_into(plan: IndexPlan, tmp: str, progress: Progress) -> dict:
    """Write the index's arrays into ``tmp``; returns its metadata.

    Threads (the box may have two cores): a pool computes the epoch permutations and the text epochs' tables
    (numpy's shuffle and cumsum run outside the GIL) while the stream is built; a producer blends and computes
    footprints one chunk ahead of the packer (compiled loops, outside the GIL), which packs and writes. Everything
    each thread computes is a pure function of its inputs, so the index does not depend on the threading."""
    cfg = plan.cfg
    t0 = time.perf_counter()
    for source in {s.path: s for s in plan.sources}.values():  # each dataset once (T2I and I2T may share one)
        source.check()
    train_sets = [s.dataset(cfg, "train", 0) for s in plan.sources]
    saved = [set() for _ in train_sets]  # tables already written, per source

    def sink(sid):
        def store(epoch, perm):
            _save(os.path.join(tmp, f"src{sid}-perm-e{epoch}.npy"), perm)
            saved[sid].add(f"perm-e{epoch}")
        return store

    def first_text_epochs():
        """Text windows read nothing while the stream is built: their first epoch's tables are made meanwhile."""
        for sid, dataset in enumerate(train_sets):
            if dataset.splittable:
                for name, table in dataset.tables_to_store(0, have=saved[sid]):
                    if isinstance(table, np.ndarray) and name not in saved[sid]:
                        _save(os.path.join(tmp, f"src{sid}-{name}.npy"), table)
                        saved[sid].add(name)
                dataset.permutations._cache.clear()
                dataset._epoch_starts.clear()

    pool = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="index-tables")
    try:
        for sid, dataset in enumerate(train_sets):  # permutations are written as the stream computes them
            dataset.permutations.on_compute = sink(sid)
            if not dataset.splittable:
                dataset.permutations.prefetch(0, pool)
        text_tables = pool.submit(first_text_epochs)
        meta = _stream_into(plan, tmp, train_sets, progress, t0)
        text_tables.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    meta["sources"] = _source_tables(plan, tmp, train_sets, saved, meta.pop("source_counts"))
    meta["valid"] = _build_valid(plan, tmp)
    meta["build_seconds"] = time.perf_counter() - t0
    return meta


def _stream_into(plan: IndexPlan, tmp: str, train_sets, progress: Progress, t0: float) -> dict:
    """Blend, footprint, pack and write the training stream (see `_build_into`)."""
    cfg = plan.cfg
    task_weights, source_weights, mean_footprint = _stream_weights(plan, train_sets)
    target = int(math.ceil(plan.num_train_sequences * cfg.seq_length / mean_footprint / 0.95)) + 64
    splittable = np.array([d.splittable for d in train_sets], dtype=bool)
    blend = Blend(task_weights, source_weights, cfg.blend_algorithm)
    packer = StreamPacker(cfg.seq_length, cfg.pack_window, tally_every=COUNTS_EVERY, num_sources=len(train_sets))
    # stream positions and per-source sample numbers fit int32 far beyond paper scale (the growth loop below
    # rarely adds more than 25%); int64 past that
    position_dtype = np.int32 if 4 * target < np.iinfo(np.int32).max else np.int64
    writers = {name: _NpyWriter(os.path.join(tmp, f"{name}.npy"), dtype) for name, dtype in (
        ("source", np.int16), ("source_sample", position_dtype), ("footprint", np.int32),
        ("offsets", np.int64), ("sample", position_dtype), ("start", np.int32), ("length", np.int32))}
    writers["offsets"].append(np.zeros(1, np.int64))
    source_of = np.empty(0, dtype=np.int16)  # every position's source (the packer's per-source tally)

    def produce(stop: int, out: queue.Queue) -> None:
        """Chunks of the stream up to position ``stop``: (source, sample, footprint); None at the end."""
        try:
            while blend.position < stop:
                lo = blend.position
                taken = blend.source_counts.copy()
                source, sample = blend.take(min(CHUNK, stop - lo))
                footprint = np.empty(len(source), dtype=np.int64)
                for sid, dataset in enumerate(train_sets):
                    if blend.source_counts[sid] > taken[sid]:  # this source's samples in the chunk: a range
                        footprint[source == sid] = dataset.footprints_range(int(taken[sid]),
                                                                            int(blend.source_counts[sid]))
                source_of[lo:lo + len(source)] = source
                out.put((source, sample, footprint))
            out.put(None)
        except BaseException as exc:  # re-raised by the consumer
            out.put(exc)

    num_runs, reported = 0, 0.0
    while True:
        if target >= np.iinfo(position_dtype).max:
            raise RuntimeError(f"the stream outgrew {np.dtype(position_dtype).name} positions ({target:,})")
        source_of = np.concatenate([source_of, np.empty(target - len(source_of), np.int16)])
        chunks: queue.Queue = queue.Queue(maxsize=2)
        producer = threading.Thread(target=produce, args=(target, chunks), name="index-stream", daemon=True)
        producer.start()
        while True:
            item = chunks.get()
            if item is None:
                break
            if isinstance(item, BaseException):
                raise item
            source, sample, footprint = item
            rows, run_sample, run_start, run_length = packer.feed(footprint, splittable[source], source_of)
            writers["source"].append(source)
            writers["source_sample"].append(sample)
            writers["footprint"].append(footprint)
            writers["offsets"].append(num_runs + np.cumsum(rows))
            for name, array in (("sample", run_sample), ("start", run_start), ("length", run_length)):
                writers[name].append(array)
            num_runs += len(run_sample)
            done = min(1.0, packer.num_rows / plan.num_train_sequences)
            if done - reported >= 0.05 or done >= 1.0 > reported:
                reported = done
                progress(f"index {plan.key}: {packer.num_rows:,}/{plan.num_train_sequences:,} packed sequences, "
                         f"{packer.num_samples:,} stream samples, {time.perf_counter() - t0:.1f} s")
        producer.join()
        if packer.num_rows >= plan.num_train_sequences:
            break
        target = int(target * 1.25) + 64
    for writer in writers.values():
        writer.close()
    begun, used = packer.tally()
    _save(os.path.join(tmp, "begun.npy"), begun)
    _save(os.path.join(tmp, "used.npy"), used)
    return {"key": plan.key, "description": plan.description, "num_samples": int(blend.position),
            "num_sequences": packer.num_rows, "num_runs": int(num_runs), "counts_every": COUNTS_EVERY,
            "source_counts": blend.source_counts.tolist(), "built_by": f"{socket.gethostname()}:{os.getpid()}"}


def _source_tables(plan: IndexPlan, tmp: str, train_sets, saved, source_counts) -> List[dict]:
    """Each source's tables for the epochs the stream reaches (those not written yet), and its metadata."""
    sources_meta = []
    for s, dataset in zip(plan.sources, train_sets):
        taken = int(source_counts[s.id])
        values = {}
        for name, table in dataset.tables_to_store(dataset.last_epoch(taken), have=saved[s.id]):
            if name in saved[s.id]:
                continue
            if isinstance(table, np.ndarray):
                _save(os.path.join(tmp, f"src{s.id}-{name}.npy"), table)
                saved[s.id].add(name)
            else:
                values[name] = int(table)
        arrays = sorted(saved[s.id])
        dataset.permutations._cache.clear()  # written; the next source's tables need the memory
        dataset._epoch_starts.clear()
        dataset.num_samples = taken
        sources_meta.append({**s.identity(), "id": s.id, "key": s.key, "samples": taken,
                             "num_units": int(dataset.num_units), "epochs": float(dataset.epochs(taken)),
                             "splittable": bool(dataset.splittable), "values": values, "arrays": arrays})
    return sources_meta


def _build_valid(plan: IndexPlan, tmp: str) -> Dict[str, dict]:
    """One packed validation set per task: its sources' held-out documents, one epoch, unshuffled, all rows."""
    out = {}
    if plan.cfg.valid_fraction <= 0:
        return out
    for task in plan.tasks:
        footprints, splittable, sizes = [], [], []
        for s in plan.task_sources(task):
            dataset = s.dataset(plan.cfg, "valid", 0)
            footprints.append(dataset.footprints(np.arange(dataset.num_units)))
            splittable.append(np.full(dataset.num_units, dataset.splittable))
            sizes.append(int(dataset.num_units))
        footprint = np.concatenate(footprints)
        index = build_pack_index(footprint, plan.cfg.seq_length, plan.cfg.pack_window, flush=True,
                                 splittable=np.concatenate(splittable))
        name = TASK_NAMES[task]
        for field, array in {**index.arrays(), "footprint": footprint.astype(np.int32)}.items():
            _save(os.path.join(tmp, f"valid-{name}-{field}.npy"), array)
        out[name] = {"sizes": sizes, "num_sequences": len(index)}
    return out


def _remove_dead_builds(plan: IndexPlan) -> None:
    """Temporary directories of builds of this key that died on this host (their process is gone)."""
    prefix = f".index-{plan.key}.tmp."
    host = socket.gethostname()
    try:
        names = os.listdir(plan.cache_dir)
    except FileNotFoundError:
        return
    for name in names:
        if not name.startswith(prefix):
            continue
        owner_host, _, pid = name[len(prefix):].rpartition(".")
        if owner_host != host or not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
            continue  # still building
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        shutil.rmtree(os.path.join(plan.cache_dir, name), ignore_errors=True)


def build(plan: IndexPlan, progress: Optional[Progress] = None) -> "IndexReader":
    """Build the index of ``plan`` and publish it atomically (see the module docstring); returns it mapped.

    Another process may publish the same key meanwhile: then its index is kept and this build discarded (both
    are identical)."""
    progress = progress or logger.info
    os.makedirs(plan.cache_dir, exist_ok=True)
    _remove_dead_builds(plan)
    tmp = os.path.join(plan.cache_dir, f".index-{plan.key}.tmp.{socket.gethostname()}.{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        meta = _build_into(plan, tmp, progress)
        meta["files"] = {name[:-4]: _array_info(os.path.join(tmp, name))
                         for name in sorted(os.listdir(tmp)) if name.endswith(".npy")}
        atomic_write_text(os.path.join(tmp, "meta.json"), json.dumps(meta, indent=1, sort_keys=True) + "\n",
                          fsync=True)
        atomic_write_text(os.path.join(tmp, MARKER), plan.key + "\n", fsync=True)
        _fsync_dir(tmp)
        try:
            os.rename(tmp, plan.directory)
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST) or load(plan) is None:
                raise
            logger.info("index %s was published by another process meanwhile; keeping it", plan.key)
        _fsync_dir(plan.cache_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    reader = load(plan)
    if reader is None:
        raise RuntimeError(f"{plan.directory}: the index just built does not load")
    progress(f"index {plan.key}: {reader.meta['num_sequences']:,} packed sequences over "
             f"{reader.meta['num_samples']:,} stream samples in {reader.meta['build_seconds']:.1f} s "
             f"-> {plan.directory}")
    return reader


def _array_info(path: str) -> list:
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(f)
    return [np.lib.format.dtype_to_descr(dtype), list(shape)]


# --- reading ---------------------------------------------------------------------------------------------------
class SourceTables:
    """One source's stored tables (the ``tables`` a `LiquidTaskDataset` takes)."""

    def __init__(self, reader: "IndexReader", meta: dict):
        self.reader, self.meta = reader, meta

    def array(self, name: str) -> Optional[np.ndarray]:
        if name not in self.meta["arrays"]:
            return None
        return self.reader.array(f"src{self.meta['id']}-{name}")

    def value(self, name: str) -> Optional[int]:
        return self.meta["values"].get(name)


class IndexReader:
    """A published index, every array memory-mapped read-only on first use."""

    def __init__(self, directory: str, meta: dict):
        self.directory, self.meta = directory, meta
        self._arrays: Dict[str, np.ndarray] = {}

    def array(self, name: str) -> np.ndarray:
        array = self._arrays.get(name)
        if array is None:
            path = os.path.join(self.directory, f"{name}.npy")
            _, shape = self.meta["files"][name]
            array = np.load(path, mmap_mode="r") if int(np.prod(shape)) else np.load(path)
            self._arrays[name] = array
        return array

    def pack_index(self, prefix: str = "") -> PackIndex:
        return PackIndex(*(self.array(f"{prefix}{field}") for field in _PACK_FIELDS))

    def source(self, source_id: int) -> SourceTables:
        return SourceTables(self, self.meta["sources"][source_id])


def load(plan: IndexPlan) -> Optional[IndexReader]:
    """The published index of ``plan``, or None when there is none (or only an incomplete one)."""
    try:
        with open(os.path.join(plan.directory, MARKER)) as f:
            if f.read().strip() != plan.key:
                return None
        with open(os.path.join(plan.directory, "meta.json")) as f:
            meta = json.load(f)
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return None
    if meta.get("key") != plan.key:
        return None
    for name, (descr, shape) in meta["files"].items():
        path = os.path.join(plan.directory, f"{name}.npy")
        if not os.path.exists(path) or _array_info(path) != [descr, shape]:
            return None
    return IndexReader(plan.directory, meta)


def ensure(plan: IndexPlan, progress: Optional[Progress] = None) -> Tuple[IndexReader, bool]:
    """The index of ``plan``, memory-mapped, and whether this process built it.

    In a job (``torch.distributed`` initialised) rank 0 builds it when it is missing while every other rank waits
    at a barrier; then every rank maps it. The barrier is unconditional, so the ranks cannot disagree on whether
    to wait. Build ahead of time (``python -m liquid_train.data index``) when a build would outlast the process
    group's timeout."""
    rank, world = _rank_and_world()
    built, error = False, None
    if rank == 0:
        try:
            if load(plan) is None:
                build(plan, progress)
                built = True
        except BaseException as exc:  # reach the barrier anyway, so the other ranks fail instead of hanging
            error = exc
    if world > 1:
        dist.barrier()
    if error is not None:
        raise error
    reader = load(plan)
    if reader is None:
        raise RuntimeError(
            f"{plan.directory}: no complete mixed-task index after rank 0's build; either rank 0 failed (see its "
            f"log) or DataConfig.cache_dir={plan.cache_dir} is not on a filesystem this node shares with rank 0 "
            f"(use a shared cache_dir, or build it on every node with `python -m liquid_train.data index`)")
    return reader, built
