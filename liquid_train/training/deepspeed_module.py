"""The ``deepspeed`` engine: the Hugging Face ``AutoModelForCausalLM`` under DeepSpeed ZeRO, as a TrainModule.

:class:`DeepSpeedTrainModule` has the interface the shared loop and its callbacks use (``train_step``,
``evaluate``, ``save_checkpoint`` / ``load_checkpoint``, the accounting), so the trainer, metrics, evaluation,
preemption and the checkpointer's ``latest`` / atomic / keep-last-K / manifest conventions are the megatron engine's.
What is the same by construction, so the two engines are each other's oracle:

* the model: HF's, with the vocabulary extended as the converter does it (``vocab_extension.extend_embedding``:
  the same ids, mean + seeded noise, seed 0 as ``tools/convert_checkpoint.py``), or from scratch from
  ``hf_conversion.hf_config_dict`` of the run's architecture;
* the batches: the data provider's packed micro-batches, attended per sample (``hf_packed``);
* the loss: ``training.loss.liquid_loss`` (cross-entropy, z-loss, per-task stats) summed over the global batch and
  divided by its loss tokens, as megatron's ``calculate_per_token_loss``;
* the optimizer and LR: torch AdamW with megatron's param groups (no weight decay on biases and 1-D weights), driven
  by ``training.optim.build_scheduler`` (megatron's scheduler) after each applied step;
* a non-finite step is skipped: its NaN/inf gradient norm makes ZeRO skip the update (it always computes the norm,
  ``deepspeed_config.NO_CLIP``); the scheduler is not stepped and the loop counts it.

deepspeed is imported through ``deepspeed_cpu.import_deepspeed`` (optional package, imported in functions).
"""
from __future__ import annotations

import glob
import json
import logging
import math
import os
from typing import Any, Dict, Iterator, List

import torch
import torch.distributed as dist
from transformers import AutoConfig, AutoModelForCausalLM

from liquid_train.accounting import count_params, device_peak_tflops, training_flops_per_token
from liquid_train.engines.deepspeed_config import ds_config
from liquid_train.engines.deepspeed_cpu import ensure_local_rank, import_deepspeed
from liquid_train.engines.hf_packed import hf_inputs
from liquid_train.models.builder import resolve_precision
from liquid_train.models.hf_conversion import hf_config_dict, read_hf_config
from liquid_train.models.vocab_extension import extend_embedding
from liquid_train.training import checkpoint as ckpt
from liquid_train.training.config import ConfigError
from liquid_train.training.loss import STAT_NAMES, liquid_loss, summarize
from liquid_train.training.optim import build_scheduler
from liquid_train.training.providers import ModelProvider
from liquid_train.training.train_module import TrainingAborted, next_nan_streak
from liquid_train.vocab import TASK_NAMES, LiquidVocab

logger = logging.getLogger(__name__)

DS_TAG = "state"
"""DeepSpeed's tag inside each ``iter_N`` directory (DeepSpeed writes ``<dir>/<tag>/``)."""
HF_CONFIG_FILE = "hf_config.json"
"""Sidecar of every deepspeed checkpoint: the HF config the consolidated weights export with."""
CONVERTER_SEED = 0
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _extend_rows(model, arch, vocab) -> None:
    """Base-vocabulary HF weights -> the Liquid vocabulary, exactly as ``hf_to_megatron`` extends them."""
    tied = model.config.tie_word_embeddings
    old_in = model.get_input_embeddings().weight.detach().clone()
    old_out = None if tied else model.get_output_embeddings().weight.detach().clone()
    model.resize_token_embeddings(vocab.vocab_size, mean_resizing=False)
    with torch.no_grad():
        model.get_input_embeddings().weight.copy_(
            extend_embedding(old_in, arch, vocab, vocab.vocab_size, seed=CONVERTER_SEED))
        if old_out is not None:
            model.get_output_embeddings().weight.copy_(
                extend_embedding(old_out, arch, vocab, vocab.vocab_size, seed=CONVERTER_SEED))


