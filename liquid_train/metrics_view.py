"""A run's ``metrics.jsonl`` as a person reads it in a terminal: the loss per task over training, the validation
losses, what the data stream delivered (packing efficiency, epochs per task), throughput, and where the sample grids
and checkpoints are. For curves, point TensorBoard at ``<run_dir>/tensorboard`` (or use the wandb run).

Why a summary and not the raw file: one line per step of ~25 numbers is unreadable past a few steps, and the
questions a person has while a run goes ("is each task's loss falling? is the mixture what I asked for? is the data
recycling?") are each a few numbers.
"""
from __future__ import annotations

import json
import os
from typing import Dict, List, Optional

METRICS_FILE = "metrics.jsonl"  # written by liquid_train.training.metrics (not imported: that package loads megatron)
from liquid_train.vocab import TASK_NAMES


def read_records(run_dir: str) -> List[Dict]:
    path = os.path.join(run_dir, METRICS_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no metrics yet (is {run_dir} a run directory that has started?)")
    out = []
    with open(path) as f:
        for line in f:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line being written, or torn by a kill
    return out


def _fmt(value: Optional[float], spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


def summary(run_dir: str, rows: int = 6) -> str:
    """A few lines: train loss per task at ``rows`` evenly spaced steps (always the last), every validation, the
    last data report, throughput of the last step, sample grids and checkpoints on disk."""
    recs = read_records(run_dir)
    train = [r for r in recs if r.get("kind") == "train"]
    valid = [r for r in recs if r.get("kind") == "valid"]
    data = [r for r in recs if r.get("kind") == "data"]
    lines = [f"{run_dir}: {len(train)} steps logged"]
    if train:
        picks = sorted({train[round(i * (len(train) - 1) / max(rows - 1, 1))]["step"] for i in range(rows)})
        by_step = {r["step"]: r for r in train}
        lines.append("train   step " + " ".join(f"{'loss/' + t:>10}" for t in TASK_NAMES) + "       loss   grad_norm")
        for s in picks:
            r = by_step[s]
            lines.append(f"      {s:>6} " + " ".join(f"{_fmt(r.get('loss/' + t)):>10}" for t in TASK_NAMES)
                         + f" {_fmt(r.get('loss')):>10} {_fmt(r.get('grad_norm'), '.3f'):>11}")
        last = train[-1]
        mfu = last.get("mfu")
        lines.append(f"last step: {last['tokens_per_s']:.0f} tokens/s, {last['step_time_s']:.3f} s/step, peak memory "
                     f"{last['peak_mem_gb']:.2f} GB" + (f", MFU {mfu:.1%}" if mfu else "")
                     + f", {last['consumed_tokens']:,} tokens so far")
    for r in valid:
        per_task = " ".join(f"{t} {_fmt(r.get('val_loss/' + t))}" for t in TASK_NAMES)
        lines.append(f"valid   step {r['step']:>6}: val_loss {_fmt(r.get('val_loss'))} ({per_task})")
    if data:
        d = data[-1]
        epochs = ", ".join(f"{t} {d[f'epochs/{t}']:.2f}" for t in TASK_NAMES if f"epochs/{t}" in d)
        lines.append(f"data at step {d['step']}: packing efficiency {d.get('packing_efficiency', 0):.3f}; epochs "
                     f"seen: {epochs}")
    samples = os.path.join(run_dir, "samples")
    if os.path.isdir(samples) and os.listdir(samples):
        lines.append(f"T2I sample grids: {len(os.listdir(samples))} in {samples} (latest "
                     f"{sorted(os.listdir(samples))[-1]})")
    ckpts = os.path.join(run_dir, "checkpoints")
    if os.path.isdir(ckpts):
        names = sorted(n for n in os.listdir(ckpts) if n.startswith("iter_"))
        lines.append(f"checkpoints: {', '.join(names) or 'none yet'}")
    return "\n".join(lines)
