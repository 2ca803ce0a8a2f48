"""Next-token loss on vocab-parallel logits: cross-entropy, z-loss, per-task sums and image-token top-1.

Why not megatron's ``vocab_parallel_cross_entropy`` as it is: it returns neither the logsumexp (the z-loss
``mean(lse^2)`` needs it) nor the argmax (image top-1), and it saves an fp32 softmax the size of the logits for
backward, which with a separate z-loss doubles (about 4x the bf16 logits). :class:`VocabParallelCrossEntropy` is
megatron's algorithm (the same TP reductions: max, then sum of exponentials and the target logit, over the tensor-
parallel group; the same vocabulary ranges) computed in row chunks of at most ``CHUNK_BYTES`` of fp32, returning
(cross-entropy, logsumexp, argmax) in one pass. For backward it keeps only the logits it was given (bf16 on GPUs)
and one fp32 logsumexp per token, and recomputes the softmax chunk by chunk: with z-loss on, the bytes saved per
token are ~1x the bf16 logits (``benchmarks/loss_memory.py``).

Sums, not means, are returned: megatron's schedules run with ``calculate_per_token_loss=True``, so gradients are
divided once by the number of loss tokens of the whole global batch (all micro-batches, all DP ranks). That
makes the loss of a DP=2 or PP=2 run the same number as the single-process one.

Nothing here synchronises with the host: per-task sums are ``scatter_add`` over task ids, the image accuracy is a
masked sum, and the stats stay on the device until the step's single reduction.
"""
from __future__ import annotations

from typing import Dict, Tuple

import torch
import torch.distributed as dist
from megatron.core import parallel_state
from megatron.core.tensor_parallel.utils import VocabUtility

from liquid_train.vocab import TASK_NAMES

CHUNK_BYTES = 256 * 2**20
"""fp32 working set per chunk of rows, forward and backward."""


def _tp():
    group = parallel_state.get_tensor_model_parallel_group()
    return group, dist.get_world_size(group), dist.get_rank(group)


