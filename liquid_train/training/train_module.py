"""The step: this rank's model chunks under megatron's DDP, megatron's optimizer and LR scheduler, and one training
or evaluation step on them (OLMo-core's ``TrainModule``; torchtitan's ``train_step`` / ``forward_backward_step``).

One step is megatron's ``get_forward_backward_func`` (no pipelining / 1F1B / interleaved, chosen by the layout) over
the global batch's micro-batches, each a packed THD micro-batch (``[1, b*s]`` tokens with the batch's
``PackedSeqParams``), gradients reduced by megatron's DDP overlapped with backward, then the optimizer and scheduler.
A step whose global loss is not finite is skipped (no optimizer or scheduler step); ``max_consecutive_nan`` of them in
a row raise :class:`TrainingAborted`. The stats of a step (``loss.STAT_NAMES``) are reduced over micro-batches and
data-parallel ranks with one all-reduce, the step's only host sync besides the optimizer's.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import resource
from functools import partial
from typing import Any, Dict, Iterator, List

import torch
import torch.distributed as dist
from megatron.core import dist_checkpointing
from megatron.core import parallel_state as ps
from megatron.core.distributed import finalize_model_grads
from megatron.core.pipeline_parallel import get_forward_backward_func

from liquid_train.accounting import count_params, device_peak_tflops, training_flops_per_token
from liquid_train.models.builder import resolve_precision
from liquid_train.training import checkpoint as ckpt
from liquid_train.training.loss import STAT_NAMES, liquid_loss, summarize
from liquid_train.training.optim import build_optimizer, build_scheduler, wrap_ddp
from liquid_train.training.providers import ModelProvider
from liquid_train.vocab import TASK_NAMES

logger = logging.getLogger(__name__)


class TrainingAborted(RuntimeError):
    """Raised when training cannot continue (e.g. too many non-finite losses in a row)."""


def next_nan_streak(streak: int, finite: bool, limit: int) -> int:
    """Consecutive non-finite steps after this one (0 after a finite step). Both engines skip a non-finite step
    and keep going, so one spike does not end a run; ``limit`` in a row (``train.max_consecutive_nan``) does."""
    if finite:
        return 0
    streak += 1
    if streak >= limit:
        raise TrainingAborted(f"loss was not finite for {streak} steps in a row; lower optimizer.lr, raise "
                              f"optimizer.z_loss_weight or set optimizer.clip_grad, and resume from the last checkpoint")
    return streak


def _device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


def to_device(batch: Dict[str, Any], device) -> Dict[str, Any]:
    """A micro-batch on ``device``: its tensors and its ``PackedSeqParams`` (non-blocking copies)."""
    out = {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}
    params = batch.get("packed_seq_params")
    if params is not None:
        cu = params.cu_seqlens_q.to(device, non_blocking=True)
        out["packed_seq_params"] = dataclasses.replace(params, cu_seqlens_q=cu, cu_seqlens_kv=cu)
    return out


def unwrap(chunk):
    return chunk.module if hasattr(chunk, "module") else chunk


def peak_memory_gb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # CPU: peak RSS of this process (KiB)


class TrainModule:
    def __init__(self, cfg, model: ModelProvider):
        self.cfg = cfg
        self.model_provider = model
        self.vocab = model.vocab
        self.arch = model.arch
        self.device = _device()
        self.precision = resolve_precision(cfg.model.precision)
        self.tp, self.pp = ps.get_tensor_model_parallel_world_size(), ps.get_pipeline_model_parallel_world_size()
        self.dp, self.dp_rank = ps.get_data_parallel_world_size(), ps.get_data_parallel_rank()
        t = cfg.train
        self.num_microbatches = t.global_batch_size // (t.micro_batch_size * self.dp)
        self.model = self._build_model()
        self.optimizer = build_optimizer(cfg, self.model, self.precision)
        self.scheduler = build_scheduler(cfg, self.optimizer)
        self._install_megatron_hooks()
        self.consecutive_nan = 0
        self.padded_vocab = self.vocab.padded_vocab_size(self.tp)
        self.num_params = count_params(self.arch).non_embedding
        self.peak_tflops = device_peak_tflops(self.precision, cfg.logging.peak_tflops)

    # --- set-up -----------------------------------------------------------------------------------------------
    def _build_model(self) -> List[torch.nn.Module]:
        vpp = self.cfg.parallel.virtual_pipeline_parallel
        chunks = []
        for vp_stage in range(vpp or 1):
            stage = vp_stage if vpp else None
            pre = ps.is_pipeline_first_stage(ignore_virtual=False, vp_stage=stage)
            post = ps.is_pipeline_last_stage(ignore_virtual=False, vp_stage=stage)
            chunks.append(self.model_provider.provider(pre_process=pre, post_process=post, vp_stage=stage))
        for chunk in chunks:
            chunk.to(self.device)
        return wrap_ddp(chunks, self.cfg)

    def _install_megatron_hooks(self) -> None:
        """Wire megatron's DDP and optimizer into the schedule, as Megatron-LM's ``setup_model_and_optimizer``."""
        config = unwrap(self.model[0]).config
        config.grad_scale_func = self.optimizer.scale_loss
        config.finalize_model_grads_func = finalize_model_grads

        def one_or_list(fns):
            return fns[0] if len(fns) == 1 else fns

        if self.cfg.parallel.overlap_grad_reduce:
            config.no_sync_func = one_or_list([c.no_sync for c in self.model])
            config.grad_sync_func = one_or_list([c.start_grad_sync for c in self.model])
        if self.cfg.parallel.overlap_param_gather and getattr(self.model[0].ddp_config, "overlap_param_gather", False):
            config.param_sync_func = one_or_list([c.start_param_sync for c in self.model])

    def flops_per_token(self, seq_length: int) -> float:
        return training_flops_per_token(self.arch, seq_length, self.padded_vocab)

    def describe(self, seq_length: int) -> Dict[str, Any]:
        """The model's numbers and build choices (``run_info.json``)."""
        return {"num_params": self.num_params, "flops_per_token": self.flops_per_token(seq_length),
                "seq_length": seq_length, "padded_vocab": self.padded_vocab,
                "model": self.model_provider.describe()}

    # --- the step ---------------------------------------------------------------------------------------------
    def _forward_step(self, data_iterator, model):
        """One packed micro-batch in megatron's THD layout: the rows end to end as one ``[1, b*s]`` stream whose
        attention segments are the batch's ``PackedSeqParams`` (what TE's fused attention and our core attention
        consume; no dense mask)."""
        batch = to_device(next(data_iterator), self.device)
        output = model(batch["tokens"].reshape(1, -1), batch["position_ids"].reshape(1, -1), None,
                       packed_seq_params=batch["packed_seq_params"])
        return output, partial(self._loss_func, batch)

    def _loss_func(self, batch, output):
        return liquid_loss(output, batch["labels"], batch["loss_mask"], batch["task_ids"],
                           self.vocab.image_token_offset, self.vocab.image_token_end,
                           self.cfg.optimizer.z_loss_weight, batch.get("position_ids"))

    def _reduce_stats(self, losses_reduced) -> torch.Tensor:
        """Sum stats over micro-batches (last stage) and DP; every rank gets the global numbers."""
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
        iters = [iter(micro_batches) for _ in self.model]
        losses = get_forward_backward_func()(
            forward_step_func=self._forward_step, data_iterator=iters if len(iters) > 1 else iters[0],
            model=self.model if len(self.model) > 1 else self.model[0], num_microbatches=len(micro_batches),
            seq_length=micro_batches[0]["tokens"].numel(),  # THD: stages exchange [b*s, 1, hidden]
            micro_batch_size=1, forward_only=forward_only)
        return self._reduce_stats(losses)

    def train_step(self, micro_batches: List[Dict]) -> Dict[str, Any]:
        """One optimizer step; the summary of ``loss.summarize`` plus grad_norm, lr and ``skipped``."""
        for chunk in self.model:
            chunk.zero_grad_buffer()
        self.optimizer.zero_grad()
        summary = summarize(self.forward_backward(micro_batches).cpu())
        finite = math.isfinite(summary["loss"]) and (summary["z_loss"] is None or math.isfinite(summary["z_loss"]))
        grad_norm, lr = None, self.optimizer.param_groups[0]["lr"]
        if finite:
            ok, grad_norm, _ = self.optimizer.step()
            if ok:
                self.scheduler.step(increment=1)
        self.consecutive_nan = next_nan_streak(self.consecutive_nan, finite, self.cfg.train.max_consecutive_nan)
        return {**summary, "grad_norm": float(grad_norm) if grad_norm is not None else None, "lr": lr,
                "skipped": not finite}

    def evaluate(self, iterators: Dict[str, Iterator], eval_iters: int) -> Dict[str, Any]:
        """Validation loss per task and overall over ``eval_iters`` global batches of each task's iterator."""
        for chunk in self.model:
            chunk.eval()
        record: Dict[str, Any] = {}
        total = torch.zeros(len(STAT_NAMES), dtype=torch.float64)
        with torch.no_grad():
            for task in TASK_NAMES:
                it = iterators.get(task)
                task_stats = torch.zeros(len(STAT_NAMES), dtype=torch.float64)
                for _ in range(eval_iters if it is not None else 0):
                    task_stats += self.forward_backward([next(it) for _ in range(self.num_microbatches)],
                                                        forward_only=True).cpu()
                record[f"val_loss/{task}"] = summarize(task_stats)["loss"] if task_stats[1] > 0 else None
                total += task_stats
        for chunk in self.model:
            chunk.train()
        record["val_loss"] = summarize(total)["loss"] if total[1] > 0 else None
        return record

    # --- state ------------------------------------------------------------------------------------------------
    def layout(self) -> Dict[str, int]:
        return {"tp": self.tp, "pp": self.pp, "dp": self.dp, "vpp": self.cfg.parallel.virtual_pipeline_parallel or 0}

    def model_sharded_state_dict(self) -> Dict:
        sds = [unwrap(c).sharded_state_dict() for c in self.model]
        return sds[0] if len(sds) == 1 else {f"chunk{i}": sd for i, sd in enumerate(sds)}

    def _load_model(self, model_sd) -> None:
        for i, chunk in enumerate(self.model):
            unwrap(chunk).load_state_dict(model_sd if len(self.model) == 1 else model_sd[f"chunk{i}"])

    def sharded_state_dict(self, is_loading: bool, with_rng: bool = True) -> Dict:
        """Model, optimizer, scheduler and (per rank) RNG state, as megatron dist-checkpointing shards them."""
        sd = {"model": self.model_sharded_state_dict()}
        sd["optimizer"] = self.optimizer.sharded_state_dict(sd, is_loading=is_loading)
        sd["scheduler"] = self.scheduler.state_dict()
        if with_rng:
            sd["rng"] = ckpt.sharded_rng_state(ps.get_pipeline_model_parallel_rank(), self.pp,
                                               ps.get_tensor_model_parallel_rank(), self.tp, self.dp_rank, self.dp)
        return sd

    def load_state(self, loaded: Dict, with_rng: bool) -> None:
        self._load_model(loaded["model"])
        self.optimizer.load_state_dict(loaded["optimizer"])
        self.scheduler.load_state_dict(loaded["scheduler"])
        if with_rng:
            ckpt.set_rng_state(loaded["rng"].data if hasattr(loaded["rng"], "data") else loaded["rng"])

    def save_checkpoint(self, manager, iteration: int, data: Dict[str, Any], sidecars: Dict[str, Dict]) -> None:
        """The checkpointer's save: this module's shards plus the loop's counters (``data``)."""
        sd = self.sharded_state_dict(is_loading=False)
        sd["data"] = data
        manager.save(iteration, sd, sidecars)

    def load_checkpoint(self, path: str, data: Dict[str, Any], with_rng: bool) -> Dict[str, Any]:
        """The checkpointer's load; returns the loop's counters as saved (``data`` gives their structure)."""
        sd = self.sharded_state_dict(is_loading=True, with_rng=with_rng)
        sd["data"] = data
        loaded = ckpt.CheckpointManager.load(path, sd)
        self.load_state(loaded, with_rng=with_rng)
        return loaded["data"]

    def init_from_model_checkpoint(self, path: str) -> None:
        """Load only the model (a converted HF checkpoint: ``{"model": ...}`` at any TP/PP)."""
        if not os.path.isdir(path):
            raise FileNotFoundError(f"model.init_from={path}: not a directory; convert the HF model first with "
                                    f"tools/convert_checkpoint.py hf-to-megatron")
        self._load_model(dist_checkpointing.load({"model": self.model_sharded_state_dict()}, path)["model"])
        # megatron's optimizer keeps fp32 main copies of bf16 params: refresh them from the loaded weights
        if hasattr(self.optimizer, "reload_model_params"):
            self.optimizer.reload_model_params()
        logger.info("initialised model from %s", path)
