"""Plan or check a parallel layout: parameters, per-GPU memory, FLOPs/token, tokens/day; refuses what does not fit.

    python tools/plan.py configs/models/qwen2.5_32b.yaml             # check a config (exit 1 if it does not fit)
    python tools/plan.py --family qwen2.5 --size 32b --tp 1 --pp 1   # check an ad-hoc layout
    python tools/plan.py --family gemma2 --size 9b --search --nodes 2 # smallest model-parallel layout that fits

A model config holds the trainer's ``model`` / ``parallel`` / ``train`` keys and a ``plan`` block (nodes, GPUs, the
assumed MFU) that only this tool reads; ``tools/sweep.py`` drops it when composing run configs. The numbers are
``liquid_train.accounting``'s; the layout logic is ``liquid_train.planning``'s.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Optional

from liquid_train.planning.planner import Layout, PlanError, arch_and_rows, layout_from_config, plan, search


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
    ap.add_argument("--precision", default="bf16", choices=["bf16", "fp8", "fp32"])
    ap.add_argument("--nodes", type=int, default=None)
    ap.add_argument("--gpus-per-node", type=int, default=8)
    ap.add_argument("--gpu", default="h100-80gb")
    ap.add_argument("--mfu", type=float, default=None)
    ap.add_argument("--search", action="store_true", help="find the least model-parallel layout that fits")
    args = ap.parse_args(argv)
    try:
        if args.config:
            family, size, lo = layout_from_config(args.config)
        else:
            if not (args.family and args.size):
                ap.error("give a config or --family and --size")
            family, size = args.family, args.size
            lo = Layout(tensor_parallel=args.tp, pipeline_parallel=args.pp, virtual_pipeline_parallel=args.vpp,
                        micro_batch_size=args.mbs, global_batch_size=args.gbs, seq_length=args.seq,
                        recompute=args.recompute, precision=args.precision, gpus_per_node=args.gpus_per_node,
                        gpu=args.gpu)
        if args.nodes is not None:
            lo = dataclasses.replace(lo, nodes=args.nodes)
        if args.mfu is not None:
            lo = dataclasses.replace(lo, assumed_mfu=args.mfu)
        arch, rows = arch_and_rows(family, size)
        result = search(arch, rows, lo) if args.search else plan(arch, lo, rows)
    except (PlanError, KeyError, ValueError) as err:
        print(f"plan: {err.args[0] if err.args else err}", file=sys.stderr)
        return 2
    if result is None:
        print(f"{family} {size}: no layout fits on {lo.nodes} node(s)")
        return 1
    print(result.report())
    return 0 if result.fits else 1


if __name__ == "__main__":
    sys.exit(main())
