"""Throughput of the two engines side by side: the megatron engine and the HF model under DeepSpeed ZeRO, on the same
packed batches (the tiny data of ``liquid_train.testing.runs``), the same model size and the same steps, in one
invocation (one process each, one after the other, one torch thread each), fp32 on CPU.

Prints each engine's median ``tokens_per_s`` over the steps after ``--warmup`` (from its ``metrics.jsonl``) and the
ratio deepspeed / megatron. Model size: the family's tiny size with ``--hidden``/``--layers``/``--ffn`` overriding it
(inline ``model.arch``); ``--zero-stage`` picks the ZeRO stage.

Usage: python benchmarks/engines.py [--iters 30] [--hidden 256 --layers 4 --ffn 1024] [--zero-stage 3]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile

from liquid_train.testing.distributed import run_distributed
from liquid_train.testing.runs import ensure_tiny_run_data

DRIVER = "liquid_train.testing.train_driver"


def _median_tokens_per_s(run_dir: str, warmup: int) -> float:
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        records = [r for r in map(json.loads, f) if r["kind"] == "train"]
    return statistics.median(r["tokens_per_s"] for r in records[warmup:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--ffn", type=int, default=1024)
    parser.add_argument("--seq-length", type=int, default=128)
    parser.add_argument("--zero-stage", type=int, default=3)
    parser.add_argument("--dir", default=None)
    args = parser.parse_args()
    root = args.dir or tempfile.mkdtemp(prefix="bench_engines_")
    data = ensure_tiny_run_data(os.path.join(root, "tiny_data"))
    common = [f"train.iters={args.iters}", "checkpoint.save_interval=0", "checkpoint.save_at_end=false",
              f"data.seq_length={args.seq_length}",
              f"model.arch={{hidden_size: {args.hidden}, num_layers: {args.layers}, ffn_hidden_size: {args.ffn}}}"]
    engines = {"megatron": [], "deepspeed": ["engine=deepspeed", f"deepspeed.zero_stage={args.zero_stage}"]}
    rates = {}
    for name, extra in engines.items():
        run_dir = os.path.join(root, name)
        run_distributed(DRIVER, ["--data", data.root, f"run_dir={run_dir}", *common, *extra], timeout=3600)
        rates[name] = _median_tokens_per_s(run_dir, args.warmup)
    print(f"model: tiny qwen2.5 with hidden {args.hidden}, {args.layers} layers, ffn {args.ffn}; seq {args.seq_length}, "
          f"4 sequences per step, fp32, 1 CPU thread per process")
    for name, rate in rates.items():
        print(f"{name:>10}: {rate:10.0f} tokens/s (median of steps {args.warmup + 1}-{args.iters})")
    print(f"ratio deepspeed (ZeRO-{args.zero_stage}) / megatron: {rates['deepspeed'] / rates['megatron']:.2f}")


if __name__ == "__main__":
    main()
