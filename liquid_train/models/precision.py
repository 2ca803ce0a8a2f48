"""FP8 (Transformer Engine): what the run config's ``model.fp8`` block means to megatron, and whether it can run.

FP8 needs TE and a Hopper-or-newer GPU; asking for it elsewhere is one clear error (at config validation, before any
process group exists), never a silent BF16 run. The output layer is a megatron ColumnParallelLinear (not a TE
module), so it always runs in BF16; the first and last ``bf16_layers`` transformer layers are kept in BF16 with
megatron's ``first_last_layers_bf16`` options, which megatron-core supports with current (tensorwise) scaling only:
``delayed`` with BF16 end layers is refused up front.
"""
from __future__ import annotations

from typing import Optional

import torch

from liquid_train.models.options import FP8_FORMATS, FP8_RECIPES, FP8Config


def te_import_error() -> Optional[str]:
    """None when Transformer Engine imports, else why not (optional GPU package: imported here only)."""
    try:
        import transformer_engine.pytorch  # noqa: F401  (optional GPU extra)
    except Exception as exc:  # TE raises RuntimeError, not only ImportError, when its CUDA libraries are missing
        return f"{type(exc).__name__}: {exc}"
    return None


def fp8_available() -> Optional[str]:
    """None when FP8 can run, otherwise the reason it cannot."""
    if not torch.cuda.is_available():
        return "FP8 needs a CUDA GPU; none is available (set model.precision to bf16, or fp32 on CPU)"
    error = te_import_error()
    if error:
        return f"FP8 needs Transformer Engine (pip install -e .[gpu]); importing it failed: {error}"
    major, _ = torch.cuda.get_device_capability()
    if major < 9:
        return f"FP8 needs a Hopper or newer GPU (compute capability >= 9.0); this one is {major}.x"
    return None


def check_fp8_config(cfg: FP8Config, num_layers: int) -> None:
    """Settings that can never work together, whatever the machine (ValueError naming the field)."""
    if cfg.recipe not in FP8_RECIPES:
        raise ValueError(f"fp8.recipe={cfg.recipe!r}; choose one of {FP8_RECIPES}")
    if cfg.format not in FP8_FORMATS:
        raise ValueError(f"fp8.format={cfg.format!r}; choose one of {FP8_FORMATS}")
    if cfg.amax_compute_algo not in ("max", "most_recent"):
        raise ValueError(f"fp8.amax_compute_algo={cfg.amax_compute_algo!r}; choose max or most_recent")
    if cfg.recipe == "delayed" and cfg.bf16_layers:
        raise ValueError("fp8.bf16_layers: delayed scaling cannot keep the first/last layers in BF16 (megatron-core "
                         "rejects it); use fp8.recipe=tensorwise or set fp8.bf16_layers=0")
    if cfg.bf16_layers < 0 or 2 * cfg.bf16_layers >= num_layers:
        raise ValueError(f"fp8.bf16_layers={cfg.bf16_layers} leaves no FP8 layer in a {num_layers}-layer model")


def fp8_transformer_config_kwargs(cfg: FP8Config, num_layers: int) -> dict:
    """TransformerConfig kwargs for FP8 training (validated; availability is the caller's check)."""
    check_fp8_config(cfg, num_layers)
    return dict(
        fp8=cfg.format, fp8_recipe=cfg.recipe, fp8_amax_history_len=cfg.amax_history_len,
        fp8_amax_compute_algo=cfg.amax_compute_algo, first_last_layers_bf16=cfg.bf16_layers > 0,
        num_layers_at_start_in_bf16=cfg.bf16_layers, num_layers_at_end_in_bf16=cfg.bf16_layers,
    )
