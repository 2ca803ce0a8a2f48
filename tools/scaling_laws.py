"""Scaling-law fits from many runs' metrics: loss vs compute per size, Chinchilla L(N, D), eval score vs loss.

    python tools/scaling_laws.py runs/*/ --out scaling_out [--wandb-csv export.csv ...] [--eval scores.csv]

Inputs: run directories (``metrics.jsonl`` + ``run_info.json``, written by the trainer) or wandb CSV exports with
columns ``run, num_params, consumed_tokens, val_loss`` (``flops`` optional). Outputs in ``--out``: ``fits.json``,
``fits.md`` (bootstrap 95% intervals), ``loss_vs_flops.png/svg`` and, with ``--eval``, ``score_vs_loss.png/svg``.

A fit the data do not determine is not made, and one line says why (the Chinchilla law needs runs of at least three
sizes; a per-size power law more points than its two parameters; an optimum where a term vanishes is refused).
``--chinchilla require`` makes that line an error (exit 2); ``off`` skips the fit. The library is
``liquid_train.planning.scaling_laws`` (docs/scaling.md).
"""
from __future__ import annotations

import argparse
import json
import sys

from liquid_train.planning.scaling_laws import CHINCHILLA_STARTS, analyse, read_run_dir, read_wandb_csv


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="*", help="run directories with metrics.jsonl + run_info.json")
    ap.add_argument("--wandb-csv", action="append", default=[])
    ap.add_argument("--eval", help="CSV with columns val_loss, score (e.g. VQAScore per checkpoint)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--bootstrap", type=int, default=100)
    ap.add_argument("--chinchilla", choices=["auto", "require", "off"], default="auto",
                    help="auto: fit L(N, D) when the runs determine it, else say why; require: that is an error")
    ap.add_argument("--chinchilla-starts", default=str(CHINCHILLA_STARTS),
                    help="L-BFGS-B starts for the Chinchilla fit: the N best of the 192-point grid, or 'all' "
                         f"(Hoffmann et al.'s exhaustive search; the fit ~20x slower); default {CHINCHILLA_STARTS}")
    args = ap.parse_args(argv)
    if args.chinchilla_starts == "all":
        starts = None
    elif args.chinchilla_starts.isdigit() and int(args.chinchilla_starts) > 0:
        starts = int(args.chinchilla_starts)
    else:
        ap.error(f"--chinchilla-starts: a positive integer or 'all', not {args.chinchilla_starts!r}")
    try:
        runs = [read_run_dir(p) for p in args.runs]
        for c in args.wandb_csv:
            runs.extend(read_wandb_csv(c))
        if not runs:
            ap.error("no runs given")
        result = analyse(runs, args.out, args.eval, args.bootstrap, starts, chinchilla=args.chinchilla != "off")
    except (ValueError, FileNotFoundError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if "chinchilla" in result:
        print("Chinchilla fit:", json.dumps(result["chinchilla"]))
    with open(f"{args.out}/fits.md") as f:
        print(f.read(), end="")
    refused = result["not_fitted"].get("chinchilla")
    if refused and args.chinchilla == "require":
        print(f"error: chinchilla fit refused: {refused}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}/fits.json, fits.md, loss_vs_flops.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
