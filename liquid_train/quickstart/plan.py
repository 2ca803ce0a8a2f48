"""Which runs the quickstart trains and scores: the run specs, their seeds and the names of their directories.

Seed ``k`` sets both the initialisation (``parallel.seed``) and the data order (``data.seed``) of every run, so the
runs of one seed differ only in the setting a question compares; the statistics pair them by seed
(``stats.py``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Tuple

from liquid_train.accounting import training_flops_per_token
from liquid_train.quickstart.sizes import arch_overrides, size_arch

BASE_SEED = 1234

MIX_1_1_1 = {"text": 1, "t2i": 1, "i2t": 1}


@dataclass(frozen=True)
class RunSpec:
    name: str
    size: str
    mixture: Tuple[Tuple[str, int], ...]
    iter_multiplier: float = 1.0
    """Extra data means extra steps, as in the paper's Table 1 (1:2:1 and 1:1:2 see 4/3 of the 1:1:1 samples)."""

    @property
    def mix(self) -> Dict[str, int]:
        return dict(self.mixture)

    @property
    def mixed(self) -> bool:
        return self.mix["t2i"] > 0 or self.mix["i2t"] > 0

    def cost(self, iters: int, seq_length: int, vocab_rows: int) -> float:
        """Model FLOPs of ``iters`` steps per token of a step (every run has the same tokens per step): what orders
        the runs when several train at once, longest first."""
        return iters * training_flops_per_token(size_arch(self.size), seq_length, vocab_rows)

    def run_name(self, seed: int) -> str:
        return f"{self.name}_seed{seed}"

    def overrides(self, seed: int) -> List[str]:
        return [*arch_overrides(self.size), *(f"data.mixture.{k}={v}" for k, v in self.mixture),
                f"parallel.seed={BASE_SEED + seed}", f"data.seed={BASE_SEED + seed}"]


def _spec(name: str, size: str, mix: Dict[str, int], mult: float = 1.0) -> RunSpec:
    return RunSpec(name, size, tuple(mix.items()), mult)


RUNS: Tuple[RunSpec, ...] = (
    _spec("s_1-1-1", "qs-s", MIX_1_1_1),
    _spec("m_1-1-1", "qs-m", MIX_1_1_1),
    _spec("l_1-1-1", "qs-l", MIX_1_1_1),
    _spec("m_1-2-1", "qs-m", {"text": 1, "t2i": 2, "i2t": 1}, 4 / 3),
    _spec("m_1-1-2", "qs-m", {"text": 1, "t2i": 1, "i2t": 2}, 4 / 3),
    _spec("s_text", "qs-s", {"text": 1, "t2i": 0, "i2t": 0}),
    _spec("l_text", "qs-l", {"text": 1, "t2i": 0, "i2t": 0}),
)
SHORT_RUNS = RUNS[:2]
SIZE_SERIES = ("s_1-1-1", "m_1-1-1", "l_1-1-1")
"""The 1:1:1 runs at growing size: the scaling fit and the "loss falls with size" question."""


def process_slots(cores: int, runs: int) -> Tuple[int, int]:
    """(child processes at once, torch threads of each) for ``cores`` cores and ``runs`` processes to run: the
    training runs, and the HF exports.

    Why several at once: these models are too small to keep two cores busy from one process. Measured on the
    2-core box, two L 1:1:1 runs of 300 steps at one thread each took 133 s together, against 87.5 s each (175 s)
    one after the other at two threads: 1.32x the throughput (docs/quickstart.md)."""
    workers = max(1, min(runs, cores))
    return workers, max(1, cores // workers)
