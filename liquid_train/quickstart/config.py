"""The quickstart's settings in one place: what the driver (``__main__``) runs with and what
``benchmarks/vq_roundtrip.py`` trains its VQ with, so a measured setting is the setting that runs. Each value that
differs from a library default says why, with the numbers that led to it (docs/quickstart.md)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List

from data_pipeline.vq_train import VQTrainConfig
from liquid_train.quickstart.plan import RUNS, SHORT_RUNS, RunSpec


@dataclass
class QuickstartConfig:
    out: str = "quickstart_out"
    short: bool = False
    num_pairs: int = 3000
    vq_steps: int = 1600
    """137 s at the quickstart's 2 threads on the 2-core box (0.09 s/step at batch 8), the stage's ~2.5-minute budget
    (``benchmarks/vq_roundtrip.py --threads 2``). 780 steps (550 warm-up, the budget at 1 thread) read back 0.63-0.70;
    1600 read back 0.787 (colour 0.56 -> 1.00, position 0.69 -> 0.83 against the 780-step VQ of the same run)."""
    vq_warmup_steps: int = 1200
    """Autoencoder steps before the k-means codebook (see ``data_pipeline.vq_train``). The autoencoder, not the
    quantiser, limits the round trip: encoder -> decoder alone scored as low as the VQ (0.33 vs 0.32 mean attribute
    accuracy at 600/400 steps, lr 1e-3; 0.792 vs 0.787 at 1600/1200), so the extra steps go to the warm-up."""
    vq_lr: float = 4e-4
    """Not the CLI default 1e-3: on these flat, sparse scenes 1e-3 trains unstably (weighted L1 jumps 0.22 -> 0.85
    between steps 100 and 200 at batch 4) and 2e-3 / 3e-3 never got past the background in 400 steps. Warm-up
    autoencoder round trip at 400 / 500 steps: lr 1e-3 0.36 / -, 4e-4 0.45 / 0.48, 2e-4 0.41 / 0.51. Full VQ
    round trip (780 steps, 550 warm-up): 0.70 (colour 0.62, position 0.81) vs 0.32 before (600 / 400, lr 1e-3)."""
    vq_batch: int = 8
    vq_contrast_weight: float = 10.0
    train_iters: int = 300
    seq_length: int = 128
    eval_scenes: int = 48
    seeds: int = 1

    def shorten(self) -> None:
        self.short = True
        self.num_pairs, self.vq_steps, self.vq_warmup_steps, self.train_iters, self.eval_scenes = 300, 4, 2, 8, 8

    @property
    def specs(self) -> List[RunSpec]:
        return list(SHORT_RUNS if self.short else RUNS)

    def iters(self, spec: RunSpec) -> int:
        """Steps of ``spec``, a multiple of 4: validation at every quarter, checkpoints at the half and the end."""
        return max(4, 4 * int(round(self.train_iters * spec.iter_multiplier / 4)))


def vq_train_config(cfg: QuickstartConfig) -> VQTrainConfig:
    """The quickstart's VQ training settings (``benchmarks/vq_roundtrip.py`` trains with the same)."""
    return VQTrainConfig(steps=cfg.vq_steps, batch_size=cfg.vq_batch, lr=cfg.vq_lr, log_every=100,
                         ae_warmup_steps=cfg.vq_warmup_steps, contrast_weight=cfg.vq_contrast_weight)
