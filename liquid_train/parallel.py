"""Process-group and megatron parallel-state set-up, identical under torchrun and in a plain single process.

Why a wrapper: megatron-core needs torch.distributed even for one process, and on a CPU machine it needs gloo and
the compatibility layer of :mod:`liquid_train.cpu_compat`. Tests, tools and the trainer call
``initialize_parallel(tp, pp, vpp, seed)`` and never care which of the two worlds they are in.
"""
from __future__ import annotations

import os
import random
import socket
from datetime import timedelta
from typing import Optional

import numpy as np
import torch
import torch.distributed as dist

from liquid_train.cpu_compat import enable_cpu_compat

_CREATED_PROCESS_GROUP = False


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def initialize_parallel(tp: int = 1, pp: int = 1, vpp: Optional[int] = None, seed: int = 1234,
                        cp: int = 1, timeout_minutes: int = 30) -> None:
    """Initialise torch.distributed (if needed), megatron parallel_state and the model-parallel RNG.

    Without torchrun, defaults to rank 0 of a world of 1 on 127.0.0.1 with a free port.
    """
    global _CREATED_PROCESS_GROUP
    from megatron.core import parallel_state, tensor_parallel

    use_cuda = torch.cuda.is_available()
    if not use_cuda:
        enable_cpu_compat()
    if not dist.is_initialized():
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
        os.environ.setdefault("RANK", "0")
        os.environ.setdefault("WORLD_SIZE", "1")
        os.environ.setdefault("LOCAL_RANK", "0")
        if use_cuda:
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]) % torch.cuda.device_count())
        dist.init_process_group(
            backend="nccl" if use_cuda else "gloo",
            rank=int(os.environ["RANK"]),
            world_size=int(os.environ["WORLD_SIZE"]),
            timeout=timedelta(minutes=timeout_minutes),
        )
        _CREATED_PROCESS_GROUP = True
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
    from megatron.core import parallel_state, tensor_parallel

    stage_seed = seed + 100 * parallel_state.get_pipeline_model_parallel_rank()
    random.seed(stage_seed)
    np.random.seed(stage_seed)
    torch.manual_seed(stage_seed)
    tensor_parallel.model_parallel_cuda_manual_seed(stage_seed)


def destroy_parallel() -> None:
    """Tear down megatron parallel state and the process group (safe to call twice)."""
    global _CREATED_PROCESS_GROUP
    from megatron.core import parallel_state

    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    if dist.is_initialized():
        dist.destroy_process_group()
    _CREATED_PROCESS_GROUP = False
