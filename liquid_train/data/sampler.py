"""Megatron-style pretraining batch sampler: data-parallel ranks read disjoint slices of each global batch.

Global micro-step ``j`` covers packed sequences ``[consumed + j*m*d, consumed + (j+1)*m*d)`` (m = micro batch,
d = DP size); rank ``r`` takes the ``r``-th slice of ``m``. The order depends only on ``consumed_samples``, so a
resume continues identically, and not at all on the number of loader workers (each sequence is built from its index).
"""
from __future__ import annotations

from typing import Iterator, List


class PretrainingBatchSampler:
    def __init__(self, total_samples: int, consumed_samples: int, micro_batch_size: int, dp_rank: int, dp_size: int,
                 drop_last: bool = True):
        if micro_batch_size < 1 or dp_size < 1:
            raise ValueError("micro_batch_size and dp_size must be >= 1")
        if not 0 <= dp_rank < dp_size:
            raise ValueError(f"dp_rank={dp_rank} must lie in [0, dp_size={dp_size})")
        if not 0 <= consumed_samples <= total_samples:
            raise ValueError(f"consumed_samples={consumed_samples} outside [0, {total_samples}] packed sequences")
        self.total_samples = total_samples
        self.consumed_samples = consumed_samples
        self.micro_batch_size = micro_batch_size
        self.dp_rank = dp_rank
        self.dp_size = dp_size
        self.drop_last = drop_last

    def __len__(self) -> int:
        step = self.micro_batch_size * self.dp_size
        remaining = self.total_samples - self.consumed_samples
        return remaining // step if self.drop_last else (remaining + step - 1) // step

    def _slice(self, batch: List[int]) -> List[int]:
        lo = self.dp_rank * self.micro_batch_size
        return batch[lo:lo + self.micro_batch_size]

    def __iter__(self) -> Iterator[List[int]]:
        step = self.micro_batch_size * self.dp_size
        for start in range(self.consumed_samples, self.total_samples, step):
            batch = list(range(start, min(start + step, self.total_samples)))
            if len(batch) < step and self.drop_last:
                return
            mine = self._slice(batch)
            if mine:
                yield mine
