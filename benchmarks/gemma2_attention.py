"""Gemma 2 core attention at long sequence: FlexAttention (``attention_backend: flex``) against the exact local path,
in the same run. Peak memory and time of one layer's core attention on a packed THD batch.

    python benchmarks/gemma2_attention.py [--seq 4096] [--documents 4] [--threads 2]

Gemma 2 2B shapes (8 query heads, 4 key/value heads, head_dim 256, soft-cap 50, window 4096). The exact path
materialises fp32 ``[heads, n, n]`` scores per document; FlexAttention (compiled) works in blocks. On a CPU both run
forward only (FlexAttention has no CPU backward); on a GPU forward + backward. Each variant runs in its own process
so that its peak is its own (GPU: max allocated; CPU: the growth of the resident set's high-water mark over the
timed calls, reset after the warm-up, with glibc returning freed buffers to the system).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch
from megatron.core.packed_seq_params import PackedSeqParams
from megatron.core.transformer import TransformerConfig
from torch.nn.attention.flex_attention import flex_attention

from liquid_train.models import attention
from liquid_train.models.attention import FlexCoreAttention, LocalCoreAttention
from liquid_train.parallel import initialize_parallel


def _config(window: int):
    cfg = TransformerConfig(num_layers=2, hidden_size=2304, num_attention_heads=8, num_query_groups=4,
                            kv_channels=256, ffn_hidden_size=9216, use_cpu_initialization=True,
                            attention_dropout=0.0, hidden_dropout=0.0)
    cfg.liquid_attn_logit_softcap = 50.0
    cfg.liquid_sliding_window = window
    cfg.liquid_window_layers = 2
    return cfg


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def run_variant(variant: str, seq: int, documents: int, window: int) -> dict:
    if variant == "flex":  # compiled on every device here (the trainer compiles it on GPUs; eager on CPU is the
        compiled = torch.compile(flex_attention, dynamic=False)  # unblocked reference form)
        attention._flex_kernel = lambda: compiled

    initialize_parallel(1, 1)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.bfloat16 if cuda else torch.float32
    module = (FlexCoreAttention if variant == "flex" else LocalCoreAttention)(_config(window), layer_number=1)
    g = torch.Generator().manual_seed(0)
    q = torch.randn(seq, 8, 256, generator=g).to(device, dtype)
    k = torch.randn(seq, 4, 256, generator=g).to(device, dtype)
    v = torch.randn(seq, 4, 256, generator=g).to(device, dtype)
    cu = torch.linspace(0, seq, documents + 1).round().to(torch.int32).to(device)
    params = PackedSeqParams(qkv_format="thd", cu_seqlens_q=cu, cu_seqlens_kv=cu, max_seqlen_q=seq // documents,
                             max_seqlen_kv=seq // documents)
    train = cuda
    for x in (q, k, v):
        x.requires_grad_(train)

    def step():
        out = module(q, k, v, None, packed_seq_params=params)
        if train:
            out.float().square().mean().backward()
        return out

    step()  # warm-up (compiles FlexAttention)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    else:  # the peak of the measured calls alone: reset the process's high-water mark after the warm-up
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    base = _status_kib("VmRSS")
    start = time.perf_counter()
    repeats = 3
    for _ in range(repeats):
        out = step()
    if cuda:
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / repeats
    peak = torch.cuda.max_memory_allocated() if cuda else (_status_kib("VmHWM") - base) * 1024
    return {"variant": variant, "seconds": seconds, "peak_bytes": peak, "device": str(device),
            "checksum": float(out.detach().float().abs().sum()), "backward": train}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seq", type=int, default=4096)
    ap.add_argument("--documents", type=int, default=4)
    ap.add_argument("--window", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--variant", choices=("local", "flex"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.variant:
        print(json.dumps(run_variant(args.variant, args.seq, args.documents, args.window)))
        return
    rows = {}
    for variant in ("local", "flex"):
        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")  # freed buffers go back to the system (CPU RSS)
        out = subprocess.run([sys.executable, __file__, "--variant", variant, "--seq", str(args.seq),
                              "--documents", str(args.documents), "--window", str(args.window),
                              "--threads", str(args.threads)], capture_output=True, text=True, check=True, env=env)
        rows[variant] = json.loads(out.stdout.strip().splitlines()[-1])
    local, flex = rows["local"], rows["flex"]
    mode = "forward + backward" if local["backward"] else "forward only (no FlexAttention backward on CPU)"
    print(f"Gemma 2 2B core attention, seq {args.seq} in {args.documents} documents, window {args.window}, "
          f"{local['device']}, {mode}, {args.threads} thread(s)")
    print("| path | peak memory | time / call |")
    print("|---|---|---|")
    for name, row in (("exact local (today)", local), ("flex", flex)):
        print(f"| {name} | {row['peak_bytes'] / 2**20:,.0f} MiB | {row['seconds'] * 1e3:,.0f} ms |")
    print(f"flex / local: memory {flex['peak_bytes'] / max(local['peak_bytes'], 1):.3f}, "
          f"time {flex['seconds'] / local['seconds']:.2f}; outputs |sum| {local['checksum']:.6g} vs "
          f"{flex['checksum']:.6g}")


if __name__ == "__main__":
    main()
