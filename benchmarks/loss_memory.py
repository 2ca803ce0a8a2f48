"""Bytes the loss keeps for backward per token, and its time, against the path it replaced, in the same run.

    python benchmarks/loss_memory.py [--tokens 1024] [--vocab 160256] [--dtype bf16]

The old path is megatron's ``vocab_parallel_cross_entropy`` on an fp32 copy of the logits plus a separate
logsumexp for the z-loss (what ``liquid_train.training.loss`` did before); the new one is
``liquid_train.training.loss.liquid_loss``. Both run with z-loss on, on the same logits, single process (TP=1).
Printed per token, against the size of the logits in the given dtype.
"""
from __future__ import annotations

import argparse
import time

import torch
from megatron.core.tensor_parallel import vocab_parallel_cross_entropy as megatron_cross_entropy

from liquid_train.parallel import destroy_parallel, initialize_parallel
from liquid_train.training.loss import liquid_loss
from liquid_train.training.memory_probe import saved_bytes

Z_LOSS = 1e-4


def old_loss(logits, labels, mask):
    """The replaced loss, op for op: an fp32 copy, its logsumexp, then megatron's cross-entropy (which shifts and
    exponentiates that copy in place, so the logsumexp must not save it: it saves its own exp instead)."""
    logits = logits.float()
    row_max = logits.max(dim=-1).values.detach()
    lse = torch.log(torch.exp(logits - row_max.unsqueeze(-1)).sum(dim=-1)) + row_max
    ce = megatron_cross_entropy(logits, labels)
    return (ce * mask).sum() + Z_LOSS * (lse.square() * mask).sum()


def new_loss(logits, labels, mask):
    tasks = torch.zeros_like(labels)
    total, _, _ = liquid_loss(logits, labels, mask, tasks, 0, 64, Z_LOSS, torch.arange(labels.numel()))
    return total


def measure(fn, logits, labels, mask, repeats: int):
    best = float("inf")
    for _ in range(repeats):
        x = logits.detach().clone().requires_grad_(True)
        start = time.perf_counter()
        with saved_bytes() as saved:
            loss = fn(x, labels, mask)
        loss.backward()
        best = min(best, time.perf_counter() - start)
    return saved["bytes"], best, float(loss)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=1024)
    ap.add_argument("--vocab", type=int, default=160256, help="Qwen2.5 rows + 8192 image codes, padded")
    ap.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    initialize_parallel(1, 1)
    try:
        dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
        g = torch.Generator().manual_seed(0)
        logits = (torch.randn(1, args.tokens, args.vocab, generator=g) * 3).to(dtype)
        labels = torch.randint(0, args.vocab, (1, args.tokens), generator=g)
        mask = torch.ones(1, args.tokens)
        logits_bytes = logits.element_size() * args.vocab
        rows = {name: measure(fn, logits, labels, mask, args.repeats) for name, fn in
                (("old", old_loss), ("new", new_loss))}
    finally:
        destroy_parallel()
    print(f"tokens {args.tokens}, vocab {args.vocab}, logits {args.dtype}, z-loss on, {args.threads} thread(s)")
    print(f"| path | saved for backward / token | x {args.dtype} logits | fwd+bwd s | loss |")
    print("|---|---|---|---|---|")
    for name, (saved, seconds, loss) in rows.items():
        per_token = saved / args.tokens
        print(f"| {name} | {per_token / 1024:,.1f} KiB | {per_token / logits_bytes:.2f}x | {seconds:.3f} | "
              f"{loss:.6g} |")
    old, new = rows["old"], rows["new"]
    print(f"new/old saved bytes: {new[0] / old[0]:.3f}; new/old time: {new[1] / old[1]:.2f}; "
          f"loss rel. diff {abs(new[2] - old[2]) / abs(old[2]):.2e}")


if __name__ == "__main__":
    main()
