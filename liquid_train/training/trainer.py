"""The Liquid mix-pretraining loop on megatron-core.

One step = megatron's ``get_forward_backward_func`` (no pipelining / 1F1B / interleaved, chosen by the layout)
over the global batch's micro-batches, gradients reduced by megatron's DDP (overlapped with backward), then
megatron's optimizer (distributed on GPU) and LR scheduler. Everything around it (metrics, checkpoints,
preemption, NaN handling) runs at step boundaries only, so the step itself is megatron's.

The model and the data come from providers (``ModelProvider``/``DataProvider`` below). The defaults build the
project's model families (``liquid_train.models``) and mixed-task data (``liquid_train.data``); programmatic
callers (benchmarks, the quickstart) may pass their own, as with megatron's ``pretrain(model_provider, ...)``.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import resource
import time
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Dict, Iterator, List, Optional

import torch
import torch.distributed as dist
from omegaconf import OmegaConf

from liquid_train import image_meta
from liquid_train.accounting import count_params, device_peak_tflops, training_flops_per_token
from liquid_train.atomic import atomic_write_text
from liquid_train.models.sidecar import MODEL_SIDECAR, read_sidecar
from liquid_train.training import checkpoint as ckpt
from liquid_train.training.config import save_resolved, validate
from liquid_train.training.loss import STAT_NAMES, liquid_loss, summarize
from liquid_train.training.metrics import MetricsLogger
from liquid_train.training.optim import build_optimizer, build_scheduler, wrap_ddp
from liquid_train.training.save_policy import SavePolicy
from liquid_train.training.signals import PreemptionHandler
from liquid_train.vocab import TASK_NAMES

logger = logging.getLogger("liquid_train.training")

RUN_INFO = "run_info.json"


class TrainingAborted(RuntimeError):
    """Raised when training cannot continue (e.g. too many non-finite losses in a row)."""


@dataclass
class ModelProvider:
    """What the trainer needs to build the model: megatron's per-stage factory and the vocabulary."""

    provider: Callable[..., torch.nn.Module]
    """``provider(pre_process, post_process, vp_stage=None) -> GPTModel``."""
    vocab: Any
    """``LiquidVocab``."""
    arch: Any
    """The ``ModelArch`` (parameter and FLOPs accounting, the sidecar)."""
    sidecar: Optional[Dict] = None
    """Contents of ``liquid_model.json`` written next to each checkpoint."""


@dataclass
class DataProvider:
    """Micro-batch iterators (contract 6 batches: tokens, labels, loss_mask, position_ids, task_ids,
    segment_ids, cu_seqlens; optionally attention_mask [b,1,s,s] bool True = masked, else built from segment_ids on
    the trainer's device)."""

    train_iterator: Callable[[int, int, int, int], Iterator[Dict[str, torch.Tensor]]]
    """``(consumed_samples, micro_batch_size, dp_rank, dp_size) -> iterator`` over this DP rank's micro-batches."""
    valid_iterators: Optional[Callable[[int, int, int], Dict[str, Iterator[Dict[str, torch.Tensor]]]]] = None
    """``(micro_batch_size, dp_rank, dp_size) -> {task: iterator}``, restarted at every validation."""
    seq_length: int = 0
    image_tokens: Optional[int] = None
    report: Optional[Callable[[int], Dict[str, float]]] = None
    """``consumed_samples -> {packing_efficiency, samples/<task>, epochs/<task>}`` of the training stream; logged
    as a ``data`` record at every evaluation and at the end of training (how many epochs of each task were seen)."""


# --------------------------------------------------------------------------------------------------------------
def _device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


def _resolve_precision(cfg) -> str:
    p = cfg.model.precision
    if p == "auto":
        return "bf16" if torch.cuda.is_available() else "fp32"
    return p


def _to_device(batch: Dict[str, Any], device) -> Dict[str, Any]:
    out = {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}
    params = batch.get("packed_seq_params")
    if params is not None:
        cu = params.cu_seqlens_q.to(device, non_blocking=True)
        out["packed_seq_params"] = dataclasses.replace(params, cu_seqlens_q=cu, cu_seqlens_kv=cu)
    return out


def _unwrap(chunk):
    return chunk.module if hasattr(chunk, "module") else chunk


def _peak_mem_gb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # CPU: peak RSS of this process (KiB)


