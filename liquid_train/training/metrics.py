"""Metrics sinks: ``<run_dir>/metrics.jsonl`` (always; contract 7), tensorboard and wandb (optional).

Why the jsonl is truncated on resume: a run killed after its last checkpoint logged steps that the resumed run
trains again; dropping lines past the checkpoint's step keeps exactly one line per step, so the file of a
preempted run is identical to that of an uninterrupted one. The other sinks must not show the replayed steps
twice either: tensorboard is opened with ``purge_step`` (readers drop the earlier attempt's events from that step
on, so the replay's values are shown), and wandb, whose run is resumed by id and only accepts increasing steps,
is sent only the steps past the last one the earlier attempt logged (it keeps that attempt's values).

wandb is imported only when a run turns it on (as OLMo-core's wandb callback does): it is an optional sink, its
import costs about a second in every process, and the bare GPU machine the GPU suite runs on does not have it.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from typing import Dict, Optional

import numpy as np
from PIL import Image
from torch.utils.tensorboard import SummaryWriter

from liquid_train.atomic import atomic_write_text

METRICS_FILE = "metrics.jsonl"


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else (1e308 if value > 0 else -1e308)
    return value


def truncate_after(path: str, step: int) -> int:
    """Keep only lines with ``step <= step`` (atomic rewrite); drop a torn last line. Returns the largest step
    the file had (0 for none): what the earlier attempt logged."""
    if not os.path.exists(path):
        return 0
    kept = []
    logged = 0
    with open(path) as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line torn by kill -9
            logged = max(logged, rec.get("step", 0))
            if rec.get("step", 0) <= step:
                kept.append(json.dumps(rec) + "\n")
    atomic_write_text(path, "".join(kept))
    return logged


class MetricsLogger:
    """Writes one JSON line per event on the logging rank; mirrors scalars to tensorboard and wandb."""

    def __init__(self, run_dir: str, enabled: bool, resume_step: int, tensorboard: bool = True,
                 wandb_mode: str = "offline", wandb_project: str = "liquid-train", wandb_name: Optional[str] = None,
                 config: Optional[dict] = None):
        self.enabled = enabled
        self.path = os.path.join(run_dir, METRICS_FILE)
        self._tb = None
        self._wandb = None
        if not enabled:
            return
        os.makedirs(run_dir, exist_ok=True)
        self._wandb_after = truncate_after(self.path, resume_step)  # wandb already has these steps
        self._file = open(self.path, "a", buffering=1)
        if tensorboard:
            self._tb = SummaryWriter(os.path.join(run_dir, "tensorboard"), purge_step=resume_step + 1)
        if wandb_mode != "disabled":
            os.environ.setdefault("WANDB_SILENT", "true")
            import wandb  # optional sink, see the module docstring

            self._wandb_lib = wandb
            self._wandb = wandb.init(project=wandb_project, name=wandb_name or os.path.basename(run_dir.rstrip("/")),
                                     dir=run_dir, mode=wandb_mode, config=config, resume="allow",
                                     id=_wandb_id(run_dir))

    def log(self, record: Dict) -> None:
        if not self.enabled:
            return
        record = {k: _clean(v) for k, v in record.items()}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        step = record.get("step", 0)
        prefix = record.get("kind", "train")
        scalars = {f"{prefix}/{k}": v for k, v in record.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("step", "kind")}
        if self._tb is not None:
            for k, v in scalars.items():
                self._tb.add_scalar(k, v, step)
        if self._wandb is not None and step > self._wandb_after:
            self._wandb.log(scalars, step=step)

    def log_image(self, tag: str, png_path: str, step: int) -> None:
        if not self.enabled:
            return
        if self._tb is not None:
            self._tb.add_image(tag, np.asarray(Image.open(png_path).convert("RGB")), step, dataformats="HWC")
        if self._wandb is not None and step > self._wandb_after:
            self._wandb.log({tag: self._wandb_lib.Image(png_path)}, step=step)

    def close(self) -> None:
        if not self.enabled:
            return
        self._file.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def _wandb_id(run_dir: str) -> str:
    """A stable id per run directory so a resumed run continues the same wandb run."""
    return hashlib.sha1(os.path.abspath(run_dir).encode()).hexdigest()[:16]
