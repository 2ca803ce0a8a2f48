"""Process-group and megatron parallel-state set-up, identical under torchrun and in a plain single process.

Why a wrapper: megatron-core needs torch.distributed even for one process, and on a CPU machine it needs gloo and
the compatibility layer of :mod:`liquid_train.cpu_compat`. Tests, tools and the trainer call
``initialize_parallel(tp, pp, vpp, seed)`` and never care which of the two worlds they are in.
"""
from __future__ import annotations

import os
import random
from datetime import timedelta
from typing import Optional

import numpy as np
import torch
import torch.distributed as dist
from megatron.core import parallel_state, tensor_parallel

from liquid_train.cpu_compat import enable_cpu_compat

def initialize_parallel(tp: int = 1, pp: int = 1, vpp: Optional[int] = None, seed: int = 1234,
                        cp: int = 1, timeout_minutes: int = 30) -> None:
    """Initialise torch.distributed (if needed), megatron parallel_state and the model-parallel RNG.

    Without torchrun (no ``WORLD_SIZE`` in the environment) it is rank 0 of a world of 1 on an in-memory store:
    no TCP port is opened and nothing is written to ``os.environ``, so child processes (a trainer started by a test,
    the quickstart's stages) never inherit a port this process already holds.
    """
    use_cuda = torch.cuda.is_available()
    if not use_cuda:
        enable_cpu_compat()
    if not dist.is_initialized():
        backend = "nccl" if use_cuda else "gloo"
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if use_cuda:
            torch.cuda.set_device(local_rank % torch.cuda.device_count())
        if "WORLD_SIZE" in os.environ:  # torchrun / srun: env:// rendezvous
            dist.init_process_group(backend=backend, rank=int(os.environ["RANK"]),
                                    world_size=int(os.environ["WORLD_SIZE"]),
                                    timeout=timedelta(minutes=timeout_minutes))
        else:
            dist.init_process_group(backend=backend, store=dist.HashStore(), rank=0, world_size=1,
                                    timeout=timedelta(minutes=timeout_minutes))
    world = dist.get_world_size()
    if world % (tp * pp * cp) != 0:
        raise ValueError(f"world size {world} is not divisible by tp*pp*cp = {tp}*{pp}*{cp}")
    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    parallel_state.initialize_model_parallel(
        tensor_model_parallel_size=tp,
        pipeline_model_parallel_size=pp,
        virtual_pipeline_model_parallel_size=vpp,
        context_parallel_size=cp,
    )
    set_seed(seed)


def set_seed(seed: int) -> None:
    """Megatron's convention: a different seed per pipeline stage, model-parallel RNG tracker per TP rank."""
    stage_seed = seed + 100 * parallel_state.get_pipeline_model_parallel_rank()
    random.seed(stage_seed)
    np.random.seed(stage_seed)
    torch.manual_seed(stage_seed)
    tensor_parallel.model_parallel_cuda_manual_seed(stage_seed)


def destroy_parallel() -> None:
    """Tear down megatron parallel state and the process group (safe to call twice)."""
    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    if dist.is_initialized():
        dist.destroy_process_group()