def _chunks(rows: int, width: int):
    step = max(1, CHUNK_BYTES // (4 * max(width, 1)))
    return [(lo, min(rows, lo + step)) for lo in range(0, rows, step)]


class VocabParallelCrossEntropy(torch.autograd.Function):
    """``(logits [n, V/tp], target [n]) -> (ce [n], lse [n], argmax [n])``, all fp32/int64; ce and lse are
    differentiable (d ce = softmax - onehot, d lse = softmax), argmax is not (ties: the lowest id)."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, target: torch.Tensor):
        group, world, rank = _tp()
        rows, width = logits.shape
        start, end = VocabUtility.vocab_range_from_per_partition_vocab_size(width, rank, world)
        local_max, local_idx = logits.max(dim=-1)
        row_max = local_max.float()
        if world > 1:
            row_max = row_max.clone()
            dist.all_reduce(row_max, op=dist.ReduceOp.MAX, group=group)
        argmax = torch.where(local_max.float() == row_max, local_idx + start,
                             torch.full_like(local_idx, torch.iinfo(torch.int64).max))
        if world > 1:
            dist.all_reduce(argmax, op=dist.ReduceOp.MIN, group=group)
        outside = (target < start) | (target >= end)
        local_target = torch.where(outside, torch.zeros_like(target), target - start)
        sums = torch.empty(2, rows, dtype=torch.float32, device=logits.device)  # sum of exp, target logit
        for lo, hi in _chunks(rows, width):
            x = logits[lo:hi].float()
            sums[0, lo:hi] = torch.exp(x - row_max[lo:hi, None]).sum(dim=-1)
            sums[1, lo:hi] = x.gather(1, local_target[lo:hi, None]).squeeze(1)
        sums[1].masked_fill_(outside, 0.0)
        if world > 1:
            dist.all_reduce(sums, group=group)
        lse = torch.log(sums[0]) + row_max
        ce = lse - sums[1]
        ctx.save_for_backward(logits, local_target, outside, lse)
        ctx.mark_non_differentiable(argmax)
        return ce, lse, argmax

    @staticmethod
    def backward(ctx, grad_ce: torch.Tensor, grad_lse: torch.Tensor, grad_argmax=None):
        logits, local_target, outside, lse = ctx.saved_tensors
        rows, width = logits.shape
        grad_ce = grad_ce.float() if grad_ce is not None else torch.zeros_like(lse)
        grad_lse = grad_lse.float() if grad_lse is not None else torch.zeros_like(lse)
        coeff = grad_ce + grad_lse  # softmax's weight: from the cross-entropy and from the logsumexp
        at_target = torch.where(outside, torch.zeros_like(grad_ce), grad_ce)
        grad = torch.empty_like(logits)
        for lo, hi in _chunks(rows, width):
            g = torch.exp(logits[lo:hi].float() - lse[lo:hi, None]) * coeff[lo:hi, None]
            g.scatter_add_(1, local_target[lo:hi, None], -at_target[lo:hi, None])
            grad[lo:hi] = g.to(grad.dtype)
        return grad, None


def vocab_parallel_cross_entropy(logits: torch.Tensor, target: torch.Tensor
                                 ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cross-entropy, logsumexp and argmax of vocab-sharded ``logits [..., V/tp]`` at ``target [...]``."""
    shape = target.shape
    ce, lse, argmax = VocabParallelCrossEntropy.apply(logits.reshape(-1, logits.size(-1)), target.reshape(-1))
    return ce.view(shape), lse.view(shape), argmax.view(shape)


STAT_NAMES = ("ce", "tokens", "ce/text", "tokens/text", "ce/t2i", "tokens/t2i", "ce/i2t", "tokens/i2t", "zloss",
              "image_correct", "image_tokens", "samples/text", "samples/t2i", "samples/i2t")
_NUM_TASKS = len(TASK_NAMES)


def _per_task(values: torch.Tensor, task_index: torch.Tensor) -> torch.Tensor:
    """Sums of ``values`` per task (index ``_NUM_TASKS`` collects padding), float64, no host sync."""
    out = torch.zeros(_NUM_TASKS + 1, dtype=torch.float64, device=values.device)
    return out.scatter_add_(0, task_index, values.double())[:_NUM_TASKS]


def liquid_loss(logits: torch.Tensor, labels: torch.Tensor, loss_mask: torch.Tensor, task_ids: torch.Tensor,
                image_token_offset: int, image_token_end: int, z_loss_weight: float = 0.0,
                position_ids: torch.Tensor = None) -> Tuple[torch.Tensor, torch.Tensor, Dict[str, torch.Tensor]]:
    """Loss for one micro-batch on the last pipeline stage.

    ``logits``: ``[..., V/tp]`` (megatron GPTModel's output without labels: ``[b, s, V/tp]``, or ``[1, b*s, V/tp]``
    for a THD micro-batch); the rest have the leading shape of ``logits`` or are flattened to it. Returns (sum of
    token losses incl. z-loss, number of loss tokens, stats) where ``stats["stats"]`` holds, as float64 sums, the
    ``STAT_NAMES``: cross-entropy and loss tokens overall and per task, the z-loss sum, image-token top-1 hits and
    image loss tokens, and samples begun per task (a sample starts where its position id restarts at 0: for text
    that is a document or a document piece, not a ``text_sample: window`` window).
    """
    labels = labels.reshape(-1)
    mask = loss_mask.reshape(-1).float()
    tasks = task_ids.reshape(-1)
    task_index = torch.where((tasks >= 0) & (tasks < _NUM_TASKS), tasks, torch.full_like(tasks, _NUM_TASKS))
    ce, lse, argmax = vocab_parallel_cross_entropy(logits, labels.view(logits.shape[:-1]))
    ce, lse, argmax = ce.reshape(-1), lse.reshape(-1), argmax.reshape(-1)
    ce_masked = ce * mask
    total = ce_masked.sum()
    zsum = (lse.square() * mask).sum() if z_loss_weight > 0 else torch.zeros((), device=logits.device)
    if z_loss_weight > 0:
        total = total + z_loss_weight * zsum
    num_tokens = mask.sum().to(torch.int)
    with torch.no_grad():
        image = mask * ((labels >= image_token_offset) & (labels < image_token_end)).float()
        starts = (position_ids.reshape(-1) == 0).double() if position_ids is not None else torch.zeros_like(mask)
        ce_task = _per_task(ce_masked.detach(), task_index)
        tokens_task = _per_task(mask, task_index)
        stats = torch.cat([
            torch.stack([ce_masked.detach().sum().double(), mask.sum().double()]),
            torch.stack([ce_task, tokens_task], dim=1).reshape(-1),
            torch.stack([zsum.detach().double(), (image * (argmax == labels).float()).sum().double(),
                         image.sum().double()]),
            _per_task(starts, task_index),
        ])
    return total, num_tokens, {"stats": stats}


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
