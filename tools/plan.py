"""Plan or check a parallel layout: parameters, per-GPU memory, FLOPs/token, tokens/day; refuses what does not fit.

    python tools/plan.py configs/models/qwen2.5_32b.yaml             # check a config (exit 1 if it does not fit)
    python tools/plan.py --family qwen2.5 --size 32b --tp 1 --pp 1   # check an ad-hoc layout
    python tools/plan.py --family gemma2 --size 9b --search --nodes 2 # smallest model-parallel layout that fits

A model config holds the trainer's ``model``/``parallel``/``train`` keys and a ``plan`` block (nodes, recompute,
fp8, assumed MFU) that only this tool reads; ``tools/sweep.py`` drops it when composing run configs.
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import sys
from typing import Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from omegaconf import OmegaConf  # noqa: E402

from liquid_train.planning.planner import Layout, plan  # noqa: E402


def arch_and_rows(family: str, size: str, num_image_tokens: int = 8192):
    from liquid_train.models.families import get_model_arch
    from liquid_train.models.vocab_extension import plan_vocab
    arch = get_model_arch(family, size)
    return arch, plan_vocab(arch, num_image_tokens).vocab_size


def layout_from_config(path: str) -> tuple:
    if not os.path.exists(path):
        raise SystemExit(f"{path}: no such config")
    cfg = OmegaConf.load(path)
    try:
        family, size = cfg.model.family, cfg.model.size
    except Exception:
        raise SystemExit(f"{path}: needs model.family and model.size")
    par, train, pl = cfg.get("parallel", {}), cfg.get("train", {}), cfg.get("plan", {})
    data = cfg.get("data", {}) or {}
    known = {f.name for f in dataclasses.fields(Layout)}
    bad = set(pl.keys()) - known
    if bad:
        raise SystemExit(f"{path}: unknown plan keys {sorted(bad)}; known: {sorted(known)}")
    lo = Layout(tensor_parallel=par.get("tensor_parallel", 1), pipeline_parallel=par.get("pipeline_parallel", 1),
                virtual_pipeline_parallel=par.get("virtual_pipeline_parallel", None),
                sequence_parallel=bool(par.get("sequence_parallel", True)),
                micro_batch_size=train.get("micro_batch_size", 1),
                global_batch_size=train.get("global_batch_size", 1024),
                seq_length=data.get("seq_length", 2048) if hasattr(data, "get") else 2048,
                **OmegaConf.to_container(pl) if pl else {})
    return family, size, lo


def search(arch, rows, base: Layout):
    """Least model parallelism first (TP, then PP), then the largest micro-batch, then the least recompute."""
    best = None
    for tp, pp in sorted(itertools.product([1, 2, 4, 8], [1, 2, 4, 8, 16]), key=lambda x: (x[0] * x[1], x[1])):
        for recompute in ("none", "selective", "full"):
            for mbs in (8, 4, 2, 1):
                lo = dataclasses.replace(base, tensor_parallel=tp, pipeline_parallel=pp, micro_batch_size=mbs,
                                         recompute=recompute, virtual_pipeline_parallel=None)
                if pp > 1 and arch.num_layers % (pp * 2) == 0 and pp < arch.num_layers:
                    lo = dataclasses.replace(lo, virtual_pipeline_parallel=2)
                r = plan(arch, lo, rows)
                if r.fits:
                    return r
    return best


def main(argv: Optional[list] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", nargs="?")
    ap.add_argument("--family")
    ap.add_argument("--size")
    ap.add_argument("--tp", type=int, default=1)
    ap.add_argument("--pp", type=int, default=1)
    ap.add_argument("--vpp", type=int, default=None)
    ap.add_argument("--mbs", type=int, default=1)
    ap.add_argument("--gbs", type=int, default=1024)
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--recompute", default="selective", choices=["none", "selective", "full"])
    ap.add_argument("--fp8", action="store_true")
    ap.add_argument("--nodes", type=int, default=None)
    ap.add_argument("--gpus-per-node", type=int, default=8)
    ap.add_argument("--gpu", default="h100-80gb")
    ap.add_argument("--mfu", type=float, default=None)
    ap.add_argument("--search", action="store_true", help="find the least model-parallel layout that fits")
    args = ap.parse_args(argv)
    if args.config:
        family, size, lo = layout_from_config(args.config)
    else:
        if not (args.family and args.size):
            ap.error("give a config or --family and --size")
        family, size = args.family, args.size
        lo = Layout(tensor_parallel=args.tp, pipeline_parallel=args.pp, virtual_pipeline_parallel=args.vpp,
                    micro_batch_size=args.mbs, global_batch_size=args.gbs, seq_length=args.seq,
                    recompute=args.recompute, fp8=args.fp8, gpus_per_node=args.gpus_per_node, gpu=args.gpu)
    if args.nodes is not None:
        lo = dataclasses.replace(lo, nodes=args.nodes)
    if args.mfu is not None:
        lo = dataclasses.replace(lo, assumed_mfu=args.mfu)
    arch, rows = arch_and_rows(family, size)
    result = search(arch, rows, lo) if args.search else plan(arch, lo, rows)
    if result is None:
        print(f"{family} {size}: no layout fits on {lo.nodes} node(s)")
        return 1
    print(result.report())
    return 0 if result.fits else 1


if __name__ == "__main__":
    sys.exit(main())
