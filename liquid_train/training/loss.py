"""Next-token loss on vocab-parallel logits: cross-entropy, z-loss, per-task sums and image-token top-1.

Why our own loss function instead of GPTModel's built-in one: the z-loss needs the logsumexp of the full
(vocab-parallel) logits and the image-token accuracy needs their argmax; both are reductions over the TP group
that megatron's fused cross-entropy does internally but does not return.

Sums, not means, are returned: megatron's schedules run with ``calculate_per_token_loss=True``, so gradients are
divided once by the number of loss tokens of the whole global batch (all micro-batches, all DP ranks). That
makes the loss of a DP=2 or PP=2 run the same number as the single-process one.
"""
from __future__ import annotations

from typing import Dict, Tuple

import torch
import torch.distributed as dist

from liquid_train.vocab import TASK_NAMES


def _tp_group():
    from megatron.core import parallel_state

    return parallel_state.get_tensor_model_parallel_group()


def vocab_parallel_logsumexp(logits: torch.Tensor) -> torch.Tensor:
    """logsumexp over the last dim of logits sharded over the TP group along that dim."""
    group = _tp_group()
    local_max = logits.max(dim=-1).values
    global_max = local_max.detach().clone()
    if dist.get_world_size(group) > 1:
        dist.all_reduce(global_max, op=dist.ReduceOp.MAX, group=group)
    sum_exp = torch.exp(logits - global_max.unsqueeze(-1)).sum(dim=-1)
    if dist.get_world_size(group) > 1:
        from megatron.core.tensor_parallel.mappings import reduce_from_tensor_model_parallel_region

        sum_exp = reduce_from_tensor_model_parallel_region(sum_exp)  # all-reduce with an identity backward
    return torch.log(sum_exp) + global_max


@torch.no_grad()
def vocab_parallel_argmax(logits: torch.Tensor) -> torch.Tensor:
    """Global argmax ids of vocab-sharded logits (ties: the lowest id)."""
    group = _tp_group()
    vocab_per_rank = logits.shape[-1]
    rank = dist.get_rank(group) if dist.get_world_size(group) > 1 else 0
    local_max, local_idx = logits.max(dim=-1)
    global_max = local_max.clone()
    if dist.get_world_size(group) > 1:
        dist.all_reduce(global_max, op=dist.ReduceOp.MAX, group=group)
    big = torch.iinfo(torch.int64).max
    ids = torch.where(local_max == global_max, local_idx.long() + rank * vocab_per_rank,
                      torch.full_like(local_idx, big, dtype=torch.long))
    if dist.get_world_size(group) > 1:
        dist.all_reduce(ids, op=dist.ReduceOp.MIN, group=group)
    return ids


def liquid_loss(logits: torch.Tensor, labels: torch.Tensor, loss_mask: torch.Tensor, task_ids: torch.Tensor,
                image_token_offset: int, image_token_end: int, z_loss_weight: float = 0.0,
                position_ids: torch.Tensor = None) -> Tuple[torch.Tensor, torch.Tensor, Dict[str, torch.Tensor]]:
    """Loss for one micro-batch on the last pipeline stage.

    ``logits``: [b, s, V/tp] (megatron GPTModel's output without labels); the rest [b, s].
    Returns (sum of token losses incl. z-loss, number of loss tokens, reduced stats) where the stats tensor holds,
    as float64 sums: [ce_sum, tokens, ce_sum/text, tokens/text, ce/t2i, tok/t2i, ce/i2t, tok/i2t, zloss_sum,
    image_correct, image_tokens, samples/text, samples/t2i, samples/i2t] (a sample starts where its position id
    restarts at 0: for text that is a document or a document piece, not a ``text_sample: window`` window).
    """
    from megatron.core.tensor_parallel import vocab_parallel_cross_entropy

    logits = logits.float()
    mask = loss_mask.float()
    # argmax and logsumexp first: megatron's cross-entropy shifts its input by the row max in place.
    image_mask = (mask > 0) & (labels >= image_token_offset) & (labels < image_token_end)
    image_correct = (vocab_parallel_argmax(logits.detach()[image_mask]) == labels[image_mask]).sum()  # image rows only
    zsum = torch.zeros((), dtype=torch.float32, device=logits.device)
    if z_loss_weight > 0:
        lse = vocab_parallel_logsumexp(logits)
        zsum = (lse.square() * mask).sum()
    ce = vocab_parallel_cross_entropy(logits, labels)  # [b, s]
    ce_masked = ce * mask
    total = ce_masked.sum()
    if z_loss_weight > 0:
        total = total + z_loss_weight * zsum
    num_tokens = mask.sum().to(torch.int)
    with torch.no_grad():
        parts = [ce_masked.sum().double(), mask.sum().double()]
        for task in range(len(TASK_NAMES)):
            task_mask = mask * (task_ids == task).float()
            parts += [(ce * task_mask).sum().double(), task_mask.sum().double()]
        parts.append(zsum.detach().double())
        parts += [image_correct.double(), image_mask.sum().double()]
        starts = (position_ids == 0) if position_ids is not None else torch.zeros_like(task_ids, dtype=torch.bool)
        parts += [(starts & (task_ids == task)).sum().double() for task in range(len(TASK_NAMES))]
        stats = torch.stack(parts)
    return total, num_tokens, {"stats": stats}


STAT_NAMES = ("ce", "tokens", "ce/text", "tokens/text", "ce/t2i", "tokens/t2i", "ce/i2t", "tokens/i2t", "zloss",
              "image_correct", "image_tokens", "samples/text", "samples/t2i", "samples/i2t")


def summarize(stats: torch.Tensor) -> Dict[str, float]:
    """Turn summed stats (over micro-batches and DP ranks) into the logged numbers."""
    s = dict(zip(STAT_NAMES, stats.tolist()))
    out = {"loss": s["ce"] / s["tokens"] if s["tokens"] else float("nan")}
    for task in TASK_NAMES:
        n = s[f"tokens/{task}"]
        out[f"loss/{task}"] = s[f"ce/{task}"] / n if n else None
        out[f"tokens/{task}"] = int(n)
    out["z_loss"] = s["zloss"] / s["tokens"] if s["tokens"] else None
    out["image_top1"] = s["image_correct"] / s["image_tokens"] if s["image_tokens"] else None
    out["loss_tokens"] = int(s["tokens"])
    for task in TASK_NAMES:
        out[f"samples/{task}"] = int(s[f"samples/{task}"])
    return out
