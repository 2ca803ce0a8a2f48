"""The local core attention on a packed THD micro-batch: short segments chunked into one call and long ones alone
(``LocalCoreAttention`` today, :func:`liquid_train.models.attention.thd_layout`) against one SDPA call per segment
(its earlier form, the baseline), in the same run.

    python benchmarks/packed_attention.py [--repeats 50] [--threads 1]

Forward + backward of one layer's core attention, fp32, on two layouts: the quickstart's largest model (8 rows of
128 positions, segments of 20-70 positions as the packer makes them, 4 query heads, 2 key/value groups, head_dim 40)
and a wider one (2 rows of 1024, segments of 50-400 positions, 16 heads, 8 groups, head_dim 64). Outputs and
gradients of the two forms must agree (1e-5 / 1e-4 relative). A small model's CPU step is bound by the number of
torch calls, so one call per short segment costs more than its FLOPs; the ratio says how much more.
"""
from __future__ import annotations

import argparse
import random
import time

import torch
import torch.nn.functional as F
from megatron.core.packed_seq_params import PackedSeqParams
from megatron.core.transformer import TransformerConfig

from liquid_train.models.attention import LocalCoreAttention
from liquid_train.parallel import destroy_parallel, initialize_parallel

LAYOUTS = {
    "quickstart L (8 x 128, d 40)": dict(rows=8, row=128, lo=20, hi=70, heads=4, groups=2, dim=40),
    "wider (2 x 1024, d 64)": dict(rows=2, row=1024, lo=50, hi=400, heads=16, groups=8, dim=64),
}


def packed_lengths(rows: int, row: int, lo: int, hi: int, rng: random.Random) -> list:
    """Segment lengths of ``rows`` rows of ``row`` positions: samples while they fit, the rest one padding segment."""
    lengths = []
    for _ in range(rows):
        left = row
        while left >= lo:
            n = min(rng.randint(lo, hi), left)
            lengths.append(n)
            left -= n
        if left:
            lengths.append(left)
    return lengths


def per_segment(module: LocalCoreAttention, q, k, v, bounds) -> torch.Tensor:
    """The baseline: one causal SDPA call per segment, as the local backend did before."""
    out = q.new_empty(q.shape)
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        qs, ks, vs = (x[lo:hi].permute(1, 0, 2).unsqueeze(0) for x in (q, k, v))
        out[lo:hi] = F.scaled_dot_product_attention(qs, ks, vs, is_causal=True, scale=module.scale,
                                                    enable_gqa=module.heads != module.groups)[0].permute(1, 0, 2)
    return out.reshape(q.size(0), -1)


def measure(fn, q, k, v, weights, repeats: int):
    """Seconds per forward + backward call (after one warm-up call), and the last call's output and gradients."""

    def call():
        for x in (q, k, v):
            x.grad = None
        out = fn(q, k, v)
        (out * weights).sum().backward()
        return out

    call()
    start = time.perf_counter()
    for _ in range(repeats):
        out = call()
    return (time.perf_counter() - start) / repeats, out.detach(), [x.grad.clone() for x in (q, k, v)]


def run_layout(name: str, spec: dict, repeats: int) -> tuple:
    lengths = packed_lengths(spec["rows"], spec["row"], spec["lo"], spec["hi"], random.Random(0))
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    bounds = cu.tolist()
    config = TransformerConfig(num_layers=1, hidden_size=spec["heads"] * spec["dim"], kv_channels=spec["dim"],
                               num_attention_heads=spec["heads"], num_query_groups=spec["groups"],
                               use_cpu_initialization=True, attention_dropout=0.0)
    module = LocalCoreAttention(config, layer_number=1)
    g = torch.Generator().manual_seed(0)
    total = bounds[-1]
    q, k, v = (torch.randn(total, n, spec["dim"], generator=g).requires_grad_()
               for n in (spec["heads"], spec["groups"], spec["groups"]))
    weights = torch.randn(total, spec["heads"] * spec["dim"], generator=g)

    def one_call(q, k, v):  # a fresh PackedSeqParams per call: the layout is built once per micro-batch, as in training
        params = PackedSeqParams(qkv_format="thd", cu_seqlens_q=cu, cu_seqlens_kv=cu, max_seqlen_q=max(lengths),
                                 max_seqlen_kv=max(lengths))
        return module(q, k, v, None, packed_seq_params=params)

    base_s, base_out, base_grads = measure(lambda q, k, v: per_segment(module, q, k, v, bounds), q, k, v, weights,
                                           repeats)
    new_s, new_out, new_grads = measure(one_call, q, k, v, weights, repeats)
    torch.testing.assert_close(new_out, base_out, rtol=1e-5, atol=1e-5)
    for got, want in zip(new_grads, base_grads):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    return name, len(lengths), base_s, new_s


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    initialize_parallel(1, 1)
    try:
        rows = [run_layout(name, spec, args.repeats) for name, spec in LAYOUTS.items()]
    finally:
        destroy_parallel()
    print(f"local core attention, packed THD, forward + backward, fp32, {args.threads} thread(s); outputs and "
          f"gradients agree")
    print("| layout | segments | one call per segment (ms) | short ones chunked (ms) | speed-up |")
    print("|---|---|---|---|---|")
    for name, segments, base_s, new_s in rows:
        print(f"| {name} | {segments} | {base_s * 1e3:.2f} | {new_s * 1e3:.2f} | {base_s / new_s:.2f}x |")


if __name__ == "__main__":
    main()
