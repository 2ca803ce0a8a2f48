"""Trainer checkpoints: megatron dist-checkpointing (torch_dist), keep-last-K, an atomic ``latest`` pointer, a
manifest checked before every resume, and one clear error for every fault.

Layout (contract 4)::

    <ckpt_dir>/latest                    text file: "iter_0000100" (replaced atomically)
    <ckpt_dir>/iter_0000100/             dist checkpoint {"model", "optimizer", "scheduler", "rng", "data"}
        liquid_vocab.json, liquid_model.json, trainer_state.json   sidecars
        manifest.json                    every file with size and checksum, the step, the layout (written last)
    <ckpt_dir>/iter_0000090.corrupt-checksum/   a checkpoint that failed verification, moved aside (never deleted)

Why a ``.partial`` directory and a pointer: a checkpoint is written into ``iter_N.partial`` and renamed to
``iter_N`` only after every rank has finished writing (for async saves: in the finalize step) and the manifest
is written; ``latest`` is replaced after the rename. A crash at any moment leaves ``latest`` naming a complete
checkpoint.

Why verify: bytes can change after a save (bit rot, a bad copy, a full disk) and torch loads them without a word.
:func:`find_resumable` resumes from the newest checkpoint that matches its manifest, moves the ones that do not
aside with a one-line warning, and stops with one :class:`CheckpointError` listing what was tried when none does.
Every fault an operator can meet (a full disk during a save, a read-only run dir, a damaged ``latest``, missing or
truncated shards) is a :class:`CheckpointError`: one line naming the path and what to do (the CLI exits 2).
"""
from __future__ import annotations

import errno
import json
import logging
import os
import random
import re
import shutil
import tempfile
import weakref
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.distributed as dist
from megatron.core import dist_checkpointing, tensor_parallel
from megatron.core.dist_checkpointing.mapping import ShardedObject
from megatron.core.dist_checkpointing.serialization import get_default_save_sharded_strategy
from megatron.core.dist_checkpointing.strategies.async_utils import AsyncCallsQueue
from torch.distributed.checkpoint.api import CheckpointException

from liquid_train.atomic import atomic_write_text
from liquid_train.training import ckpt_children, ckpt_manifest
from liquid_train.training.ckpt_manifest import Problem

logger = logging.getLogger(__name__)

LATEST = "latest"
STATE_FILE = "trainer_state.json"
_ITER_RE = re.compile(r"^iter_(\d{7,})$")
_NEARLY_FULL = 64 << 20  # bytes free after a failed save below which the disk is reported full
_SAVE_ERRORS = (Exception, CheckpointException)  # torch DCP's CheckpointException is a BaseException


class CheckpointError(RuntimeError):
    """A checkpoint or run directory cannot be used as asked; the message is one line naming the path and what
    to do."""


def iter_dirname(iteration: int) -> str:
    return f"iter_{iteration:07d}"


def checkpoint_dir(run_dir: str, ckpt_dir: Optional[str] = None) -> str:
    """``checkpoint.dir``, defaulting to ``<run_dir>/checkpoints``."""
    return ckpt_dir or os.path.join(run_dir, "checkpoints")


# --- collectives (all no-ops in a single process) -------------------------------------------------------------
def _dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def _barrier():
    if _dist():
        dist.barrier()


def _rank() -> int:
    return dist.get_rank() if _dist() else 0


def _world() -> int:
    return dist.get_world_size() if _dist() else 1


def _on_rank0(fn: Callable):
    """Run ``fn`` on rank 0 and give its result (or its CheckpointError) to every rank."""
    if _world() == 1:
        return fn()
    box = [None]
    if _rank() == 0:
        try:
            box[0] = ("ok", fn())
        except CheckpointError as exc:
            box[0] = ("error", str(exc))
        except BaseException:
            dist.broadcast_object_list([("crash", "rank 0 failed; see its log")], src=0)
            raise
    dist.broadcast_object_list(box, src=0)
    status, value = box[0]
    if status == "error":
        raise CheckpointError(value)
    if status == "crash":
        raise RuntimeError(value)
    return value


def _all_gather(obj) -> List:
    if _world() == 1:
        return [obj]
    out = [None] * _world()
    dist.all_gather_object(out, obj)
    return out


