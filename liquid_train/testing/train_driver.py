"""Trainer driver for multi-process and fault-injection tests (``python -m liquid_train.testing.train_driver``).

It trains the project's own families through :func:`liquid_train.training.run` (the production build path, the
production mixed-task data, packed THD micro-batches) on the tiny data of :mod:`liquid_train.testing.runs`::

    train_driver run_dir=R [key=value ...]                       one run (model.family=... picks the family)
    train_driver --families qwen2.5,gemma2 run_dir=R [...]       one run per family under R/<family>, one process set
    train_driver --save-init DIR --families ...                  model-only TP=1 checkpoints DIR/<family>, so runs at
                                                                 every layout start from the same weights
    train_driver --init-root DIR --families ... run_dir=R        runs starting from those (model.init_from)

The data lives in ``--data`` (default ``<parent of run_dir>/tiny_data``), created on first use.
Fault injection (tests only): ``LT_TEST_NAN_STEPS=3,4`` makes the logits NaN on those 1-based steps
(``LT_TEST_MICROBATCHES`` micro-batches per step).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

import torch
from megatron.core import dist_checkpointing

from liquid_train import parallel
from liquid_train.models.builder import build_from_run_config
from liquid_train.testing.runs import ensure_tiny_run_data, tiny_run_overrides
from liquid_train.training import TrainingAborted, load_config, run
from liquid_train.training.checkpoint import CheckpointError
from liquid_train.training.providers import ModelProvider, default_model_provider
from liquid_train.vocab import LiquidVocab


class _NaNOnSteps:
    """A model provider whose last stage returns NaN logits on the given steps (one call per micro-batch)."""

    def __init__(self, build, steps, microbatches: int):
        self.build, self.steps, self.microbatches = build, steps, microbatches

    def describe(self):
        return self.build.describe()

    def __call__(self, pre_process=None, post_process=None, vp_stage=None):
        model = self.build(pre_process, post_process, vp_stage)
        if model.post_process:
            calls = {"n": 0}

            def poison(module, args, output):
                calls["n"] += 1
                step = (calls["n"] - 1) // self.microbatches + 1
                return output * float("nan") if step in self.steps else output

            model.register_forward_hook(poison)
        return model


def nan_on_steps_provider(cfg) -> Optional[ModelProvider]:
    """The default model provider, poisoned on the steps ``LT_TEST_NAN_STEPS`` names (None when it names none)."""
    steps = {int(s) for s in os.environ.get("LT_TEST_NAN_STEPS", "").split(",") if s}
    if not steps:
        return None
    provider = default_model_provider(cfg)
    provider.provider = _NaNOnSteps(provider.provider, steps, int(os.environ.get("LT_TEST_MICROBATCHES", "1")))
    return provider


def _config(data, family: str, overrides: List[str], run_dir: Optional[str] = None):
    extra = [f"run_dir={run_dir}"] if run_dir else []
    return load_config(overrides=tiny_run_overrides(data, family) + list(overrides) + extra)


def save_init(directory: str, data, families: List[str], overrides: List[str]) -> None:
    parallel.initialize_parallel(1, 1, seed=1234)
    try:
        for family in families:
            cfg = _config(data, family, overrides, run_dir=os.path.join(directory, family))
            vocab = LiquidVocab.load(data.vocab)
            model = build_from_run_config(cfg, vocab)()
            out = os.path.join(directory, family)
            os.makedirs(out, exist_ok=True)
            dist_checkpointing.save({"model": model.sharded_state_dict()}, out)
            vocab.save(out)
    finally:
        parallel.destroy_parallel()


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="train_driver")
    parser.add_argument("--data")
    parser.add_argument("--families")
    parser.add_argument("--save-init")
    parser.add_argument("--init-root")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    run_dir = next((o.split("=", 1)[1] for o in args.overrides if o.startswith("run_dir=")), None)
    anchor = args.save_init or run_dir
    data = ensure_tiny_run_data(args.data or os.path.join(os.path.dirname(os.path.abspath(anchor)), "tiny_data"))
    overrides = [o for o in args.overrides if not o.startswith("run_dir=")]
    if args.save_init:
        save_init(args.save_init, data, (args.families or "qwen2.5").split(","), overrides)
        return 0
    if not args.families:
        family = next((o.split("=", 1)[1] for o in overrides if o.startswith("model.family=")), "qwen2.5")
        cfg = _config(data, family, overrides, run_dir)
        try:
            run(cfg, model_provider=nan_on_steps_provider(cfg))
        except TrainingAborted as err:
            print(f"ABORTED: {err}", file=sys.stderr)
            return 3
        except CheckpointError as err:  # as the CLI: one line, exit 2
            print(f"liquid-train: {err}", file=sys.stderr)
            return 2
        return 0
    first = _config(data, args.families.split(",")[0], overrides, run_dir)
    p = first.parallel
    parallel.initialize_parallel(p.tensor_parallel, p.pipeline_parallel, p.virtual_pipeline_parallel, p.seed)
    try:
        for family in args.families.split(","):
            extra = [f"model.init_from={os.path.join(args.init_root, family)}"] if args.init_root else []
            cfg = _config(data, family, overrides + extra, os.path.join(run_dir, family))
            parallel.set_seed(cfg.parallel.seed)
            run(cfg, model_provider=nan_on_steps_provider(cfg), init_parallel=False)
    finally:
        parallel.destroy_parallel()
    return 0


if __name__ == "__main__":
    sys.exit(main())