def build_hf_model(cfg, arch, vocab):
    """The run's HF model in fp32: ``model.init_from`` (an HF directory with the base or the extended vocabulary)
    or, without it, initialised by transformers from the architecture (seeded by ``parallel.seed``)."""
    init = cfg.model.init_from
    if not init:
        config = AutoConfig.for_model(**hf_config_dict(arch, vocab))
        torch.manual_seed(cfg.parallel.seed)
        return AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    if not os.path.exists(os.path.join(init, "config.json")):
        raise ConfigError(f"{init} has no config.json; engine=deepspeed starts from a Hugging Face model directory "
                          f"(megatron checkpoints: export them with tools/convert_checkpoint.py megatron-to-hf)",
                          key="model.init_from")
    rows = int(read_hf_config(init)["vocab_size"])
    if rows not in (vocab.base_vocab_size, vocab.vocab_size):
        raise ConfigError(f"{init} has vocab_size {rows}; the vocabulary ({vocab.vocab_size} ids, base "
                          f"{vocab.base_vocab_size}) needs one of the two", key="model.init_from")
    model = AutoModelForCausalLM.from_pretrained(init, dtype=torch.float32)
    if rows == vocab.base_vocab_size and rows != vocab.vocab_size:
        _extend_rows(model, arch, vocab)
    return model