# --- the run directory ------------------------------------------------------------------------------------------
def check_writable(run_dir: str, ckpt_dir: Optional[str] = None) -> None:
    """Fail at start, with one line, when the run dir or the checkpoint dir cannot be written (each rank)."""
    for path in (run_dir, checkpoint_dir(run_dir, ckpt_dir)):
        try:
            os.makedirs(path, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=path, prefix=".write-test-")
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise CheckpointError(
                f"{path} is not writable ({exc.strerror or exc}); the run writes its checkpoints, metrics and "
                f"config there: make it writable or set run_dir (or checkpoint.dir) to a writable directory"
            ) from None


def _read_pointer(ckpt_dir: str) -> Optional[str]:
    """The checkpoint name in ``latest``; None when there is no pointer. A pointer that cannot be read, or that
    holds anything but an ``iter_*`` name, is a CheckpointError."""
    pointer = os.path.join(ckpt_dir, LATEST)
    if not os.path.lexists(pointer):
        return None
    fix = (f"write the name of a checkpoint directory of {ckpt_dir} into it (e.g. iter_0000100), or remove it "
           f"to resume from the newest checkpoint that verifies")
    try:
        with open(pointer, "rb") as f:
            raw = f.read(256)
    except OSError as exc:
        raise CheckpointError(f"{pointer} cannot be read ({exc.strerror or exc}); {fix}") from None
    try:
        name = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        raise CheckpointError(f"{pointer} is not a checkpoint name (binary content); {fix}") from None
    if not _ITER_RE.match(name):
        raise CheckpointError(f"{pointer} holds {name[:40]!r}, not a checkpoint name like iter_0000100; {fix}")
    return name


def read_latest(ckpt_dir: str) -> Optional[str]:
    """Path of the checkpoint ``latest`` names, or None when there is no pointer (no verification)."""
    name = _read_pointer(ckpt_dir)
    if name is None:
        return None
    path = os.path.join(ckpt_dir, name)
    if not os.path.isdir(path):
        raise CheckpointError(f"{os.path.join(ckpt_dir, LATEST)} names {name}, which is not a directory of "
                              f"{ckpt_dir}; point it at an existing iter_* directory or remove it")
    return path


def read_trainer_state(path: str) -> Dict:
    state = os.path.join(path, STATE_FILE)
    try:
        with open(state) as f:
            return json.load(f)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{state} cannot be read ({type(exc).__name__}: {exc}); set "
                              f"checkpoint.verify=true to check the checkpoint, or resume from another") from None


def list_checkpoints(ckpt_dir: str) -> List[str]:
    if not os.path.isdir(ckpt_dir):
        return []
    names = sorted(n for n in os.listdir(ckpt_dir) if _ITER_RE.match(n) and os.path.isdir(os.path.join(ckpt_dir, n)))
    return [os.path.join(ckpt_dir, n) for n in names]


def _step(path: str) -> int:
    return int(_ITER_RE.match(os.path.basename(path)).group(1))


# --- verification ---------------------------------------------------------------------------------------------
def _has_manifest(path: str) -> bool:
    return os.path.exists(os.path.join(path, ckpt_manifest.MANIFEST))


def _problem(path: str) -> Optional[Problem]:
    """The first problem of checkpoint ``path`` (collective: ranks share the hashing), or None."""
    if not os.path.isdir(path):
        return Problem("missing", os.path.basename(path), "the directory does not exist")
    if not _has_manifest(path):
        problem = _on_rank0(lambda: ckpt_manifest.check_structure(path))
        if problem is None and _rank() == 0:
            logger.warning("%s has no %s (written before manifests existed, or by hf-to-megatron): only its "
                           "structure was checked",
                           path, ckpt_manifest.MANIFEST)
        return problem
    found = [p for p in _all_gather(ckpt_manifest.verify(path, _rank(), _world())) if p is not None]
    return found[0] if found else None


def verify_checkpoint(path: str) -> None:
    """Raise CheckpointError naming the first bad file of ``path`` (for tools loading a checkpoint, e.g. the HF
    export); checkpoints without a manifest get the structure check."""
    if not os.path.isdir(path):
        raise CheckpointError(f"{path} is not a checkpoint directory; pass an iter_* directory, a checkpoints/ "
                              f"directory or a run directory")
    problem = _problem(path)
    if problem is not None:
        raise CheckpointError(f"checkpoint {path} is damaged: {problem}; use another checkpoint (a run falls back "
                              f"to the newest one that verifies) or restore this one from a copy")


def _move_aside(path: str, reason: str) -> str:
    dest, n = f"{path}.corrupt-{reason}", 1
    while os.path.lexists(dest):
        n += 1
        dest = f"{path}.corrupt-{reason}-{n}"
    os.rename(path, dest)
    return dest


