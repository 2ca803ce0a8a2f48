"""The Liquid mix-pretraining loop: steps of the :class:`~liquid_train.training.train_module.TrainModule` with
callbacks around them (``liquid_train.training.callbacks``: metrics, evaluation, samples, progress, preemption,
checkpoints).

The loop itself only draws the global batch, runs the step, advances the counters (:class:`TrainState`, part of
every checkpoint) and hands the step's record to the callbacks; everything else happens in a callback at a step
boundary, so the step itself is megatron's. :func:`run` is the entry point (``liquid-train`` on the CLI).
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional

import torch
import torch.distributed as dist
from omegaconf import OmegaConf

from liquid_train import parallel
from liquid_train.atomic import atomic_write_text
from liquid_train.training import checkpoint as ckpt
from liquid_train.training import data_adapter
from liquid_train.training.callbacks import Callback, Checkpointer, default_callbacks
from liquid_train.training.config import save_resolved, validate
from liquid_train.training.deepspeed_module import DeepSpeedTrainModule
from liquid_train.training.preflight import preflight
from liquid_train.training.providers import DataProvider, ModelProvider, default_model_provider
from liquid_train.training.train_module import TrainModule, peak_memory_gb
from liquid_train.vocab import TASK_NAMES

logger = logging.getLogger("liquid_train.training")

RUN_INFO = "run_info.json"


@dataclass
class TrainState:
    """The loop's counters; with the module's state, everything a resume needs (the data stream is a pure
    function of ``consumed_samples``)."""
    iteration: int = 0
    consumed_samples: int = 0
    consumed_tokens: int = 0
    flops: float = 0.0
    skipped_steps: int = 0

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def load(self, d: Dict[str, Any]) -> None:
        self.iteration, self.consumed_samples = int(d["iteration"]), int(d["consumed_samples"])
        self.consumed_tokens, self.flops = int(d["consumed_tokens"]), float(d["flops"])
        self.skipped_steps = int(d["skipped_steps"])


class Trainer:
    def __init__(self, cfg, module: TrainModule, data: DataProvider, callbacks: Optional[List[Callback]] = None):
        self.cfg, self.module, self.data = cfg, module, data
        self.callbacks: List[Callback] = list(callbacks or [])
        self.state = TrainState()
        self.stop_reason: Optional[str] = None
        self.is_logging_rank = (dist.get_rank() if dist.is_initialized() else 0) == 0
        self.world_size = dist.get_world_size() if dist.is_initialized() else 1
        self.flops_per_token = module.flops_per_token(data.seq_length)

    @property
    def run_dir(self) -> str:
        return self.cfg.run_dir

    def request_stop(self, reason: str) -> None:
        """End the loop after this step's callbacks (``preempted`` makes the checkpointer save)."""
        self.stop_reason = reason

    def log(self, record: Dict[str, Any]) -> None:
        for cb in self.callbacks:
            cb.on_record(self, record)

    def log_image(self, tag: str, path: str, step: int) -> None:
        for cb in self.callbacks:
            cb.on_image(self, tag, path, step)

    def _step(self, data_iter) -> Dict[str, Any]:
        t, state = self.cfg.train, self.state
        start = time.perf_counter()
        summary = self.module.train_step([next(data_iter) for _ in range(self.module.num_microbatches)])
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        tokens = t.global_batch_size * self.data.seq_length
        state.iteration += 1
        state.consumed_samples += t.global_batch_size
        state.consumed_tokens += tokens
        state.flops += self.flops_per_token * tokens
        state.skipped_steps += int(summary["skipped"])
        tflops = self.flops_per_token * tokens / elapsed / self.world_size / 1e12
        peak = self.module.peak_tflops
        return {
            "kind": "train", "step": state.iteration, "loss": summary["loss"],
            **{f"{k}/{task}": summary[f"{k}/{task}"] for k in ("loss", "tokens", "samples") for task in TASK_NAMES},
            "image_top1": summary["image_top1"], "z_loss": summary["z_loss"], "grad_norm": summary["grad_norm"],
            "lr": summary["lr"], "consumed_samples": state.consumed_samples,
            "consumed_tokens": state.consumed_tokens, "flops": state.flops, "tokens_per_s": tokens / elapsed,
            "tflops_per_gpu": tflops, "mfu": tflops / peak if peak else None, "peak_mem_gb": peak_memory_gb(),
            "skipped_steps": state.skipped_steps, "step_time_s": elapsed,
        }

    def fit(self) -> Dict[str, Any]:
        """Train to ``train.iters`` (or ``exit_after_iters`` more steps, or a stop request); the last record."""
        t = self.cfg.train
        stop_at = t.iters if t.exit_after_iters is None else min(t.iters, self.state.iteration + t.exit_after_iters)
        data_iter = self.data.train_iterator(self.state.consumed_samples, t.micro_batch_size, self.module.dp_rank,
                                             self.module.dp)
        last: Dict[str, Any] = {}
        try:
            for cb in self.callbacks:
                cb.on_fit_start(self)
            while self.state.iteration < stop_at and self.stop_reason is None:
                last = self._step(data_iter)
                self.log(last)
                for cb in self.callbacks:
                    cb.on_step_end(self, last)
            for cb in self.callbacks:
                cb.on_fit_end(self)
        finally:
            for cb in self.callbacks:
                cb.on_close(self)
        return {**last, "preempted": True} if self.stop_reason == "preempted" else last


