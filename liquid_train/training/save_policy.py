"""When the training loop saves a checkpoint: every ``checkpoint.save_interval`` steps, and at least every
``checkpoint.save_interval_minutes`` minutes of wall-clock time.

Why the time rule: a step count that suits a 0.5B run (1000 steps in ~an hour) leaves a 32B run many hours without
a checkpoint; a node failure then loses all of it. Why the ranks agree: a checkpoint save is a collective, so a rank
whose clock says "due" while another's says "not yet" would deadlock; the time rule's answer is all-reduced (MAX,
one int32) so every rank saves at the same step. The step rule needs no agreement (every rank counts the same steps).
"""
from __future__ import annotations

import time
from typing import Callable, Optional

import torch
import torch.distributed as dist


def _any_rank(flag: bool) -> bool:
    t = torch.tensor([1 if flag else 0], dtype=torch.int32)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        if torch.cuda.is_available():
            t = t.cuda()
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


class SavePolicy:
    def __init__(self, every_steps: int, every_minutes: float, clock: Callable[[], float] = time.monotonic):
        self.every_steps = int(every_steps or 0)
        self.every_s = float(every_minutes or 0) * 60.0
        self.clock = clock
        self.last_time = clock()
        self.last_step: Optional[int] = None

    def due(self, step: int) -> bool:
        """Whether to save after ``step``; the same answer on every rank."""
        by_steps = self.every_steps > 0 and step % self.every_steps == 0
        by_time = False
        if self.every_s > 0:
            by_time = _any_rank(self.clock() - self.last_time >= self.every_s)
        return by_steps or by_time

    def saved(self, step: int) -> None:
        self.last_step = step
        self.last_time = self.clock()