def _candidates(ckpt_dir: str) -> Tuple[Optional[str], List[str]]:
    """(the pointer's name, checkpoints to try newest first): the one ``latest`` names, then older ones; with
    no pointer, every checkpoint (a kill between the rename and the pointer update leaves none)."""
    name = _read_pointer(ckpt_dir)
    found = list_checkpoints(ckpt_dir)
    if name is None:
        return None, found[::-1]
    newest = _step(os.path.join(ckpt_dir, name))
    return name, [os.path.join(ckpt_dir, name)] + [p for p in found[::-1] if _step(p) < newest]


def find_resumable(ckpt_dir: str, verify: bool = True) -> Optional[str]:
    """The checkpoint to resume from, or None to start fresh (call on all ranks).

    The newest checkpoint that verifies (``latest`` first): newer ones that do not verify are moved aside to
    ``iter_N.corrupt-<reason>`` with a one-line warning, and ``latest`` is pointed at the one chosen. When none
    verifies nothing is moved and a CheckpointError lists what was tried. ``verify=False`` takes ``latest``
    (or the newest checkpoint) as it is.
    """
    if not os.path.isdir(ckpt_dir):
        return None
    pointer, candidates = _on_rank0(lambda: _candidates(ckpt_dir))
    if not candidates:
        return None
    if not verify:
        if not os.path.isdir(candidates[0]):
            raise CheckpointError(f"{os.path.join(ckpt_dir, LATEST)} names {pointer}, which does not exist; "
                                  f"point it at an existing iter_* directory or set checkpoint.verify=true")
        return candidates[0]
    tried: List[Tuple[str, Problem]] = []
    for path in candidates:
        problem = _problem(path)
        if problem is None:
            _on_rank0(lambda: _settle(ckpt_dir, pointer, path, tried))
            return path
        tried.append((path, problem))
    listing = "; ".join(f"{os.path.basename(p)}: {problem}" for p, problem in tried)
    raise CheckpointError(
        f"no checkpoint in {ckpt_dir} verifies ({listing}); restore a good copy, or set checkpoint.verify=false "
        f"to load {os.path.basename(tried[0][0])} anyway, or move them away (or set checkpoint.resume=false) to "
        f"start over; nothing was moved")


def _settle(ckpt_dir: str, pointer: Optional[str], chosen: str, bad: List[Tuple[str, Problem]]) -> None:
    """Rank 0: move the bad checkpoints aside and point ``latest`` at the chosen one."""
    for path, problem in bad:
        if os.path.isdir(path):
            dest = _move_aside(path, problem.reason)
            logger.warning("checkpoint %s does not verify (%s): moved aside to %s", path, problem, dest)
        else:
            logger.warning("%s names %s, which does not exist", os.path.join(ckpt_dir, LATEST), pointer)
    name = os.path.basename(chosen)
    if pointer != name:
        atomic_write_text(os.path.join(ckpt_dir, LATEST), name + "\n", fsync=True)
        logger.warning("resuming from %s, the newest checkpoint that verifies", chosen)


def finished(resume_path: Optional[str], iters: int) -> bool:
    """True (and says so) when the checkpoint to resume from is already at ``train.iters``: relaunching a
    finished run then does nothing instead of logging its last validation again."""
    if resume_path is None:
        return False
    step = int(read_trainer_state(resume_path).get("iteration", 0))
    if step < iters:
        return False
    logger.warning("run already finished: %s is at step %d and train.iters=%d; nothing to do (raise train.iters "
                   "to train further)", resume_path, step, iters)
    return True


# --- saving ---------------------------------------------------------------------------------------------------
def _errnos(exc: Optional[BaseException], depth: int = 0):
    """errno values anywhere in ``exc``: its cause/context chain and, for torch DCP's CheckpointException, the
    exceptions of the failed ranks."""
    while exc is not None and depth < 20:
        depth += 1
        if isinstance(exc, OSError) and exc.errno is not None:
            yield exc.errno
        failures = getattr(exc, "failures", None)
        for failure in failures.values() if isinstance(failures, dict) else ():
            nested = failure[0] if isinstance(failure, tuple) else failure
            if isinstance(nested, BaseException):
                yield from _errnos(nested, depth)
        exc = exc.__cause__ or exc.__context__


