"""Round-trip quality of the quickstart's VQ: train it exactly as ``stage_vq`` does (the quickstart's synthetic
pairs, ``QuickstartConfig``'s VQ settings, ``data_pipeline.vq_train.train_vq``), then score the 48 evaluation
scenes after encode -> decode with the exact pixel analyser (``vq_ceiling``), per attribute.

Also printed, because they tell *why* a round trip fails:
  * the same scores through the autoencoder alone (encoder -> decoder, no quantisation): what the VQ phase starts
    from, so a loss there is the encoder / decoder's and a loss only after quantisation is the codebook's;
  * codebook usage on the eval set: distinct codes overall, and distinct codes given to shape cells versus the
    distinct cell contents there are (the world has 3 backgrounds x (1 + 3 kinds x 5 colours) = 48);
  * a nearest-neighbour probe of kind and colour from the encoder latent at each shape cell, beside the same probe
    on the cell's raw pixels (``liquid_train.quickstart.probe``): a kind the latent does not carry is the
    encoder's loss, which no decoder or codebook can undo;
  * what the codes of empty cells far from every shape say about the scene (``probe.empty_cell_leak`` over all
    675 scenes): mutual information with the shapes' colour and count, against each one's entropy. A code that
    announces shapes elsewhere is one a T2I model must learn to write before it draws the shape;
  * codes per distinct cell content (a content mapped to several codes is fine; several contents sharing one
    code is what loses colour / kind);
  * VQ training time at the threads given (the quickstart budget is measured at 1 thread).

Usage: PYTHONPATH=. python benchmarks/vq_roundtrip.py [--threads 1] [--data /tmp/qs_vq_pairs] [--steps N]
[--warmup N] [--batch N] [--contrast W] [--lr LR] [--edge W] [--schedule S] [--clip C] [--seed S] [--out DIR]
"""
from __future__ import annotations

import argparse
import glob
import os
import tempfile
import time

import numpy as np
import torch

from data_pipeline.vq import load_vq_tokenizer
from data_pipeline.vq.checkpoint import save_vqgan
from data_pipeline.vq_train import SCHEDULES, VQTrainConfig, build_tiny_model, load_images_from_tars, train_vq
from liquid_train.quickstart.config import QuickstartConfig, vq_train_config
from liquid_train.quickstart.evaluate import autoencoder_scores, build_eval_set, codebook_usage, vq_ceiling
from liquid_train.quickstart.probe import empty_cell_leak, latent_probe
from liquid_train.quickstart.scene import ATTRIBUTES, GRID, all_scenes
from liquid_train.quickstart.synthetic import SyntheticConfig, eval_scenes, write_pairs

CELL = 8


def _fmt(scores: dict) -> str:
    mean = float(np.mean([scores[a] for a in ATTRIBUTES]))
    return f"mean {mean:.3f} | " + " ".join(f"{a} {scores[a]:.2f}" for a in ATTRIBUTES) + f" | all {scores['all']:.2f}"


def run(images: np.ndarray, tcfg: VQTrainConfig, out_dir: str, log=print) -> dict:
    model = build_tiny_model(resolution=GRID * CELL)
    result = train_vq(images, model, tcfg, log=log)
    save_vqgan(model, out_dir)
    vq = load_vq_tokenizer(out_dir)
    evalset = build_eval_set(vq, eval_scenes(48), CELL)
    every = build_eval_set(vq, all_scenes(), CELL)
    return {"seconds": result["seconds"], "ae": autoencoder_scores(model, evalset), "vq": vq_ceiling(vq, evalset),
            "usage": codebook_usage(evalset), "leak": empty_cell_leak(every.scenes, every.codes),
            "probe": latent_probe(model, CELL), "final_l1": float(np.mean([h["l1"] for h in result["history"][-20:]]))}


def main(argv=None) -> int:
    qs = QuickstartConfig()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data", default=os.path.join(tempfile.gettempdir(), "qs_vq_pairs"),
                   help="where the quickstart's synthetic pairs are written (reused when present)")
    p.add_argument("--out", default=None, help="where the trained VQ is saved (default: a temporary directory)")
    p.add_argument("--num-pairs", type=int, default=qs.num_pairs)
    p.add_argument("--steps", type=int, default=qs.vq_steps)
    p.add_argument("--warmup", type=int, default=qs.vq_warmup_steps)
    p.add_argument("--batch", type=int, default=qs.vq_batch)
    p.add_argument("--contrast", type=float, default=qs.vq_contrast_weight)
    p.add_argument("--lr", type=float, default=qs.vq_lr)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--edge", type=float, default=None, help="edge-loss weight (default: the quickstart's)")
    p.add_argument("--schedule", default=None, choices=SCHEDULES,
                   help="VQ learning-rate schedule (default: the quickstart's)")
    p.add_argument("--clip", type=float, default=None, help="max gradient norm, 0 off (default: the quickstart's)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    write_pairs(SyntheticConfig(num_pairs=args.num_pairs, cell_size=CELL, num_text_docs=args.num_pairs), args.data)
    images = load_images_from_tars(sorted(glob.glob(os.path.join(args.data, "*.tar"))))
    qs.vq_steps, qs.vq_warmup_steps, qs.vq_batch, qs.vq_contrast_weight, qs.vq_lr = (
        args.steps, args.warmup, args.batch, args.contrast, args.lr)
    tcfg = vq_train_config(qs)
    tcfg.seed = args.seed
    if args.schedule:
        tcfg.schedule = args.schedule
    if args.edge is not None:
        tcfg.edge_weight = args.edge
    if args.clip is not None:
        tcfg.grad_clip = args.clip
    print(f"{len(images)} training images; {tcfg}", flush=True)
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        r = run(images, tcfg, args.out or tmp)
    print(f"VQ training {r['seconds']:.1f}s at {args.threads} thread(s) (total with eval {time.time() - t0:.1f}s); "
          f"final L1 {r['final_l1']:.4f}")
    print(f"autoencoder (no quantisation) round trip: {_fmt(r['ae'])}")
    print(f"VQ round trip:                            {_fmt(r['vq'])}")
    print(f"codebook usage on the 48 eval scenes: {r['usage']}")
    probe = r["probe"]
    print(f"5-NN probe at {probe['cells']} shape cells (chance kind 0.33, colour 0.20): encoder latent kind "
          f"{probe['kind']:.2f} colour {probe['colour']:.2f}; raw cell pixels kind {probe['pixels_kind']:.2f} "
          f"colour {probe['pixels_colour']:.2f}")
    leak = r["leak"]
    print(f"empty cells far from every shape ({leak['far_cells']} over the 675 scenes, {leak['far_codes']} distinct "
          f"codes; {leak['empty_codes']} codes on empty cells, {leak['shape_codes']} on shape cells): MI with the "
          f"shapes' colour {leak['mi_colour']:.2f} of {leak['entropy_colour']:.2f} nats, count "
          f"{leak['mi_count']:.2f} of {leak['entropy_count']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