def _param_groups(model, weight_decay: float) -> List[Dict[str, Any]]:
    """Megatron's default groups: biases and 1-D weights (norms) without weight decay (``wd_mult`` 0, which
    megatron's scheduler honours)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if name.endswith(".bias") or p.ndim == 1 else decay).append(p)
    groups = [{"params": decay, "wd_mult": 1.0, "lr_mult": 1.0}]
    if no_decay:
        groups.append({"params": no_decay, "wd_mult": 0.0, "lr_mult": 1.0})
    return [g for g in groups if g["params"]]


class DeepSpeedTrainModule:
    """One engine step on the HF model under ``deepspeed.initialize`` (see the module docstring)."""

    def __init__(self, cfg, model: ModelProvider):
        deepspeed = import_deepspeed()
        self.cfg, self.model_provider = cfg, model
        self.vocab, self.arch = model.vocab, model.arch
        self.precision = resolve_precision(cfg.model.precision)
        self.dp = dist.get_world_size() if dist.is_initialized() else 1
        self.dp_rank = dist.get_rank() if dist.is_initialized() else 0
        self.tp = self.pp = 1
        t = cfg.train
        self.num_microbatches = t.global_batch_size // (t.micro_batch_size * self.dp)
        deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo", verbose=False)
        hf_model = build_hf_model(cfg, self.arch, self.vocab)
        if cfg.deepspeed.gradient_checkpointing:
            hf_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        o = cfg.optimizer
        if o.name != "adam":
            raise ConfigError(f"{o.name!r}: engine=deepspeed trains with adam", key="optimizer.name")
        optimizer = torch.optim.AdamW(_param_groups(hf_model, o.weight_decay), lr=o.lr, betas=(o.beta1, o.beta2),
                                      eps=o.eps, weight_decay=o.weight_decay)
        self.ds_config = ds_config(cfg, self.dp)
        ensure_local_rank()
        self.engine, self.optimizer, _, _ = deepspeed.initialize(model=hf_model, optimizer=optimizer,
                                                                config=self.ds_config)
        self.model = [self.engine]
        self.hf_config = hf_model.config
        self.device = self.engine.device
        self.mask_dtype = next(self.engine.module.parameters()).dtype if self.precision == "fp32" else \
            _DTYPES[self.precision]
        self.scheduler = build_scheduler(cfg, self.optimizer)
        self.consecutive_nan = 0
        self.padded_vocab = self.vocab.vocab_size  # the HF model's rows: no TP padding
        self.num_params = count_params(self.arch).non_embedding
        self.peak_tflops = device_peak_tflops(self.precision, cfg.logging.peak_tflops)

    # --- accounting -------------------------------------------------------------------------------------------
    def flops_per_token(self, seq_length: int) -> float:
        return training_flops_per_token(self.arch, seq_length, self.padded_vocab)

    def describe(self, seq_length: int) -> Dict[str, Any]:
        return {"num_params": self.num_params, "flops_per_token": self.flops_per_token(seq_length),
                "seq_length": seq_length, "padded_vocab": self.padded_vocab, "engine": "deepspeed",
                "ds_config": self.ds_config, "model": self.model_provider.describe()}

    def layout(self) -> Dict[str, int]:
        return {"engine": "deepspeed", "zero_stage": int(self.cfg.deepspeed.zero_stage), "dp": self.dp}

    # --- the step ---------------------------------------------------------------------------------------------
    def _loss(self, batch):
        logits = self.engine(**hf_inputs(batch, self.hf_config, self.mask_dtype, self.device)).logits
        return liquid_loss(logits, batch["labels"].to(self.device), batch["loss_mask"].to(self.device),
                           batch["task_ids"].to(self.device), self.vocab.image_token_offset,
                           self.vocab.image_token_end, self.cfg.optimizer.z_loss_weight,
                           batch["position_ids"].to(self.device))

    def _all_reduce(self, t: torch.Tensor) -> torch.Tensor:
        if self.dp > 1:
            dist.all_reduce(t)
        return t

    def train_step(self, micro_batches: List[Dict]) -> Dict[str, Any]:
        """Forward/backward per micro-batch (DeepSpeed's gradient accumulation), one optimizer step at the last."""
        global_tokens = self._all_reduce(torch.stack([b["loss_mask"].sum() for b in micro_batches]).sum()
                                         .double().to(self.device))
        # DeepSpeed averages gradients over DP ranks; scale so they are the sum over the global batch divided by
        # its loss tokens (megatron's per-token loss), whatever the DP size and the micro-batch split.
        scale = self.dp / max(float(global_tokens), 1.0)
        stats = torch.zeros(len(STAT_NAMES), dtype=torch.float64, device=self.device)
        lr = self.optimizer.param_groups[0]["lr"]
        for batch in micro_batches:
            total, _, extra = self._loss(batch)
            self.engine.backward(total * scale, scale_wrt_gas=False)
            stats += extra["stats"]
            if batch is not micro_batches[-1]:
                self.engine.step()  # not a boundary: DeepSpeed only counts the micro step
        summary = summarize(self._all_reduce(stats).cpu())
        finite = math.isfinite(summary["loss"]) and (summary["z_loss"] is None or math.isfinite(summary["z_loss"]))
        self.engine.step()
        applied = self.engine.was_step_applied()
        if finite and not applied:
            raise TrainingAborted("DeepSpeed skipped a step whose loss was finite (non-finite gradients); lower "
                                  "optimizer.lr or set optimizer.clip_grad, and resume from the last checkpoint")
        if not finite and applied:
            raise TrainingAborted("the loss was not finite but DeepSpeed applied the step (its gradient norm was "
                                  "finite); the weights are suspect: resume from the last checkpoint")
        grad_norm = None
        if applied:
            self.scheduler.step(increment=1)
            grad_norm = float(self.engine.get_global_grad_norm())
        self.consecutive_nan = next_nan_streak(self.consecutive_nan, applied, self.cfg.train.max_consecutive_nan)
        return {**summary, "grad_norm": grad_norm, "lr": lr, "skipped": not finite}

    def evaluate(self, iterators: Dict[str, Iterator], eval_iters: int) -> Dict[str, Any]:
        self.engine.eval()
        record: Dict[str, Any] = {}
        total = torch.zeros(len(STAT_NAMES), dtype=torch.float64)
        with torch.no_grad():
            for task in TASK_NAMES:
                it = iterators.get(task)
                task_stats = torch.zeros(len(STAT_NAMES), dtype=torch.float64, device=self.device)
                for _ in range(eval_iters if it is not None else 0):
                    for _ in range(self.num_microbatches):
                        task_stats += self._loss(next(it))[2]["stats"]
                task_stats = self._all_reduce(task_stats).cpu()
                record[f"val_loss/{task}"] = summarize(task_stats)["loss"] if task_stats[1] > 0 else None
                total += task_stats
        self.engine.train()
        record["val_loss"] = summarize(total)["loss"] if total[1] > 0 else None
        return record

    # --- checkpoints (the checkpointer's interface) ------------------------------------------------------------
    def save_checkpoint(self, manager, iteration: int, data: Dict[str, Any], sidecars: Dict[str, Dict]) -> None:
        """DeepSpeed's ``save_checkpoint`` into the manager's ``iter_N.partial`` (then manifest, rename,
        ``latest``, keep-last-K as for megatron); the loop's counters and the scheduler ride in DeepSpeed's
        client state, each rank's RNG in ``rng_rank<r>.pt``."""
        def write(partial: str) -> None:
            client = {"data": data, "scheduler": self.scheduler.state_dict()}
            self.engine.save_checkpoint(partial, tag=DS_TAG, client_state=client, save_latest=False)
            torch.save(ckpt.rng_state(), os.path.join(partial, f"rng_rank{self.dp_rank}.pt"))

        manager.save_with(iteration, write, {**sidecars, HF_CONFIG_FILE: self.hf_config.to_dict()})

    def load_checkpoint(self, path: str, data: Dict[str, Any], with_rng: bool) -> Dict[str, Any]:
        loaded, client = self.engine.load_checkpoint(path, tag=DS_TAG, load_optimizer_states=True,
                                                     load_lr_scheduler_states=False)
        if loaded is None:
            raise ckpt.CheckpointError(f"{path}: DeepSpeed found no checkpoint under {DS_TAG}/; it was not written "
                                       f"by engine=deepspeed (set checkpoint.resume=false or use its engine)")
        self.scheduler.load_state_dict(client["scheduler"])
        rng = os.path.join(path, f"rng_rank{self.dp_rank}.pt")
        if with_rng and os.path.exists(rng):
            ckpt.set_rng_state(torch.load(rng, weights_only=False))
        return client["data"]


def export_to_hf(iter_dir: str, out_dir: str) -> None:
    """A deepspeed trainer checkpoint -> a plain HF directory (``save_pretrained`` of the consolidated fp32
    weights, any ZeRO stage, no process group needed) with ``liquid_vocab.json``."""
    import_deepspeed()
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint  # optional package

    ckpt.verify_checkpoint(iter_dir)
    cfg_file = os.path.join(iter_dir, HF_CONFIG_FILE)
    if not os.path.exists(cfg_file) or not glob.glob(os.path.join(iter_dir, DS_TAG, "*")):
        raise ckpt.CheckpointError(f"{iter_dir}: not a checkpoint of engine=deepspeed (no {HF_CONFIG_FILE} or "
                                   f"{DS_TAG}/); megatron checkpoints export with megatron-to-hf")
    config = _config_from_sidecar(cfg_file)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    state = get_fp32_state_dict_from_zero_checkpoint(iter_dir, tag=DS_TAG)
    model.load_state_dict(state, strict=False, assign=True)
    if config.tie_word_embeddings:
        model.tie_weights()
    model.save_pretrained(out_dir)
    LiquidVocab.load(iter_dir).save(out_dir)


def _config_from_sidecar(path: str):
    with open(path) as f:
        d = json.load(f)
    return AutoConfig.for_model(**{k: v for k, v in d.items() if k != "transformers_version"})
