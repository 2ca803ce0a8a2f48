"""Preemption signals (SLURM sends SIGUSR1 before the time limit, SIGTERM on cancel/requeue).

Why a flag and not work in the handler: a checkpoint is a collective over all ranks, so the handler only records
the signal; the loop checks the flag at each step boundary, agrees on it across ranks (one all-reduce), saves,
and exits cleanly.
"""
from __future__ import annotations

import signal
from typing import Optional

import torch
import torch.distributed as dist


class PreemptionHandler:
    SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

    def __init__(self):
        self.received: Optional[int] = None
        self._previous = {}

    def __enter__(self):
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, prev in self._previous.items():
            signal.signal(sig, prev)
        return False

    def _handle(self, signum, frame):
        self.received = signum

    def any_rank_signalled(self) -> bool:
        """True on every rank when any rank got a signal (one tiny all-reduce)."""
        flag = torch.tensor([1 if self.received is not None else 0], dtype=torch.int32)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            if torch.cuda.is_available():
                flag = flag.cuda()
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())
