"""Optimizer, LR schedule and DDP wrapping, all megatron-core's own classes configured from the run config.

Why megatron's classes: its DDP overlaps the gradient all-reduce/reduce-scatter with the backward pass, its
distributed optimizer shards Adam state over DP ranks, and its OptimizerParamScheduler implements
constant / cosine / WSD with warmup and checkpoints its own state.
"""
from __future__ import annotations

import torch
from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig
from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

from liquid_train.training.config import warmup_steps

# Grad clipping at this norm never triggers; it makes megatron compute (and return) the global grad norm even
# when clipping is switched off, so grad_norm is logged on every step.
_NO_CLIP = 1.0e12


def use_distributed_optimizer(cfg) -> bool:
    """Auto: the distributed optimizer on GPU; on CPU megatron's plain optimizer, whose dist checkpoint
    round-trips bit-exactly there (the distributed optimizer's does not on CPU with torch Adam)."""
    if cfg.parallel.use_distributed_optimizer is not None:
        return bool(cfg.parallel.use_distributed_optimizer)
    return torch.cuda.is_available()


def wrap_ddp(model_chunks, cfg):
    ddp_config = DistributedDataParallelConfig(
        grad_reduce_in_fp32=True,
        overlap_grad_reduce=bool(cfg.parallel.overlap_grad_reduce),
        overlap_param_gather=bool(cfg.parallel.overlap_param_gather and use_distributed_optimizer(cfg)),
        use_distributed_optimizer=use_distributed_optimizer(cfg),
        check_for_nan_in_grad=False,
        average_in_collective=False,
    )
    return [
        DistributedDataParallel(config=chunk.config, ddp_config=ddp_config, module=chunk,
                                disable_bucketing=(i > 0))
        for i, chunk in enumerate(model_chunks)
    ]


def build_optimizer(cfg, model_chunks, precision: str):
    o = cfg.optimizer
    bf16 = precision in ("bf16", "fp8")
    opt_config = OptimizerConfig(
        optimizer=o.name, lr=o.lr, min_lr=o.min_lr, weight_decay=o.weight_decay, adam_beta1=o.beta1,
        adam_beta2=o.beta2, adam_eps=o.eps, clip_grad=o.clip_grad if o.clip_grad > 0 else _NO_CLIP, bf16=bf16,
        params_dtype=torch.bfloat16 if bf16 else torch.float32,
        use_distributed_optimizer=use_distributed_optimizer(cfg),
        overlap_param_gather=bool(cfg.parallel.overlap_param_gather and use_distributed_optimizer(cfg)),
    )
    return get_megatron_optimizer(opt_config, model_chunks)


def build_scheduler(cfg, optimizer):
    """Megatron's OptimizerParamScheduler counted in optimizer steps (not samples)."""
    s, o = cfg.schedule, cfg.optimizer
    decay = int(s.decay_steps or cfg.train.iters)
    warm = warmup_steps(cfg)
    style = {"constant": "constant", "cosine": "cosine", "wsd": "WSD", "linear": "linear"}[s.style]
    return OptimizerParamScheduler(
        optimizer, init_lr=0.0 if warm > 0 else o.lr, max_lr=o.lr, min_lr=o.min_lr, lr_warmup_steps=warm,
        lr_decay_steps=max(decay, warm + 1), lr_decay_style=style, start_wd=o.weight_decay,
        end_wd=o.weight_decay, wd_incr_steps=max(decay, 1), wd_incr_style="constant",
        use_checkpoint_opt_param_scheduler=True, override_opt_param_scheduler=False,
        wsd_decay_steps=max(1, int(round(s.wsd_decay_fraction * decay))) if style == "WSD" else None,
        lr_wsd_decay_style=s.wsd_decay_style if style == "WSD" else None,
    )
