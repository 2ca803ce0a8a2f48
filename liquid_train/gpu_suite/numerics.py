"""Numerics section: the layer specs and attention backends compute the same model on packed THD micro-batches.

* **TE spec against local spec** (when Transformer Engine imports): qwen2.5 and llama3.2 at their real widths and
  two layers, bf16, the local model's weights loaded into the TE model under megatron's own key map (the local
  spec's ``sharded_state_dict_keys_map``: its norms are TE's fused ``layer_norm_weight``); logits and loss on one
  packed micro-batch.
* **Packed against alone**, for every attention backend present: the Trainer's own step (megatron's schedule, DDP
  gradient buffers, the project's loss) on a packed micro-batch, against each of its samples as a micro-batch of
  its own (padded to the same length, so every call has one shape). Loss sums and token-weighted gradient sums
  must agree: any cross-sample attention breaks it. qwen2.5 (no soft-cap) and Gemma 2 (soft-caps, window 256
  shorter than the samples) at real width, two layers.
* **Flex against local gradients**: the same packed micro-batch and weights through both backends, fp32, on
  Gemma 2 (each FlexAttention shape and dtype is a compile of its own, so qwen2.5 runs flex in bf16 only).

Tolerances (relative: max |a - b| / max |b|, stated in each check): same backend fp32 1e-5 (loss) / 1e-4
(gradients), bf16 5e-3 / 5e-2; across kernels fp32 1e-3 (flex vs local gradients), bf16 TE vs local 2e-2
(logits) / 5e-3 (loss). TF32 is switched off for the fp32 parts.
"""
from __future__ import annotations

import os
from dataclasses import replace
from typing import Dict, Tuple

import numpy as np
import torch

from liquid_train.gpu_suite.context import Context, Skip, check, free_memory, part, rel_diff
from liquid_train.gpu_suite.harness import (MarkovText, main_grads, make_trainer, packed_micro_batch,
                                            segments_alone, to_device, unwrap, zero_grads)
from liquid_train.models import builder
from liquid_train.models.families import get_model_arch
from liquid_train.models.options import BuildOptions
from liquid_train.models.vocab_extension import plan_vocab
from liquid_train.parallel import set_seed
from liquid_train.training.loss import STAT_NAMES, liquid_loss

CE, TOKENS = STAT_NAMES.index("ce"), STAT_NAMES.index("tokens")
SAME_BACKEND = {"fp32": (1e-5, 1e-4), "bf16": (5e-3, 5e-2)}  # (loss, gradients)
FLEX_VS_LOCAL_GRADS = 1e-3
FLEX_FP32_FAMILY = "gemma2"  # on a GPU the fp32 flex-vs-local comparison runs on this family only
TE_LOGITS, TE_LOSS = 2e-2, 5e-3


def _arch(ctx: Context, family: str, size: str, **changes):
    """The family at its real width with two layers on a GPU, its tiny size in a dry run."""
    if ctx.dry_run:
        return replace(get_model_arch(family, "tiny"), **{k: v for k, v in changes.items() if k != "sliding_window"})
    return replace(get_model_arch(family, size), num_layers=2, size=f"{size}-2-layers", **changes)


def _shapes(ctx: Context) -> Dict:
    if ctx.dry_run:
        return {"rows": 2, "seq": 32, "docs": (3, 12), "image_tokens": 64}
    return {"rows": 2, "seq": 2048, "docs": (64, 1024), "image_tokens": 8192}


def _batch(arch, vocab, shapes, seed: int = 0):
    stream = MarkovText(vocab.base_vocab_size, seed=seed)
    return packed_micro_batch(stream, np.random.default_rng(seed), shapes["rows"], shapes["seq"], shapes["docs"],
                              vocab.pad_id)


def te_state_dict(local_state: Dict[str, torch.Tensor], arch) -> Dict[str, torch.Tensor]:
    """Local-spec parameter names -> TE-spec names, by the local layer spec's own key map."""
    mapping = builder.layer_spec(arch, "local").submodules.sharded_state_dict_keys_map
    out = {}
    for key, value in local_state.items():
        if key.endswith("_extra_state"):
            continue
        head, sep, rest = key.partition("decoder.layers.")
        if sep:
            number, _, suffix = rest.partition(".")
            for old, new in mapping.items():
                if suffix.startswith(old):
                    suffix = new + suffix[len(old):]
            key = f"{head}decoder.layers.{number}.{suffix}"
        out[key] = value
    return out


