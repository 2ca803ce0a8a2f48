"""MFU section: tokens/s and model FLOPs utilisation of the Trainer's own step, BF16 (and FP8 with TE), packed
sequences of 4096, with peak memory against the planner's prediction.

MFU is :func:`liquid_train.accounting.training_flops_per_token` (the number the trainer logs) times tokens/s over
the GPU's dense peak (:func:`liquid_train.accounting.peak_flops`). Sizes: qwen2.5-0.5b, and the largest qwen2.5
model the planner (:func:`liquid_train.planning.planner.plan`) says fits this one GPU: 7B at the deepest depth that
fits (with the least recompute that makes it fit), or 3B if that is larger. The planner's per-GPU memory without
its reserve (CUDA context, fragmentation) is compared with ``torch.cuda.max_memory_allocated``; should the run
run out of memory, the attempt is recorded and the choice is made once more with 30% of the GPU kept free.

Step times are CUDA-event times of whole optimizer steps; the first steps (FlexAttention compiles, the allocator
warms up) are reported apart and left out of the median.
"""
from __future__ import annotations

import os
import statistics
from dataclasses import replace
from typing import Dict, List, Tuple

import numpy as np
import torch

from liquid_train.accounting import GiB, gpu_key, kernels_of, peak_flops
from liquid_train.gpu_suite.context import Context, check, free_memory, part, peak_allocated
from liquid_train.gpu_suite.harness import MarkovText, make_trainer, packed_micro_batch, train_steps
from liquid_train.models import builder
from liquid_train.models.families import get_model_arch
from liquid_train.models.options import BuildOptions, RecomputeConfig
from liquid_train.models.precision import fp8_available
from liquid_train.models.vocab_extension import plan_vocab
from liquid_train.planning.planner import Layout, PlanResult, plan

WARMUP = 3
PLANNER_TOL = 1.10  # measured peak allocated / planner's prediction (without reserve)
RECOMPUTE = {"none": RecomputeConfig(), "selective": RecomputeConfig(granularity="selective", modules=["core_attn"]),
             "full": RecomputeConfig(granularity="full", method="uniform", num_layers=1)}


def _options(precision: str, recompute: str) -> BuildOptions:
    return BuildOptions(precision=precision, attention_backend="te" if precision == "fp8" else "auto",
                        recompute=RECOMPUTE[recompute])


def planned(arch, rows: int, precision: str, recompute: str, seq: int, mbs: int, gpu: str,
            headroom_gib: float = 0.0) -> PlanResult:
    """The planner's view of one GPU running this case, with the kernels the build path would pick
    (``headroom_gib`` is added to the planner's reserve)."""
    kernels = kernels_of(builder.transformer_config(arch, _options(precision, recompute)))
    layout = Layout(micro_batch_size=mbs, global_batch_size=mbs, seq_length=seq, recompute=recompute,
                    precision=precision, kernels=kernels, sequence_parallel=False, use_distributed_optimizer=True,
                    nodes=1, gpus_per_node=1, gpu=gpu, reserve_gib=Layout.reserve_gib + headroom_gib)
    return plan(arch, layout, rows)


def largest_fitting(gpu: str, seq: int, mbs: int, precision: str = "bf16",
                    headroom_gib: float = 0.0) -> Tuple[object, str, PlanResult]:
    """(arch, recompute, plan) of the largest qwen2.5 model that fits: 7B at the deepest depth that fits (least
    recompute first), or 3B when that has more parameters."""
    found: List[Tuple[object, str, PlanResult]] = []
    seven = get_model_arch("qwen2.5", "7b")
    for layers in range(seven.num_layers, 0, -1):
        arch = seven if layers == seven.num_layers else replace(seven, num_layers=layers, size=f"7b-{layers}-layers")
        hit = _first_fit(arch, precision, seq, mbs, gpu, headroom_gib)
        if hit:
            found.append(hit)
            break
    hit = _first_fit(get_model_arch("qwen2.5", "3b"), precision, seq, mbs, gpu, headroom_gib)
    if hit:
        found.append(hit)
    if not found:
        raise RuntimeError(f"the planner fits no qwen2.5 7B depth or 3B on one {gpu} at seq {seq}")
    return max(found, key=lambda f: f[2].params_total)


def _first_fit(arch, precision, seq, mbs, gpu, headroom_gib):
    rows = plan_vocab(arch).vocab_size
    for recompute in ("none", "selective", "full"):
        p = planned(arch, rows, precision, recompute, seq, mbs, gpu, headroom_gib)
        if p.fits:
            return arch, recompute, p
    return None


