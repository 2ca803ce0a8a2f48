"""The oracle behind docs/quickstart.md's "Why T2I position fails": train the same model on the quickstart's pairs
twice, once with the codes its VQ gave (the baseline) and once with every empty cell's code replaced by one code per
background (the code most frequent on empty cells far from every shape), then score both on the evaluation scenes
(T2I at CFG 1 by the analyser, I2T by the caption parser on the same relabelled codes). Prints both rows.

Why: the VQ's empty-cell codes carry the scene (``probe.empty_cell_leak``). This measures what that costs and buys
a T2I model. The relabelled codes decode as well as the encoder's (the round trip is printed too); a real pipeline
cannot relabel codes, so this is a diagnosis, not a setting.

Needs a quickstart output directory whose data stages are done. Writes only under ``--work``.

Usage: PYTHONPATH=. python benchmarks/quickstart_code_oracle.py --out quickstart_out [--size qs-l] [--steps 600]
[--seed 0] [--work DIR]
"""
from __future__ import annotations

import collections
import json
import os
import shutil
import sys
import tempfile
from typing import Dict

import numpy as np

from data_pipeline.vq import load_vq_tokenizer
from liquid_train.quickstart import __main__ as driver
from liquid_train.quickstart.config import QuickstartConfig
from liquid_train.quickstart.console import QuickstartConsole
from liquid_train.quickstart.evaluate import EvalConfig, build_eval_set, evaluate_exported, vq_ceiling
from liquid_train.quickstart.plan import MIX_1_1_1, RunSpec
from liquid_train.quickstart.probe import far_empty_cells
from liquid_train.quickstart.report import attribute_mean
from liquid_train.quickstart.scene import GRID
from liquid_train.quickstart.synthetic import eval_scenes, sample_scenes
from liquid_train.training.checkpoint import checkpoint_dir, iter_dirname

CELLS = GRID * GRID


def relabel(codes: np.ndarray, scenes, canon: Dict[str, int]) -> np.ndarray:
    """[n, 25] codes with every empty cell's code replaced by ``canon[background]``."""
    out = codes.copy()
    for i, scene in enumerate(scenes):
        shapes = {r * GRID + c for r, c in scene.cells()}
        out[i, [k for k in range(CELLS) if k not in shapes]] = canon[scene.background]
    return out


def main(argv=None) -> int:
    parser = driver.run_benchmark_parser(__doc__.splitlines()[0], 600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default=None, help="where the copy, runs and exports go (default: a temporary dir)")
    args = driver.parse_run_benchmark_args(parser, argv)
    meta_path = os.path.join(args.out, "data", "pairs.meta.json")
    meta = json.load(open(meta_path))
    if meta["caption_tokens"]["min"] != meta["caption_tokens"]["max"]:
        print(f"quickstart_code_oracle: {meta_path}: captions of varying length; this oracle reads the pairs as fixed "
              "[caption, codes] rows", file=sys.stderr)
        return 2
    width = meta["caption_tokens"]["max"] + CELLS
    rows = np.fromfile(os.path.join(args.out, "data", "pairs.bin"), dtype=meta["dtype"]).reshape(-1, width)
    scenes = sample_scenes(len(rows), 0)  # the order the synthetic stage wrote and the build kept
    far = collections.defaultdict(collections.Counter)
    for scene, row in zip(scenes, rows[:, -CELLS:]):
        far[scene.background].update(int(row[k]) for k in far_empty_cells(scene))
    canon = {bg: counts.most_common(1)[0][0] for bg, counts in far.items()}
    work = args.work or tempfile.mkdtemp(prefix="code_oracle_")
    oracle_out = os.path.join(work, "relabelled")
    if not os.path.exists(oracle_out):
        shutil.copytree(args.out, oracle_out, ignore=shutil.ignore_patterns("runs", "exports", "eval", "cache",
                                                                            "logs", "pictures", "scaling"))
        relabelled = rows.copy()
        relabelled[:, -CELLS:] = relabel(rows[:, -CELLS:], scenes, canon)
        relabelled.tofile(os.path.join(oracle_out, "data", "pairs.bin"))
    vq = load_vq_tokenizer(os.path.join(args.out, "vq"))
    spec = RunSpec("oracle", args.size, tuple(MIX_1_1_1.items()))
    print(f"empty-cell codes per background: {canon}")
    for name, out in (("the encoder's codes", args.out), ("one code per background", oracle_out)):
        tag = name.replace(" ", "_")
        cfg = QuickstartConfig(out=out)
        cfg.train_iters = args.steps
        con = QuickstartConsole(os.path.join(work, tag), driver.REPO, driver.CHILD_ENV)
        run = os.path.join(work, "runs", tag)
        con.run(driver._train_cmd(cfg, spec, args.seed, driver.base_config(), run), "train")
        hf = os.path.join(work, "exports", tag)
        con.run(driver.export_cmd(os.path.join(checkpoint_dir(run), iter_dirname(cfg.iters(spec))), hf,
                                  os.path.join(out, "tokenizer")), "export")
        evalset = build_eval_set(vq, eval_scenes(48), meta["resolution"] // GRID)
        if out == oracle_out:
            evalset.codes = relabel(evalset.codes, evalset.scenes, canon)
        scores = evaluate_exported(hf, vq, evalset, os.path.join(work, "eval", tag), EvalConfig(),
                                   (1.0,))
        t2i, i2t = scores["t2i"]["cfg1"], scores["i2t"]
        print(f"{name}: VQ round trip {attribute_mean(vq_ceiling(vq, evalset)):.3f}; {args.size} 1:1:1, "
              f"{cfg.iters(spec)} steps, seed {args.seed}: T2I (CFG 1) {attribute_mean(t2i):.3f} (colour "
              f"{t2i['colour']:.2f} position {t2i['position']:.2f} count {t2i['count']:.2f}), I2T "
              f"{attribute_mean(i2t):.3f} (colour {i2t['colour']:.2f} position {i2t['position']:.2f})", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
