"""Which slice of the work this process owns, from torchrun and/or SLURM (array) environment variables.

No process group is created: encoding needs no communication, only a partition that every process computes the
same way. World = (array tasks) x (processes per task); unit ``i`` belongs to rank ``i % world``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping, Optional


@dataclass(frozen=True)
class RankInfo:
    rank: int
    world_size: int
    local_rank: int


def _int(env: Mapping[str, str], key: str) -> Optional[int]:
    value = env.get(key)
    return int(value) if value not in (None, "") else None


def detect_rank(env: Optional[Mapping[str, str]] = None, rank: Optional[int] = None,
                world_size: Optional[int] = None) -> RankInfo:
    env = os.environ if env is None else env
    if rank is not None or world_size is not None:
        if rank is None or world_size is None or not 0 <= rank < world_size:
            raise ValueError(f"--rank and --world-size must be given together with 0 <= rank < world; got {rank}, {world_size}")
        return RankInfo(rank, world_size, _int(env, "LOCAL_RANK") or 0)
    # processes inside one job (torchrun first, then srun tasks)
    if _int(env, "WORLD_SIZE") is not None:
        inner_rank, inner_world = _int(env, "RANK") or 0, _int(env, "WORLD_SIZE")
        local = _int(env, "LOCAL_RANK") or 0
    elif _int(env, "SLURM_NTASKS") is not None:
        inner_rank, inner_world = _int(env, "SLURM_PROCID") or 0, _int(env, "SLURM_NTASKS")
        local = _int(env, "SLURM_LOCALID") or 0
    else:
        inner_rank, inner_world, local = 0, 1, 0
    # SLURM job arrays: each array task is an independent job holding 1/count of the work
    task_id, task_count = _int(env, "SLURM_ARRAY_TASK_ID"), _int(env, "SLURM_ARRAY_TASK_COUNT")
    if task_id is not None and task_count is not None:
        task_min = _int(env, "SLURM_ARRAY_TASK_MIN") or 0
        array_index = task_id - task_min
        if not 0 <= array_index < task_count:
            raise ValueError(f"SLURM array task {task_id} outside [{task_min}, {task_min + task_count}); "
                             "use a contiguous array (--array=0-N)")
        return RankInfo(array_index * inner_world + inner_rank, task_count * inner_world, local)
    return RankInfo(inner_rank, inner_world, local)