class Trainer:
    def __init__(self, cfg, model: ModelProvider, data: DataProvider):
        from megatron.core import parallel_state as ps

        self.cfg = cfg
        self.model_provider = model
        self.data = data
        self.ps = ps
        self.device = _device()
        self.precision = _resolve_precision(cfg)
        self.run_dir = cfg.run_dir
        self.ckpt_dir = cfg.checkpoint.dir or os.path.join(self.run_dir, "checkpoints")
        self.tp, self.pp = ps.get_tensor_model_parallel_world_size(), ps.get_pipeline_model_parallel_world_size()
        self.dp = ps.get_data_parallel_world_size()
        self.dp_rank = ps.get_data_parallel_rank()
        self.rank = dist.get_rank() if dist.is_initialized() else 0
        self.is_logging_rank = self.rank == 0
        t = cfg.train
        self.num_microbatches = t.global_batch_size // (t.micro_batch_size * self.dp)

        self.model = self._build_model()
        self.optimizer = build_optimizer(cfg, self.model, self.precision)
        self.scheduler = build_scheduler(cfg, self.optimizer)
        self._install_megatron_hooks()

        self.iteration = 0
        self.consumed_samples = 0
        self.consumed_tokens = 0
        self.flops = 0.0
        self.skipped_steps = 0
        self.consecutive_nan = 0

        self.vocab = model.vocab
        self.padded_vocab = self._padded_vocab_size()
        self.flops_per_token = training_flops_per_token(model.arch, data.seq_length, self.padded_vocab)
        self.peak_tflops = device_peak_tflops(self.precision, cfg.logging.peak_tflops)
        self.num_params = count_params(model.arch).non_embedding
        self.ckpt = ckpt.CheckpointManager(self.ckpt_dir, cfg.checkpoint.keep_last, cfg.checkpoint.async_save)

    # --- setup ------------------------------------------------------------------------------------------------
    def _build_model(self) -> List[torch.nn.Module]:
        from megatron.core.enums import ModelType

        ps, cfg = self.ps, self.cfg
        vpp = cfg.parallel.virtual_pipeline_parallel
        provider = self.model_provider.provider
        chunks = []
        for vp_stage in range(vpp or 1):
            pre = ps.is_pipeline_first_stage(ignore_virtual=False, vp_stage=vp_stage if vpp else None)
            post = ps.is_pipeline_last_stage(ignore_virtual=False, vp_stage=vp_stage if vpp else None)
            m = provider(pre_process=pre, post_process=post, vp_stage=vp_stage if vpp else None)
            m.model_type = ModelType.encoder_or_decoder
            m.config.calculate_per_token_loss = True  # one division by all loss tokens of the global batch
            chunks.append(m)
        for m in chunks:
            if self.precision == "bf16" and not torch.cuda.is_available():
                raise TrainingAborted("bf16 training needs a GPU here; set model.precision=fp32 on CPU")
            m.to(self.device)
        return wrap_ddp(chunks, cfg)

    def _padded_vocab_size(self) -> int:
        emb = getattr(_unwrap(self.model[0]), "embedding", None)
        if emb is not None:
            return emb.word_embeddings.weight.shape[0] * self.tp
        out = getattr(_unwrap(self.model[-1]), "output_layer", None)
        if out is not None and getattr(out, "weight", None) is not None:
            return out.weight.shape[0] * self.tp
        return self.vocab.padded_vocab_size(self.tp)

    def _install_megatron_hooks(self) -> None:
        """Wire megatron's DDP and optimizer into the schedule, as Megatron-LM's ``setup_model_and_optimizer``."""
        from megatron.core.distributed import finalize_model_grads

        config = _unwrap(self.model[0]).config
        config.grad_scale_func = self.optimizer.scale_loss
        config.finalize_model_grads_func = finalize_model_grads
        if self.cfg.parallel.overlap_grad_reduce:
            no_sync = [c.no_sync for c in self.model]
            config.no_sync_func = no_sync[0] if len(no_sync) == 1 else no_sync
            grad_sync = [c.start_grad_sync for c in self.model]
            config.grad_sync_func = grad_sync[0] if len(grad_sync) == 1 else grad_sync
        if self.cfg.parallel.overlap_param_gather and getattr(self.model[0].ddp_config, "overlap_param_gather", False):
            param_sync = [c.start_param_sync for c in self.model]
            config.param_sync_func = param_sync[0] if len(param_sync) == 1 else param_sync

    def write_run_info(self) -> None:
        """``<run_dir>/run_info.json``: what the run's model is (parameters, FLOPs per token, the build choices);
        read by the scaling-law fits."""
        build = self.model_provider.provider
        info = {"num_params": self.num_params, "flops_per_token": self.flops_per_token,
                "seq_length": self.data.seq_length, "padded_vocab": self.padded_vocab,
                "model": build.describe() if hasattr(build, "describe") else None}
        atomic_write_text(os.path.join(self.run_dir, RUN_INFO), json.dumps(info, indent=2))

    # --- checkpoint state -------------------------------------------------------------------------------------
    def _model_sharded_state_dict(self) -> Dict:
        sds = [_unwrap(c).sharded_state_dict() for c in self.model]
        return sds[0] if len(sds) == 1 else {f"chunk{i}": sd for i, sd in enumerate(sds)}

    def _layout(self) -> Dict[str, int]:
        return {"tp": self.tp, "pp": self.pp, "dp": self.dp, "vpp": self.cfg.parallel.virtual_pipeline_parallel or 0}

    def _data_state(self) -> Dict:
        return {"iteration": self.iteration, "consumed_samples": self.consumed_samples,
                "consumed_tokens": self.consumed_tokens, "flops": self.flops, "skipped_steps": self.skipped_steps}

    def _full_sharded_state_dict(self, is_loading: bool, with_rng: bool = True) -> Dict:
        ps = self.ps
        sd = {"model": self._model_sharded_state_dict()}
        sd["optimizer"] = self.optimizer.sharded_state_dict(sd, is_loading=is_loading)
        sd["scheduler"] = self.scheduler.state_dict()
        sd["data"] = self._data_state()
        if with_rng:
            sd["rng"] = ckpt.sharded_rng_state(ps.get_pipeline_model_parallel_rank(), self.pp,
                                               ps.get_tensor_model_parallel_rank(), self.tp, self.dp_rank, self.dp)
        return sd

    def save_checkpoint(self) -> None:
        sd = self._full_sharded_state_dict(is_loading=False)
        sidecars = {
            ckpt.STATE_FILE: {**self._data_state(), "layout": self._layout()},
            "liquid_vocab.json": self.vocab.to_dict(),
        }
        if self.model_provider.sidecar is not None:
            sidecars["liquid_model.json"] = self.model_provider.sidecar
        self.ckpt.save(self.iteration, sd, sidecars)

    def load_checkpoint(self, path: str) -> None:
        state = ckpt.read_trainer_state(path)
        same_layout = state.get("layout") == self._layout()
        sd = self._full_sharded_state_dict(is_loading=True, with_rng=same_layout)
        loaded = ckpt.CheckpointManager.load(path, sd)
        model_sd = loaded["model"]
        for i, chunk in enumerate(self.model):
            _unwrap(chunk).load_state_dict(model_sd if len(self.model) == 1 else model_sd[f"chunk{i}"])
        self.optimizer.load_state_dict(loaded["optimizer"])
        self.scheduler.load_state_dict(loaded["scheduler"])
        d = loaded["data"]
        self.iteration, self.consumed_samples = int(d["iteration"]), int(d["consumed_samples"])
        self.consumed_tokens, self.flops = int(d["consumed_tokens"]), float(d["flops"])
        self.skipped_steps = int(d["skipped_steps"])
        if same_layout:
            ckpt.set_rng_state(loaded["rng"].data if hasattr(loaded["rng"], "data") else loaded["rng"])
        else:
            logger.warning("checkpoint layout %s differs from %s: RNG streams are re-seeded, not restored",
                           state.get("layout"), self._layout())
        logger.info("resumed from %s at step %d", path, self.iteration)

    def init_from_model_checkpoint(self, path: str) -> None:
        """Load only the model (a converted HF checkpoint: ``{"model": ...}`` at any TP/PP)."""
        from megatron.core import dist_checkpointing

        if not os.path.isdir(path):
            raise FileNotFoundError(f"model.init_from={path}: not a directory; convert the HF model first with "
                                    f"tools/convert_checkpoint.py hf-to-megatron")
        loaded = dist_checkpointing.load({"model": self._model_sharded_state_dict()}, path)
        for i, chunk in enumerate(self.model):
            _unwrap(chunk).load_state_dict(loaded["model"] if len(self.model) == 1 else loaded["model"][f"chunk{i}"])
        # megatron's optimizer keeps fp32 main copies of bf16 params: refresh them from the loaded weights
        if hasattr(self.optimizer, "reload_model_params"):
            self.optimizer.reload_model_params()
        logger.info("initialised model from %s", path)

    # --- one step ---------------------------------------------------------------------------------------------
    def _forward_step(self, data_iterator, model):
        """One packed micro-batch in megatron's THD layout: the rows end to end as one ``[1, b*s]`` stream whose
        attention segments are the batch's ``PackedSeqParams`` (what TE's fused attention and our core attention
        consume; no dense mask)."""
        batch = _to_device(next(data_iterator), self.device)
        tokens = batch["tokens"].reshape(1, -1)
        output = model(tokens, batch["position_ids"].reshape(1, -1), None,
                       packed_seq_params=batch["packed_seq_params"])
        return output, partial(self._loss_func, batch)

    def _loss_func(self, batch, output):
        return liquid_loss(output, batch["labels"], batch["loss_mask"], batch["task_ids"],
                           self.vocab.image_token_offset, self.vocab.image_token_end,
                           self.cfg.optimizer.z_loss_weight, batch.get("position_ids"))

    def _run_schedule(self, micro_batches: List[Dict], forward_only: bool):
        from megatron.core.pipeline_parallel import get_forward_backward_func

        fb = get_forward_backward_func()
        iters = [iter(micro_batches) for _ in self.model]
        stream = micro_batches[0]["tokens"].numel()  # THD: pipeline stages exchange [b*s, 1, hidden]
        return fb(forward_step_func=self._forward_step, data_iterator=iters if len(iters) > 1 else iters[0],
                  model=self.model if len(self.model) > 1 else self.model[0],
                  num_microbatches=len(micro_batches), seq_length=stream, micro_batch_size=1,
                  forward_only=forward_only)

    def _reduce_stats(self, losses_reduced) -> torch.Tensor:
        """Sum stats over micro-batches (last stage) and DP; every rank gets the global numbers."""
        ps = self.ps
        stats = torch.zeros(len(STAT_NAMES), dtype=torch.float64, device=self.device)
        if ps.is_pipeline_last_stage(ignore_virtual=True) and ps.get_tensor_model_parallel_rank() == 0:
            for item in losses_reduced:
                stats += item["stats"].to(stats.device)
        if dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(stats)
        return stats

    def forward_backward(self, micro_batches: List[Dict], forward_only: bool = False) -> torch.Tensor:
        """Megatron's schedule over the micro-batches (gradients land in the DDP buffers, divided by the loss tokens
        of the whole global batch); returns the summed loss stats (``loss.STAT_NAMES``) of the global batch."""
        return self._reduce_stats(self._run_schedule(micro_batches, forward_only=forward_only))

    def train_step(self, micro_batches: List[Dict]) -> Dict[str, Any]:
        for chunk in self.model:
            chunk.zero_grad_buffer()
        self.optimizer.zero_grad()
        stats = self.forward_backward(micro_batches)
        summary = summarize(stats.cpu())
        finite = math.isfinite(summary["loss"]) and (summary["z_loss"] is None or math.isfinite(summary["z_loss"]))
        grad_norm = None
        lr_used = self.optimizer.param_groups[0]["lr"]
        if finite:
            ok, grad_norm, _ = self.optimizer.step()
            if ok:
                self.scheduler.step(increment=1)
            self.consecutive_nan = 0
        else:
            self.skipped_steps += 1
            self.consecutive_nan += 1
            if self.consecutive_nan >= self.cfg.train.max_consecutive_nan:
                raise TrainingAborted(
                    f"loss was not finite for {self.consecutive_nan} steps in a row (last at step "
                    f"{self.iteration + 1}); lower optimizer.lr, raise optimizer.z_loss_weight or set "
                    f"optimizer.clip_grad, and resume from the last checkpoint")
        summary["grad_norm"] = float(grad_norm) if grad_norm is not None else None
        summary["lr"] = lr_used
        return summary

    # --- validation -------------------------------------------------------------------------------------------
    def evaluate(self) -> Dict[str, Any]:
        if self.data.valid_iterators is None:
            return {}
        iterators = self.data.valid_iterators(self.cfg.train.micro_batch_size, self.dp_rank, self.dp)
        for chunk in self.model:
            chunk.eval()
        record = {"kind": "valid", "step": self.iteration}
        total = torch.zeros(len(STAT_NAMES), dtype=torch.float64)
        with torch.no_grad():
            for task in TASK_NAMES:
                it = iterators.get(task)
                task_stats = torch.zeros(len(STAT_NAMES), dtype=torch.float64)
                for _ in range(self.cfg.train.eval_iters if it is not None else 0):
                    mbs = [next(it) for _ in range(self.num_microbatches)]
                    task_stats += self.forward_backward(mbs, forward_only=True).cpu()
                s = summarize(task_stats)
                record[f"val_loss/{task}"] = s["loss"] if task_stats[1] > 0 else None
                total += task_stats
        for chunk in self.model:
            chunk.train()
        record["val_loss"] = summarize(total)["loss"] if total[1] > 0 else None
        record["consumed_tokens"] = self.consumed_tokens
        record["flops"] = self.flops
        return record

    def _evaluate_and_report(self, metrics: MetricsLogger) -> None:
        """Log the validation record, then (logging rank) the training stream's data report."""
        metrics.log(self.evaluate())
        if self.data.report is not None and self.is_logging_rank:
            metrics.log({"kind": "data", "step": self.iteration, **self.data.report(self.consumed_samples)})

    # --- loop -------------------------------------------------------------------------------------------------
    def fit(self, metrics: MetricsLogger, sampler=None) -> Dict[str, Any]:
        cfg, t = self.cfg, self.cfg.train
        stop_at = t.iters if t.exit_after_iters is None else min(t.iters, self.iteration + t.exit_after_iters)
        data_iter = self.data.train_iterator(self.consumed_samples, t.micro_batch_size, self.dp_rank, self.dp)
        tokens_per_step = t.global_batch_size * self.data.seq_length
        last = {}
        progress = None
        if cfg.logging.progress and self.is_logging_rank:
            from tqdm import tqdm

            progress = tqdm(total=t.iters, initial=self.iteration, desc="train", unit="step", dynamic_ncols=True)
        save_policy = SavePolicy(cfg.checkpoint.save_interval, cfg.checkpoint.save_interval_minutes)
        with PreemptionHandler() as preempt:
            while self.iteration < stop_at:
                start = time.perf_counter()
                micro_batches = [next(data_iter) for _ in range(self.num_microbatches)]
                summary = self.train_step(micro_batches)
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                elapsed = time.perf_counter() - start
                self.iteration += 1
                self.consumed_samples += t.global_batch_size
                self.consumed_tokens += tokens_per_step
                step_flops = self.flops_per_token * tokens_per_step
                self.flops += step_flops
                world = dist.get_world_size() if dist.is_initialized() else 1
                tflops = step_flops / elapsed / world / 1e12
                record = {
                    "kind": "train", "step": self.iteration, "loss": summary["loss"],
                    **{f"loss/{k}": summary[f"loss/{k}"] for k in TASK_NAMES},
                    **{f"tokens/{k}": summary[f"tokens/{k}"] for k in TASK_NAMES},
                    **{f"samples/{k}": summary[f"samples/{k}"] for k in TASK_NAMES},
                    "image_top1": summary["image_top1"], "z_loss": summary["z_loss"],
                    "grad_norm": summary["grad_norm"], "lr": summary["lr"],
                    "consumed_samples": self.consumed_samples, "consumed_tokens": self.consumed_tokens,
                    "flops": self.flops, "tokens_per_s": tokens_per_step / elapsed, "tflops_per_gpu": tflops,
                    "mfu": (tflops / self.peak_tflops) if self.peak_tflops else None,
                    "peak_mem_gb": _peak_mem_gb(), "skipped_steps": self.skipped_steps, "step_time_s": elapsed,
                }
                metrics.log(record)
                last = record
                if progress is not None:
                    progress.update(1)
                    progress.set_postfix(loss=f"{summary['loss']:.4f}", tok_s=f"{record['tokens_per_s']:.0f}")
                self.ckpt.finalize(blocking=False)
                if t.eval_interval and self.iteration % t.eval_interval == 0:
                    self._evaluate_and_report(metrics)
                if sampler is not None and cfg.sampling.interval and self.iteration % cfg.sampling.interval == 0:
                    sampler(self, metrics)
                signalled = preempt.any_rank_signalled()
                if save_policy.due(self.iteration) and not signalled:
                    self.save_checkpoint()
                    save_policy.saved(self.iteration)
                if signalled:
                    logger.warning("preemption signal received: checkpointing at step %d and exiting",
                                   self.iteration)
                    self.save_checkpoint()
                    self.ckpt.close()
                    return {**last, "preempted": True}
        if progress is not None:
            progress.close()
        if t.eval_interval and self.iteration % t.eval_interval != 0 and self.iteration >= t.iters:
            self._evaluate_and_report(metrics)
        saved_now = save_policy.last_step == self.iteration or (
            cfg.checkpoint.save_interval and self.iteration % cfg.checkpoint.save_interval == 0)
        if cfg.checkpoint.save_at_end and not saved_now:
            self.save_checkpoint()
        self.ckpt.close()
        return last


