"""Gemma 2 attention section: the scalable core attention (``attention_backend: flex``, compiled FlexAttention with
the soft-cap as a score_mod and documents / causality / window as a block mask) against the exact local path, at
Gemma 2 2B shapes (8 query heads, 4 key/value heads, head_dim 256, soft-cap 50) and seq 4096 in one and in four
documents: time per forward + backward call (CUDA events) and the peak memory a call adds, in the same run.

Both modules are built from the config the build path makes for Gemma 2 2B (layer 1: a sliding-window layer).
Outputs and query gradients must agree: bf16 2e-2 / 5e-2 relative. A dry run uses seq 256 on CPU, forward only
(FlexAttention has no CPU backward), fp32 (1e-4).
"""
from __future__ import annotations

from typing import Dict

import torch
from megatron.core.packed_seq_params import PackedSeqParams

from liquid_train.gpu_suite.context import Context, check, free_memory, part, rel_diff, sync, timed
from liquid_train.models import builder
from liquid_train.models.attention import FlexCoreAttention, LocalCoreAttention
from liquid_train.models.families import get_model_arch
from liquid_train.models.options import BuildOptions

REPEATS = 5
TOL = {"bf16": (2e-2, 5e-2), "fp32": (1e-4, 1e-4)}  # (outputs, query gradients)


def _call(ctx: Context, variant: str, seq: int, documents: int, precision: str, train: bool) -> Dict:
    arch = get_model_arch("gemma2", "2b")
    config = builder.transformer_config(arch, BuildOptions(precision=precision, attention_backend=variant,
                                                           training=train))
    module = (FlexCoreAttention if variant == "flex" else LocalCoreAttention)(config, layer_number=1)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    g = torch.Generator().manual_seed(0)
    heads, groups, d = arch.num_attention_heads, arch.num_query_groups, arch.head_dim
    q, k, v = (torch.randn(seq, n, d, generator=g).to(ctx.device, dtype).requires_grad_(train)
               for n in (heads, groups, groups))
    cu = torch.linspace(0, seq, documents + 1).round().to(torch.int32).to(ctx.device)
    params = PackedSeqParams(qkv_format="thd", cu_seqlens_q=cu, cu_seqlens_kv=cu, max_seqlen_q=seq // documents,
                             max_seqlen_kv=seq // documents)

    def step():
        for x in (q, k, v):
            x.grad = None
        out = module(q, k, v, None, packed_seq_params=params)
        if train:
            out.float().square().mean().backward()
        return out

    with timed(ctx) as first:
        step()  # compiles FlexAttention on a GPU
    free_memory(ctx)
    before = torch.cuda.memory_allocated() if ctx.cuda else 0
    with timed(ctx) as t:
        for _ in range(REPEATS):
            out = step()
    sync(ctx)
    peak = torch.cuda.max_memory_allocated() - before if ctx.cuda else None
    return {"first_call_s": first["s"], "call_s": t["s"] / REPEATS, "peak_added_bytes": peak,
            "out": out.detach().float().cpu(), "grad": q.grad.detach().float().cpu() if train else None}


def case(ctx: Context, seq: int, documents: int, precision: str, train: bool) -> Dict:
    out_tol, grad_tol = TOL[precision]
    local = _call(ctx, "local", seq, documents, precision, train)
    flex = _call(ctx, "flex", seq, documents, precision, train)
    checks = {"outputs": check(rel_diff(flex["out"], local["out"]), out_tol, "flex vs exact outputs, rel.")}
    if train:
        checks["grads"] = check(rel_diff(flex["grad"], local["grad"]), grad_tol, "flex vs exact dq, rel.")
    row = {f"{name}_{key}": value for name, r in (("exact", local), ("flex", flex))
           for key, value in r.items() if key not in ("out", "grad")}
    row["time_flex_over_exact"] = flex["call_s"] / local["call_s"]
    if ctx.cuda:
        row["memory_flex_over_exact"] = flex["peak_added_bytes"] / max(local["peak_added_bytes"], 1)
    row["checks"] = checks
    return row


def run(ctx: Context) -> Dict:
    seq, precision, train = (256, "fp32", False) if ctx.dry_run else (4096, "bf16", True)
    out: Dict = {"seq": seq, "precision": precision, "backward": train, "cases": {}}
    for documents in (1, 4):
        ctx.say(f"gemma2 attention: seq {seq} in {documents} document(s)")
        out["cases"][f"{documents} document(s)"] = part(ctx, f"gemma2 attention {documents}", case, ctx, seq,
                                                         documents, precision, train)
    return out
