"""How many torch intra-op threads each encode process uses, and setting them.

Why: torch starts as many intra-op threads as it sees cores, in the encoder process and (if left alone) in every
DataLoader worker. With ``W`` decode workers next to the encoder, ``W + 1`` processes then each run a full-width
thread pool on the same cores; on a busy 2-core box that made encoding 8-40x slower than one thread per process
(measured: 1.1-5.3 img/s against 63-79 img/s). The default gives each of the ``W + 1`` processes an equal share.

"Cores" are the CPUs this process may run on (its affinity mask), capped by a cgroup CPU quota and by SLURM's
``SLURM_CPUS_PER_TASK`` when set; torchrun's ``LOCAL_WORLD_SIZE`` processes on one node share them.
"""
from __future__ import annotations

import math
import os
from typing import Mapping, Optional

import torch


def _cgroup_quota_cores() -> Optional[int]:
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return max(1, math.ceil(int(quota) / int(period)))


def available_cores(env: Optional[Mapping[str, str]] = None) -> int:
    env = os.environ if env is None else env
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = _cgroup_quota_cores()
    if quota is not None:
        cores = min(cores, quota)
    if env.get("SLURM_CPUS_PER_TASK", "").isdigit():
        cores = min(cores, int(env["SLURM_CPUS_PER_TASK"]))
    elif env.get("LOCAL_WORLD_SIZE", "").isdigit():
        cores = cores // max(1, int(env["LOCAL_WORLD_SIZE"]))
    return max(1, cores)


def default_threads(num_workers: int, env: Optional[Mapping[str, str]] = None) -> int:
    """cores // (workers + 1), at least 1: one share for each decode worker and one for the encoder."""
    return max(1, available_cores(env) // (max(0, num_workers) + 1))


def set_threads(n: int) -> None:
    """Intra-op threads of this process (torch, and OpenMP/MKL through torch)."""
    if n < 1:
        raise ValueError(f"threads must be >= 1, got {n}")
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


class WorkerThreads:
    """DataLoader ``worker_init_fn`` that sets the thread count inside each worker (picklable, unlike a lambda)."""

    def __init__(self, n: int):
        self.n = n

    def __call__(self, worker_id: int) -> None:
        set_threads(self.n)
