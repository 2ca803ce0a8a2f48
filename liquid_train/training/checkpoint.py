"""Trainer checkpoints: megatron dist-checkpointing (torch_dist), keep-last-K, an atomic ``latest`` pointer.

Layout (contract 4)::

    <ckpt_dir>/latest                    text file: "iter_0000100" (replaced atomically)
    <ckpt_dir>/iter_0000100/             dist checkpoint {"model", "optimizer", "scheduler", "rng", "data"}
        liquid_vocab.json, liquid_model.json, trainer_state.json   sidecars

Why a ``.partial`` directory and a pointer: a checkpoint is written into ``iter_N.partial`` and renamed to
``iter_N`` only after every rank has finished writing (for async saves: in the finalize step); ``latest`` is
replaced after the rename. A crash at any moment leaves ``latest`` naming a complete checkpoint.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
from typing import Dict, List, Optional

import torch
import torch.distributed as dist

from liquid_train.atomic import atomic_write_text

logger = logging.getLogger(__name__)

LATEST = "latest"
STATE_FILE = "trainer_state.json"
_ITER_RE = re.compile(r"^iter_(\d{7,})$")


def iter_dirname(iteration: int) -> str:
    return f"iter_{iteration:07d}"


def _barrier():
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def read_latest(ckpt_dir: str) -> Optional[str]:
    """Path of the checkpoint ``latest`` names, or None. A pointer to a missing directory is an error."""
    pointer = os.path.join(ckpt_dir, LATEST)
    if not os.path.exists(pointer):
        return None
    with open(pointer) as f:
        name = f.read().strip()
    path = os.path.join(ckpt_dir, name)
    if not _ITER_RE.match(name) or not os.path.isdir(path):
        raise FileNotFoundError(f"{pointer} names {name!r}, which is not a checkpoint directory in {ckpt_dir}; "
                                f"point it at an existing iter_* directory or remove it to start over")
    return path


def read_trainer_state(path: str) -> Dict:
    with open(os.path.join(path, STATE_FILE)) as f:
        return json.load(f)


def list_checkpoints(ckpt_dir: str) -> List[str]:
    if not os.path.isdir(ckpt_dir):
        return []
    names = sorted(n for n in os.listdir(ckpt_dir) if _ITER_RE.match(n))
    return [os.path.join(ckpt_dir, n) for n in names]


class CheckpointManager:
    """Saves and loads trainer checkpoints; every method is called on all ranks."""

    def __init__(self, ckpt_dir: str, keep_last: int = 2, async_save: bool = False):
        self.ckpt_dir = ckpt_dir
        self.keep_last = keep_last
        self.async_save = async_save
        self._queue = None
        if async_save:
            from megatron.core.dist_checkpointing.strategies.async_utils import AsyncCallsQueue

            self._queue = AsyncCallsQueue(persistent=False)
        if _rank() == 0:
            os.makedirs(ckpt_dir, exist_ok=True)
        _barrier()

    # --- save -------------------------------------------------------------------------------------------------
    def save(self, iteration: int, sharded_state_dict: Dict, sidecars: Dict[str, Dict]) -> None:
        """Write ``sharded_state_dict`` as ``iter_<iteration>``; sidecars are JSON files written next to it."""
        from megatron.core import dist_checkpointing
        from megatron.core.dist_checkpointing.serialization import get_default_save_sharded_strategy

        self.finalize(blocking=True)  # at most one save in flight
        final = os.path.join(self.ckpt_dir, iter_dirname(iteration))
        partial = final + ".partial"
        if _rank() == 0:
            for stale in (partial, final):
                if os.path.exists(stale):
                    shutil.rmtree(stale)
            os.makedirs(partial)
        _barrier()
        strategy = get_default_save_sharded_strategy("torch_dist")
        request = dist_checkpointing.save(sharded_state_dict, partial, strategy,
                                          async_sharded_save=self.async_save)

        def publish():
            if _rank() == 0:
                for name, payload in sidecars.items():
                    atomic_write_text(os.path.join(partial, name), json.dumps(payload, indent=2, sort_keys=True),
                                      fsync=True)
                os.replace(partial, final)
                atomic_write_text(os.path.join(self.ckpt_dir, LATEST), iter_dirname(iteration) + "\n", fsync=True)
                self._prune()
                logger.info("saved checkpoint %s", final)

        if request is None:
            _barrier()
            publish()
            _barrier()
        else:
            request.add_finalize_fn(publish)
            self._queue.schedule_async_request(request)

    def finalize(self, blocking: bool = False) -> None:
        """Publish finished async saves (call once per step; ``blocking`` waits for all)."""
        if self._queue is not None and self._queue.get_num_unfinalized_calls():
            self._queue.maybe_finalize_async_calls(blocking=blocking)

    def close(self) -> None:
        self.finalize(blocking=True)
        if self._queue is not None:
            self._queue.close()

    def _prune(self) -> None:
        done = list_checkpoints(self.ckpt_dir)
        for path in done[:-self.keep_last]:
            shutil.rmtree(path, ignore_errors=True)

    # --- load -------------------------------------------------------------------------------------------------
    @staticmethod
    def load(path: str, sharded_state_dict: Dict) -> Dict:
        from megatron.core import dist_checkpointing

        return dist_checkpointing.load(sharded_state_dict, path)


def rng_state() -> Dict:
    """Python, numpy, torch (and CUDA, and megatron's model-parallel tracker) RNG states of this rank."""
    import random

    import numpy as np
    from megatron.core import tensor_parallel

    state = {"random": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    try:
        state["tracker"] = tensor_parallel.get_cuda_rng_tracker().get_states()
    except Exception:  # a tracker without states (e.g. replaced for inference)
        state["tracker"] = None
    return state


def set_rng_state(state: Dict) -> None:
    import random

    import numpy as np
    from megatron.core import tensor_parallel

    random.setstate(state["random"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    if state.get("tracker") is not None:
        tensor_parallel.get_cuda_rng_tracker().set_states(state["tracker"])


def sharded_rng_state(pp_rank: int, pp_size: int, tp_rank: int, tp_size: int, dp_rank: int, dp_size: int):
    """One ShardedObject per rank: RNG streams are restored only at the same layout (they are per rank)."""
    from megatron.core.dist_checkpointing.mapping import ShardedObject

    return ShardedObject("rng_state", rng_state(), (pp_size, tp_size, dp_size), (pp_rank, tp_rank, dp_rank),
                         replica_id=0)