# --------------------------------------------------------------------------------------------------------------
def default_model_provider(cfg, precision: Optional[str] = None) -> ModelProvider:
    """The project's model families and vocabulary, through the one build path (``models.builder``)."""
    from liquid_train.models import builder
    from liquid_train.training.preflight import vocab_path
    from liquid_train.vocab import LiquidVocab

    arch = builder.arch_from_run_config(cfg.model)
    vocab = LiquidVocab.load(vocab_path(cfg))
    provider = builder.build(arch, vocab, builder.options_from_run_config(cfg))
    logger.info("model build: %s", provider.describe())
    sidecar = {"family": arch.family, "size": arch.size, "arch": arch.to_dict(),
               **image_meta.sidecar_entries(cfg.data)}  # grid, VQ, templates, tokenizer: for the export
    if cfg.model.init_from and os.path.exists(os.path.join(cfg.model.init_from, MODEL_SIDECAR)):
        hf_config = read_sidecar(cfg.model.init_from).get("hf_config")  # export writes back what was imported
        if hf_config is not None:
            sidecar["hf_config"] = hf_config
    return ModelProvider(provider=provider, vocab=vocab, arch=arch, sidecar=sidecar)


def default_data_provider(cfg, vocab) -> DataProvider:
    """The project's mixed-task data (contract 6)."""
    from liquid_train.training import data_adapter

    return data_adapter.build(cfg, vocab)


