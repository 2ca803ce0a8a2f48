"""FP8 (Transformer Engine) configuration: recipes, BF16 first/last layers and output layer, clean errors.

FP8 needs TE and a GPU; asking for it elsewhere raises one clear error instead of silently training in BF16.
The output layer is a megatron ColumnParallelLinear (not a TE module), so it always runs in BF16; the first and last
``bf16_layers`` transformer layers are kept in BF16 via megatron's ``first_last_layers_bf16`` options (current
scaling only: megatron-core 0.16 rejects BF16 end layers with delayed scaling, so that combination is an error).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

FP8_RECIPES = ("delayed", "tensorwise")  # delayed scaling; current (per-tensor) scaling


@dataclass
class FP8Config:
    recipe: str = "tensorwise"
    """``delayed`` (amax history) or ``tensorwise`` (current scaling)."""
    fp8_format: str = "hybrid"  # e4m3 forward, e5m2 backward
    amax_history_len: int = 1024
    amax_compute_algo: str = "max"
    bf16_layers: int = 1
    """Transformer layers kept in BF16 at each end of the stack."""


def fp8_available() -> Optional[str]:
    """None when FP8 can run, otherwise the reason it cannot."""
    if not torch.cuda.is_available():
        return "FP8 needs a CUDA GPU; none is available (set precision: bf16 or fp32)"
    try:
        import transformer_engine  # noqa: F401
    except Exception as exc:
        return f"FP8 needs Transformer Engine (pip install -e .[gpu]); import failed: {exc}"
    major, _ = torch.cuda.get_device_capability()
    if major < 9:
        return f"FP8 needs a Hopper/Blackwell GPU (compute capability >= 9.0), this one is {major}.x"
    return None


def fp8_transformer_config_kwargs(cfg: FP8Config, num_layers: int) -> dict:
    """TransformerConfig kwargs for FP8 training; raises a clear error when FP8 cannot run here."""
    reason = fp8_available()
    if reason:
        raise RuntimeError(reason)
    if cfg.recipe not in FP8_RECIPES:
        raise ValueError(f"fp8.recipe must be one of {FP8_RECIPES}, got {cfg.recipe!r}")
    if cfg.recipe == "delayed" and cfg.bf16_layers:
        raise ValueError("fp8.recipe=delayed cannot keep first/last layers in BF16 (megatron-core 0.16 rejects "
                         "it); use recipe=tensorwise (current scaling) or set fp8.bf16_layers=0")
    if 2 * cfg.bf16_layers >= num_layers:
        raise ValueError(f"fp8.bf16_layers={cfg.bf16_layers} leaves no FP8 layer in a {num_layers}-layer model")
    return dict(
        fp8=cfg.fp8_format, fp8_recipe=cfg.recipe, fp8_amax_history_len=cfg.amax_history_len,
        fp8_amax_compute_algo=cfg.amax_compute_algo, first_last_layers_bf16=cfg.bf16_layers > 0,
        num_layers_at_start_in_bf16=cfg.bf16_layers, num_layers_at_end_in_bf16=cfg.bf16_layers, bf16=True,
    )