def _forward(model, batch, vocab, device) -> Tuple[torch.Tensor, float]:
    b = to_device(batch, device)
    with torch.no_grad():
        logits = model(b["tokens"].reshape(1, -1), b["position_ids"].reshape(1, -1), None,
                       packed_seq_params=b["packed_seq_params"])
        total, n, _ = liquid_loss(logits, b["labels"], b["loss_mask"], b["task_ids"], vocab.image_token_offset,
                                  vocab.image_token_end, 0.0, b["position_ids"])
    return logits[..., :vocab.vocab_size].float(), float(total) / float(n)


def te_vs_local(ctx: Context, family: str, size: str) -> Dict:
    shapes = _shapes(ctx)
    arch = _arch(ctx, family, size)
    vocab = plan_vocab(arch, shapes["image_tokens"])
    batch = _batch(arch, vocab, shapes)
    precision = "bf16" if ctx.cuda else "fp32"
    set_seed(7)
    local = builder.build(arch, vocab, BuildOptions(precision=precision, attention_backend="local",
                                                    training=False))().to(ctx.device).eval()
    logits_local, loss_local = _forward(local, batch, vocab, ctx.device)
    renamed = te_state_dict(local.state_dict(), arch)
    reason = builder.te_unavailable_reason()
    if reason:
        raise Skip(f"Transformer Engine cannot run here: {reason} (local loss {loss_local:.4f}, "
                   f"{len(renamed)} tensors mapped to TE names)")
    te = builder.build(arch, vocab, BuildOptions(precision=precision, attention_backend="te",
                                                 training=False))().to(ctx.device).eval()
    missing, unexpected = te.load_state_dict(renamed, strict=False)
    missing = [k for k in missing if not k.endswith("_extra_state")]
    if missing or unexpected:
        raise RuntimeError(f"local -> TE weights: missing {missing[:4]}, unexpected {unexpected[:4]}")
    logits_te, loss_te = _forward(te, batch, vocab, ctx.device)
    del local, te
    free_memory(ctx)
    return {"arch": arch.size, "tokens": int(batch["tokens"].numel()), "precision": precision,
            "loss_local": loss_local, "loss_te": loss_te,
            "checks": {"logits": check(rel_diff(logits_te, logits_local), TE_LOGITS, "TE vs local logits, rel."),
                       "loss": check(abs(loss_te - loss_local) / loss_local, TE_LOSS, "TE vs local loss, rel.")}}


def packed_vs_alone(ctx: Context, arch, vocab, batch, backend: str, precision: str, train: bool,
                    init: Dict = None) -> Tuple[Dict, torch.Tensor, Dict]:
    """(result, packed gradient sum or None, the model's weights) of one backend at one precision."""
    run_dir = os.path.join(ctx.work_dir, f"numerics-{arch.family}-{backend}-{precision}")
    trainer = make_trainer(arch, vocab, BuildOptions(precision=precision, attention_backend=backend, training=train),
                           seq=batch["tokens"].shape[1], micro_batch_size=batch["tokens"].shape[0], run_dir=run_dir)
    if init is not None:
        unwrap(trainer.model[0]).load_state_dict(init, strict=False)
    weights = {k: v.detach().clone() for k, v in unwrap(trainer.model[0]).state_dict().items()
               if torch.is_tensor(v) and not k.endswith("_extra_state")}

    def step(micro_batch):
        zero_grads(trainer)
        with torch.set_grad_enabled(train):  # forward only: no autograd graph (as the trainer's evaluation)
            return trainer.forward_backward([micro_batch], forward_only=not train).cpu()

    packed = step(batch)
    packed_grad = main_grads(trainer) * float(packed[TOKENS]) if train else None
    total = torch.zeros_like(packed)
    alone_grad = torch.zeros_like(packed_grad) if train else None
    alone = segments_alone(batch, vocab.pad_id)
    for one in alone:
        stats = step(one)
        total += stats
        if train:
            alone_grad += main_grads(trainer) * float(stats[TOKENS])
    trainer = None  # the model, its gradient buffers and optimizer go before the next backend's
    free_memory(ctx)
    loss_tol, grad_tol = SAME_BACKEND["bf16" if precision in ("bf16", "fp8") else "fp32"]
    checks = {"tokens": check(abs(float(packed[TOKENS] - total[TOKENS])), 0, "loss tokens, packed - alone"),
              "loss": check(abs(float(packed[CE] - total[CE])) / float(total[CE]), loss_tol,
                            "summed loss, packed vs alone, rel.")}
    if train:
        checks["grads"] = check(rel_diff(packed_grad, alone_grad), grad_tol, "gradient sums, packed vs alone, rel.")
    result = {"backend": backend, "precision": precision, "gradients": train, "segments": len(alone),
              "loss_tokens": int(packed[TOKENS]), "loss": float(packed[CE] / packed[TOKENS]), "checks": checks}
    return result, packed_grad, weights