def run(cfg, model_provider: Optional[ModelProvider] = None, data_provider: Optional[DataProvider] = None,
        init_parallel: bool = True) -> Dict[str, Any]:
    """Start or resume the run described by ``cfg`` (a ``RunConfig`` DictConfig; see ``load_config``).

    Returns the last train metrics record (plus ``preempted: True`` when stopped by a signal).
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if model_provider is None or data_provider is None:
        from liquid_train.training.preflight import preflight

        preflight(cfg, world_size)  # every check a config allows, before any process group exists
    else:
        validate(cfg, world_size)
    if init_parallel:
        from liquid_train import parallel

        parallel.initialize_parallel(tp=cfg.parallel.tensor_parallel, pp=cfg.parallel.pipeline_parallel,
                                     vpp=cfg.parallel.virtual_pipeline_parallel, seed=cfg.parallel.seed)
    try:
        if model_provider is None:
            model_provider = default_model_provider(cfg)
        if data_provider is None:
            data_provider = default_data_provider(cfg, model_provider.vocab)
        trainer = Trainer(cfg, model_provider, data_provider)
        resume_path = ckpt.read_latest(trainer.ckpt_dir) if cfg.checkpoint.resume else None
        if resume_path is not None:
            trainer.load_checkpoint(resume_path)
        elif cfg.model.init_from:
            trainer.init_from_model_checkpoint(cfg.model.init_from)
        resolved = OmegaConf.to_container(cfg, resolve=True)
        if trainer.is_logging_rank:
            save_resolved(cfg, cfg.run_dir)
            trainer.write_run_info()
        metrics = MetricsLogger(cfg.run_dir, enabled=trainer.is_logging_rank, resume_step=trainer.iteration,
                                tensorboard=cfg.logging.tensorboard, wandb_mode=cfg.logging.wandb_mode,
                                wandb_project=cfg.logging.wandb_project, wandb_name=cfg.logging.wandb_name,
                                config=resolved)
        sampler = None
        if cfg.sampling.interval:
            from liquid_train.training.sampling import log_t2i_samples

            sampler = log_t2i_samples
        try:
            return trainer.fit(metrics, sampler)
        finally:
            metrics.close()
    finally:
        if init_parallel:
            from liquid_train import parallel

            parallel.destroy_parallel()