def build_module(cfg, model_provider: ModelProvider):
    """The engine's TrainModule (``engine``: megatron, or the HF model under DeepSpeed ZeRO)."""
    if cfg.engine == "deepspeed":
        return DeepSpeedTrainModule(cfg, model_provider)
    return TrainModule(cfg, model_provider)


def write_run_info(trainer: Trainer) -> None:
    """``<run_dir>/run_info.json``: the model's numbers and build choices (read by the scaling-law fits)."""
    info = trainer.module.describe(trainer.data.seq_length)
    atomic_write_text(os.path.join(trainer.run_dir, RUN_INFO), json.dumps(info, indent=2))


def run(cfg, model_provider: Optional[ModelProvider] = None, data_provider: Optional[DataProvider] = None,
        init_parallel: bool = True, callbacks: Optional[List[Callback]] = None) -> Dict[str, Any]:
    """Start or resume the run described by ``cfg`` (a ``RunConfig`` DictConfig; see ``load_config``).

    Returns the last train record (plus ``preempted: True`` when stopped by a signal, or ``finished: True`` when
    the run had already finished). ``callbacks`` are added after the default ones.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    ckpt.check_writable(cfg.run_dir, cfg.checkpoint.dir)  # a read-only run dir fails now, in one line
    if model_provider is None or data_provider is None:
        preflight(cfg, world_size)  # every check a config allows, before any process group exists
    else:
        validate(cfg, world_size)
    if init_parallel:
        parallel.initialize_parallel(tp=cfg.parallel.tensor_parallel, pp=cfg.parallel.pipeline_parallel,
                                     vpp=cfg.parallel.virtual_pipeline_parallel, seed=cfg.parallel.seed)
    try:
        model_provider = model_provider or default_model_provider(cfg)
        data_provider = data_provider or data_adapter.build(cfg, model_provider.vocab)
        trainer = Trainer(cfg, build_module(cfg, model_provider), data_provider)
        checkpointer = Checkpointer(cfg)
        resume_path = checkpointer.resume_path()
        if ckpt.finished(resume_path, cfg.train.iters):  # a finished run relaunched does nothing (and says so)
            checkpointer.on_close(trainer)
            return {"finished": True}
        if resume_path is not None:
            checkpointer.load(trainer, resume_path)
        elif cfg.model.init_from and cfg.engine == "megatron":  # deepspeed: the HF model loaded it when built
            trainer.module.init_from_model_checkpoint(cfg.model.init_from)
        if trainer.is_logging_rank:
            save_resolved(cfg, cfg.run_dir)
            write_run_info(trainer)
        config = {**OmegaConf.to_container(cfg, resolve=True),
                  "run_info": trainer.module.describe(data_provider.seq_length)}  # wandb's run config
        trainer.callbacks = default_callbacks(cfg, checkpointer, trainer.state.iteration, trainer.is_logging_rank,
                                              config) + list(callbacks or [])
        return trainer.fit()
    finally:
        if init_parallel:
            parallel.destroy_parallel()