def _cross(local: Dict, flex: Dict, local_grad, flex_grad) -> Dict:
    if not local["status"] == flex["status"] == "ran":
        raise Skip("needs both the local and the flex run")
    checks = {"loss": check(abs(flex["loss"] - local["loss"]) / local["loss"], FLEX_VS_LOCAL_GRADS,
                            "packed loss, flex vs local, rel.")}
    if flex_grad is None:
        raise Skip("FlexAttention has no backward pass on CPU (loss only)", {"checks": checks})
    checks["grads"] = check(rel_diff(flex_grad, local_grad), FLEX_VS_LOCAL_GRADS,
                            "packed gradient sums, flex vs local, rel.")
    return {"checks": checks}


def run(ctx: Context) -> Dict:
    out: Dict = {"te_vs_local": {}, "packed_vs_alone": {}, "flex_vs_local_grads": {}}
    for family, size in (("qwen2.5", "0.5b"), ("llama3.2", "1b")):
        out["te_vs_local"][family] = part(ctx, f"numerics te vs local {family}", te_vs_local, ctx, family, size)
    te_reason = builder.te_unavailable_reason()
    shapes = _shapes(ctx)
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        for family, size, changes in (("qwen2.5", "0.5b", {}), ("gemma2", "2b", {"sliding_window": 256})):
            arch = _arch(ctx, family, size, **changes)
            vocab = plan_vocab(arch, shapes["image_tokens"])
            batch = _batch(arch, vocab, shapes, seed=1)
            rows = out["packed_vs_alone"][family] = {}
            ctx.say(f"numerics: packed vs alone, {family} {arch.size}")
            kept: Dict = {}

            def one(backend, precision, train, keep=None, init=False):
                """One backend's run; ``init``: start from the first run's weights; ``keep``: keep its gradient."""
                result, grad, weights = packed_vs_alone(ctx, arch, vocab, batch, backend, precision, train,
                                                        init=kept.get("weights") if init else None)
                kept.setdefault("weights", weights)
                if keep:
                    kept[keep] = grad
                return result

            rows["local fp32"] = part(ctx, f"numerics {family} local", one, "local", "fp32", True, keep="local")
            if ctx.cuda and family != FLEX_FP32_FAMILY:
                out["flex_vs_local_grads"][family] = {
                    "status": f"skipped: compared on {FLEX_FP32_FAMILY} (soft-cap and window); {family}'s flex "
                              f"run is bf16 only, to keep FlexAttention compiles within the time budget"}
            else:
                flex_train = ctx.cuda  # FlexAttention has no backward on CPU: forward (the loss) only there
                rows["flex fp32"] = part(ctx, f"numerics {family} flex", one, "flex", "fp32", flex_train,
                                         keep="flex", init=True)
                out["flex_vs_local_grads"][family] = part(ctx, f"numerics {family} flex vs local", _cross,
                                                          rows["local fp32"], rows["flex fp32"], kept.get("local"),
                                                          kept.get("flex"))
            kept.pop("local", None), kept.pop("flex", None)
            if ctx.cuda:
                rows["flex bf16"] = part(ctx, f"numerics {family} flex bf16", one, "flex", "bf16", True, init=True)
            if arch.attn_logit_softcap is not None:
                rows["te bf16"] = {"status": "skipped: Transformer Engine cannot soft-cap attention logits"}
            elif te_reason:
                rows["te bf16"] = {"status": f"skipped: Transformer Engine cannot run here: {te_reason}"}
            else:
                rows["te bf16"] = part(ctx, f"numerics {family} te", one, "te", "bf16", True)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    return out
