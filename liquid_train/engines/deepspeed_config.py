"""Run config -> DeepSpeed's ``ds_config`` dict: the whole mapping, in one place.

What the run config decides and DeepSpeed only executes: the batch arithmetic (``train.global_batch_size`` =
``micro_batch_size`` x gradient accumulation x DP), ZeRO stage and offload (``deepspeed.*``), clipping
(``optimizer.clip_grad``; 0 = a bound that never triggers, so the grad norm is still computed and logged, and a
non-finite norm still makes ZeRO skip the step) and precision. The optimizer and the LR schedule are not DeepSpeed's:
a torch AdamW is passed in and ``training/optim.py``'s megatron scheduler drives its LR, as for megatron.
"""
from __future__ import annotations

from typing import Any, Dict

from liquid_train.models.builder import resolve_precision

NO_CLIP = 1.0e12
"""Clipping bound that never triggers (the grad norm is computed anyway); the megatron engine's ``_NO_CLIP``."""

ZERO_STAGES = (1, 2, 3)
OFFLOAD_DEVICES = ("none", "cpu")


def ds_config(cfg, dp: int) -> Dict[str, Any]:
    """The ds_config of run config ``cfg`` at data-parallel size ``dp``."""
    t, d = cfg.train, cfg.deepspeed
    gas = t.global_batch_size // (t.micro_batch_size * dp)
    precision = resolve_precision(cfg.model.precision)
    zero: Dict[str, Any] = {"stage": int(d.zero_stage), "contiguous_gradients": True, "overlap_comm": False}
    if d.offload_optimizer != "none":
        zero["offload_optimizer"] = {"device": d.offload_optimizer, "pin_memory": False}
    if d.offload_param != "none":
        zero["offload_param"] = {"device": d.offload_param, "pin_memory": False}
    if d.zero_stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = False  # exports consolidate from the checkpoint
    out: Dict[str, Any] = {
        "train_batch_size": t.global_batch_size,
        "train_micro_batch_size_per_gpu": t.micro_batch_size,
        "gradient_accumulation_steps": gas,
        "gradient_clipping": cfg.optimizer.clip_grad if cfg.optimizer.clip_grad > 0 else NO_CLIP,
        "zero_optimization": zero,
        "zero_allow_untested_optimizer": True,  # a torch AdamW, partitioned by ZeRO
        "zero_force_ds_cpu_optimizer": False,  # offload keeps that AdamW (no JIT-built DeepSpeedCPUAdam)
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {"enabled": precision == "fp16"},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    return out
