"""Expand a sweep (configs/sweeps/*.yaml) into one run config per (model, variant), plus the sbatch command lines.

    python tools/sweep.py configs/sweeps/paper_scaling.yaml --out sweeps/paper_scaling [--runs-root runs] \
        [--set model.init_from=ckpt/{model} --set data.tokenizer=ckpt/{model}/tokenizer ...] [--check]

Writes ``<out>/<model>__<variant>.yaml`` and ``<out>/commands.txt``: one line per run,
``GPUS_PER_NODE=G CONFIG=<out>/<run>.yaml sbatch --nodes=N --gpus-per-node=G launch/pretrain.sh``, with N and G
from the model config's plan block (run it from the repository root after ``mkdir -p logs``). The sweep's
``required`` fields (base checkpoint, tokenizer, datasets) come from ``--set`` (``{model}``, ``{variant}``,
``{family}``, ``{size}`` expand per run) or stay ``???``, which liquid-train refuses naming the key; a line here
lists any left unset. ``--check`` runs the trainer's preflight on every composed config (paths, layout at the
plan's world size, vocabulary, tokenizer ids, data; not the GPUs), one line and exit 2 on the first problem.
Library: ``liquid_train.planning.sweeps``.
"""
from __future__ import annotations

import argparse
import sys

from liquid_train.planning.sweeps import SweepError, check, expand, unset_summary
from liquid_train.training.config import ConfigError


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sweep")
    ap.add_argument("--out", required=True)
    ap.add_argument("--runs-root", default="runs")
    ap.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                    help="a config value for every run ({model}, {variant}, {family}, {size} expand)")
    ap.add_argument("--check", action="store_true", help="preflight every composed config (needs the paths)")
    args = ap.parse_args(argv)
    try:
        runs = expand(args.sweep, args.out, args.runs_root, args.settings)
        for run in runs:
            print(run.command)
        summary = unset_summary(runs)
        if summary:
            print(f"note: {summary}", file=sys.stderr)
        if args.check:
            check(runs)
            print(f"checked {len(runs)} configs: all pass preflight (machine checks run on the job's nodes)")
    except (SweepError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
