"""Expand a sweep (configs/sweeps/*.yaml) into one resolved run config per (model, variant) plus the command lines.

    python tools/sweep.py configs/sweeps/paper_scaling.yaml --out sweeps/paper_scaling [--runs-root runs]

Each run config = model config (its planner-only ``plan`` block dropped) + ``data`` from the variant's data config +
the sweep's ``common`` and the variant's dotted overrides + ``run_dir``. Writes ``<out>/<model>__<variant>.yaml``
atomically and ``<out>/commands.txt`` (one ``liquid-train --config ...`` per line, nodes from the model's plan block).
"""
from __future__ import annotations

import argparse
import os
import sys

from omegaconf import OmegaConf

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def expand(sweep_path: str, out_dir: str, runs_root: str = "runs"):
    sweep = OmegaConf.load(sweep_path)
    for key in ("name", "models", "variants"):
        if key not in sweep:
            raise SystemExit(f"{sweep_path}: missing '{key}'")
    os.makedirs(out_dir, exist_ok=True)
    commands = []
    for model in sweep.models:
        mpath = os.path.join(REPO, "configs/models", f"{model}.yaml")
        if not os.path.exists(mpath):
            raise SystemExit(f"{sweep_path}: model '{model}' has no configs/models/{model}.yaml")
        mcfg = OmegaConf.load(mpath)
        nodes = OmegaConf.select(mcfg, "plan.nodes", default=1)
        if "plan" in mcfg:
            del mcfg["plan"]
        for vname, variant in sweep.variants.items():
            cfg = OmegaConf.merge(mcfg, {"data": OmegaConf.load(os.path.join(REPO, variant.data))})
            for k, v in list((sweep.get("common") or {}).items()) + list((variant.get("overrides") or {}).items()):
                OmegaConf.update(cfg, k, v, merge=False)
            run = f"{model}__{vname}"
            cfg.run_dir = os.path.join(runs_root, sweep.name, run)
            path = os.path.join(out_dir, f"{run}.yaml")
            tmp = path + ".tmp"
            OmegaConf.save(cfg, tmp)
            os.replace(tmp, path)
            commands.append(f"NODES={nodes} CONFIG={path} sbatch --nodes={nodes} launch/pretrain.sh")
    with open(os.path.join(out_dir, "commands.txt"), "w") as f:
        f.write("\n".join(commands) + "\n")
    return commands


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sweep")
    ap.add_argument("--out", required=True)
    ap.add_argument("--runs-root", default="runs")
    args = ap.parse_args(argv)
    for c in expand(args.sweep, args.out, args.runs_root):
        print(c)
    return 0


if __name__ == "__main__":
    sys.exit(main())