def _free_bytes(path: str) -> Optional[int]:
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def _one_line(exc: BaseException) -> str:
    """``Type: message`` on one line; for torch DCP's CheckpointException, that of the first failed rank."""
    failures = getattr(exc, "failures", None)
    if isinstance(failures, dict) and failures:
        rank, failure = sorted(failures.items())[0]
        nested = failure[0] if isinstance(failure, tuple) else failure
        if isinstance(nested, BaseException):
            return f"rank {rank}: {_one_line(nested)}"
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:200]}"


def _hash_after(write: Callable, partial: str, rank: int) -> Callable:
    """The async writer checksums the shards it just wrote (still in the page cache), off the training thread;
    the finalize step then only hashes the small files. A failed write is reported by the finalize step."""
    def write_then_hash(*args, **kwargs):
        write(*args, **kwargs)
        try:
            ckpt_manifest.hash_own_shards(partial, rank)
        except OSError as exc:
            logger.debug("async writer could not checksum its shards (%s); the finalize step will", exc)

    return write_then_hash


class CheckpointManager:
    """Saves and loads trainer checkpoints; every method is called on all ranks, from the training thread (the
    checkpoint writers it starts are tied to it, see ``ckpt_children``)."""

    def __init__(self, ckpt_dir: str, keep_last: int = 2, async_save: bool = False):
        self.ckpt_dir = ckpt_dir
        self.keep_last = keep_last
        self.async_save = async_save
        self._queue = None
        self._in_flight: Optional[Tuple[int, str]] = None
        self._token = object()  # owns the writer Manager (ckpt_children) from the first save on
        weakref.finalize(self, ckpt_children.release_results_queue, self._token)
        if async_save:
            self._queue = AsyncCallsQueue(persistent=False)
        if _rank() == 0:
            os.makedirs(ckpt_dir, exist_ok=True)
        _barrier()

    # --- save -------------------------------------------------------------------------------------------------
    def save(self, iteration: int, sharded_state_dict: Dict, sidecars: Dict[str, Dict]) -> None:
        """Write ``sharded_state_dict`` as ``iter_<iteration>``; sidecars are JSON files written next to it."""
        self.finalize(blocking=True)  # at most one save in flight
        final = os.path.join(self.ckpt_dir, iter_dirname(iteration))
        partial = final + ".partial"
        layout = (sidecars.get(STATE_FILE) or {}).get("layout")
        try:
            self._prepare(partial, final)
            ckpt_children.install_results_queue(self._token)
            strategy = get_default_save_sharded_strategy("torch_dist")
            with ckpt_children.tied_forks():
                request = dist_checkpointing.save(sharded_state_dict, partial, strategy,
                                                  async_sharded_save=self.async_save)
                publish = lambda: self._publish(iteration, partial, final, sidecars, layout)  # noqa: E731
                if request is None:
                    _barrier()
                    publish()
                    _barrier()
                else:
                    request.add_finalize_fn(publish)
                    if request.async_fn is not None:
                        request = request._replace(async_fn=_hash_after(request.async_fn, partial, _rank()))
                    self._queue.schedule_async_request(request)
                    self._in_flight = (iteration, partial)
        except CheckpointError:
            raise
        except _SAVE_ERRORS as exc:
            raise self._save_failed(iteration, partial, exc) from exc

    def save_with(self, iteration: int, write: Callable[[str], None], sidecars: Dict[str, Dict]) -> None:
        """A synchronous save whose files ``write(partial_dir)`` writes on every rank (another engine's own
        checkpoint format, e.g. DeepSpeed's); then the same sidecars, manifest, rename, ``latest`` and pruning."""
        self.finalize(blocking=True)
        final = os.path.join(self.ckpt_dir, iter_dirname(iteration))
        partial = final + ".partial"
        layout = (sidecars.get(STATE_FILE) or {}).get("layout")
        try:
            self._prepare(partial, final)
            write(partial)
            _barrier()
            self._publish(iteration, partial, final, sidecars, layout)
            _barrier()
        except CheckpointError:
            raise
        except _SAVE_ERRORS as exc:
            raise self._save_failed(iteration, partial, exc) from exc

    @staticmethod
    def _prepare(partial: str, final: str) -> None:
        if _rank() == 0:
            for stale in (partial, final):
                if os.path.exists(stale):
                    shutil.rmtree(stale)
            os.makedirs(partial)
        _barrier()

    def _publish(self, iteration: int, partial: str, final: str, sidecars: Dict[str, Dict],
                 layout: Optional[Dict]) -> None:
        """All ranks, after every rank's files are written: sidecars, the manifest (each rank hashes its own
        shards), then rank 0 renames the checkpoint into place and replaces ``latest``."""
        if _rank() == 0:
            for name, payload in sidecars.items():
                atomic_write_text(os.path.join(partial, name), json.dumps(payload, indent=2, sort_keys=True),
                                  fsync=True)
        names = _on_rank0(lambda: ckpt_manifest.list_files(partial))
        files: Dict[str, Dict] = {}
        for part in _all_gather(ckpt_manifest.describe(partial, names, _rank(), _world())):
            files.update(part)
        if _rank() == 0:
            ckpt_manifest.write_manifest(partial, files, iteration, layout)
            os.replace(partial, final)
            atomic_write_text(os.path.join(self.ckpt_dir, LATEST), iter_dirname(iteration) + "\n", fsync=True)
            self._prune()
            logger.info("saved checkpoint %s", final)

    def _save_failed(self, iteration: int, partial: str, exc: BaseException) -> CheckpointError:
        """One line for a failed save: a full disk said as such, the last good checkpoint named."""
        free = _free_bytes(self.ckpt_dir)
        codes = set(_errnos(exc))
        full = bool(codes & {errno.ENOSPC, errno.EDQUOT}) or "No space left" in str(exc) or \
            (free is not None and free < _NEARLY_FULL)
        if _rank() == 0:
            shutil.rmtree(partial, ignore_errors=True)  # never a checkpoint; frees what it took
        try:
            last = _read_pointer(self.ckpt_dir)
        except CheckpointError:
            last = None
        kept = (f"{os.path.join(self.ckpt_dir, LATEST)} still names {last}, the last good checkpoint" if last
                else "there is no earlier checkpoint")
        if full:
            free_text = f"{free / 2**20:.0f} MiB free" if free is not None else "free space unknown"
            return CheckpointError(
                f"checkpoint save at step {iteration} failed: no space left on the device of {self.ckpt_dir} "
                f"({free_text}); {kept}. Free space, lower checkpoint.keep_last or set checkpoint.dir to a larger "
                f"disk, then relaunch to resume")
        return CheckpointError(f"checkpoint save at step {iteration} to {partial} failed ({_one_line(exc)}); "
                               f"{kept}. Fix the cause and relaunch to resume")

    def finalize(self, blocking: bool = False) -> None:
        """Publish finished async saves (call once per step; ``blocking`` waits for all)."""
        if self._queue is not None and self._queue.get_num_unfinalized_calls():
            try:
                self._queue.maybe_finalize_async_calls(blocking=blocking)
            except CheckpointError:
                raise
            except _SAVE_ERRORS as exc:
                iteration, partial = self._in_flight or (-1, "")
                raise self._save_failed(iteration, partial, exc) from exc

    def close(self) -> None:
        try:
            self.finalize(blocking=True)
        finally:
            if self._queue is not None:
                self._queue.close(abort=True)  # nothing is left to finalize; a failed save must not be retried
            ckpt_children.release_results_queue(self._token)

    def _prune(self) -> None:
        done = list_checkpoints(self.ckpt_dir)
        for path in done[:-self.keep_last]:
            shutil.rmtree(path, ignore_errors=True)

    # --- load -------------------------------------------------------------------------------------------------
    @staticmethod
    def load(path: str, sharded_state_dict: Dict) -> Dict:
        return dist_checkpointing.load(sharded_state_dict, path)


def rng_state() -> Dict:
    """Python, numpy, torch (and CUDA, and megatron's model-parallel tracker) RNG states of this rank."""
    state = {"random": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    tracker = tensor_parallel.get_cuda_rng_tracker()
    state["tracker"] = tracker.get_states() if hasattr(tracker, "get_states") else None  # replaced trackers have none
    return state


def set_rng_state(state: Dict) -> None:
    random.setstate(state["random"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    if state.get("tracker") is not None:
        tensor_parallel.get_cuda_rng_tracker().set_states(state["tracker"])


def sharded_rng_state(pp_rank: int, pp_size: int, tp_rank: int, tp_size: int, dp_rank: int, dp_size: int):
    """One ShardedObject per rank: RNG streams are restored only at the same layout (they are per rank)."""
    return ShardedObject("rng_state", rng_state(), (pp_size, tp_size, dp_size), (pp_rank, tp_rank, dp_rank),
                         replica_id=0)