def measure(ctx: Context, arch, precision: str, recompute: str, seq: int, mbs: int, steps: int, gpu: str,
            budget_s: float, images: int = 8192) -> Dict:
    vocab = plan_vocab(arch, images)
    p = planned(arch, vocab.vocab_size, precision, recompute, seq, mbs, gpu)
    stream, rng = MarkovText(vocab.base_vocab_size, seed=5), np.random.default_rng(5)
    docs = (min(128, seq // 4), seq)
    batches = [packed_micro_batch(stream, rng, mbs, seq, docs, vocab.pad_id) for _ in range(steps)]
    free_memory(ctx)
    ctx.say(f"mfu: {arch.family} {arch.size} {precision}, recompute {recompute}, seq {seq} x {mbs}")
    trainer = make_trainer(arch, vocab, _options(precision, recompute), seq=seq, micro_batch_size=mbs,
                           run_dir=os.path.join(ctx.work_dir, f"mfu-{arch.size}-{precision}"), seed=5)
    backend = trainer.model_provider.provider.attention_backend
    try:
        run = train_steps(ctx, trainer, batches, budget_s)
        flops_per_token = trainer.flops_per_token(seq)
    finally:
        del trainer
    peak = peak_allocated(ctx)
    free_memory(ctx)
    timed = run["step_s"][WARMUP:] if len(run["step_s"]) > WARMUP else run["step_s"][1:] or run["step_s"]
    step = statistics.median(timed)
    tokens_per_s = mbs * seq / step
    key = gpu_key(torch.cuda.get_device_name()) if ctx.cuda else None
    mfu = flops_per_token * tokens_per_s / peak_flops(key, precision) if key else None
    predicted = (p.memory_gib["total"] - p.memory_gib["reserve"]) * GiB
    out = {"arch": arch.size, "layers": arch.num_layers, "params": p.params_total, "precision": precision,
           "attention_backend": backend, "recompute": recompute, "seq": seq, "rows": mbs,
           "steps": len(run["step_s"]), "first_steps_s": [round(s, 3) for s in run["step_s"][:WARMUP]],
           "step_s": step, "tokens_per_s": tokens_per_s, "flops_per_token": flops_per_token,
           "tflops_per_s": flops_per_token * tokens_per_s / 1e12, "mfu": mfu, "peak_of": key,
           "loss_first_last": [run["losses"][0], run["losses"][-1]],
           "planner_gib": {k: round(v, 2) for k, v in p.memory_gib.items()}, "planner_gpu": gpu,
           "peak_allocated_gib": peak / GiB if peak is not None else None}
    if peak is not None:
        out["checks"] = {"memory": check(peak / predicted, PLANNER_TOL,
                                         "peak allocated / planner's memory without reserve")}
    return out


def run(ctx: Context) -> Dict:
    gpu = (gpu_key(torch.cuda.get_device_name()) if ctx.cuda else None) or "h100-80gb"
    out: Dict = {"planner_gpu": gpu, "cases": {}}
    if ctx.dry_run:
        arch, recompute, p = largest_fitting(gpu, 4096, 1)  # the planner's choice is exercised, not trained
        out["largest_planned"] = {"arch": arch.size, "recompute": recompute, "params": p.params_total}
        tiny = get_model_arch("qwen2.5", "tiny")
        for name, recompute, steps in (("tiny fp32", "none", 5), ("tiny fp32 full recompute", "full", 4)):
            out["cases"][name] = part(ctx, f"mfu {name}", measure, ctx, tiny, "fp32", recompute, 64, 2, steps, gpu,
                                      20.0, images=64)
        return out
    cases = [("qwen2.5-0.5b bf16", get_model_arch("qwen2.5", "0.5b"), "bf16", "none", 2)]
    if fp8_available() is None:
        cases.append(("qwen2.5-0.5b fp8", get_model_arch("qwen2.5", "0.5b"), "fp8", "none", 2))
    else:
        out["fp8"] = f"skipped: {fp8_available()}"
    for name, arch, precision, recompute, mbs in cases:
        out["cases"][name] = part(ctx, f"mfu {name}", measure, ctx, arch, precision, recompute, 4096, mbs, 13, gpu,
                                  max(10.0, min(40.0, ctx.left() / 3)))
    headroom = 0.0
    for attempt in range(2):  # once more with 30% of the GPU kept free, if the planner's choice runs out of memory
        arch, recompute, p = largest_fitting(gpu, 4096, 1, headroom_gib=headroom)
        name = f"largest: qwen2.5-{arch.size} bf16" + (" (30% kept free)" if headroom else "")
        out["cases"][name] = result = part(ctx, f"mfu {name}", measure, ctx, arch, "bf16", recompute, 4096, 1, 13,
                                           gpu, max(10.0, min(60.0, ctx.left() / 2)))
        if not result["status"].startswith("failed: OutOfMemoryError"):
            break
        result.update(recompute=recompute, planner_gib={k: round(v, 2) for k, v in p.memory_gib.items()})
        headroom = 0.3 * p.memory_gib["capacity"]
    return out
