"""Logit processing and the CFG image-token decode loop.

WHY one batch: the conditional and unconditional prompts are stacked into one left-padded batch of 2B rows, so each of
the 1024 decode steps is a single forward with a shared KV cache (the public Liquid code does the same), and CFG is
``uncond + scale * (cond - uncond)`` on the two halves. While an image is drawn only the K image ids may be sampled.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import torch


@dataclass
class SamplingConfig:
    cfg_scale: float = 7.0
    temperature: float = 0.99
    top_k: int = 4096
    top_p: float = 0.96
    seed: int = 0


def filter_top_k_top_p(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    logits = logits.clone()
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits[logits < kth] = float("-inf")
    if top_p < 1.0:
        sorted_logits, idx = torch.sort(logits, descending=True, dim=-1)
        probs = torch.softmax(sorted_logits, dim=-1)
        remove = probs.cumsum(-1) - probs > top_p  # keep the smallest prefix whose mass reaches top_p
        sorted_logits[remove] = float("-inf")
        logits = torch.full_like(logits, float("-inf")).scatter(-1, idx, sorted_logits)
    return logits


def restrict_to_range(logits: torch.Tensor, start: int, end: int) -> torch.Tensor:
    out = torch.full_like(logits, float("-inf"))
    out[..., start:end] = logits[..., start:end]
    return out


def left_pad(seqs: List[List[int]], pad_id: int):
    n = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), n), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, n - len(s):] = torch.tensor(s)
        mask[i, n - len(s):] = 1
    return ids, mask


@torch.no_grad()
def generate_image_tokens(model, cond: List[List[int]], uncond: List[int], num_tokens: int, image_start: int,
                          image_end: int, pad_id: int, cfg: SamplingConfig, use_cache: bool = True,
                          return_logits: bool = False):
    """Draw ``num_tokens`` image ids for each prompt in ``cond`` (each ends with <boi>) with CFG against ``uncond``."""
    b = len(cond)
    ids, mask = left_pad(list(cond) + [list(uncond)] * b, pad_id)
    gen = torch.Generator().manual_seed(cfg.seed)
    out, all_logits, past = [], [], None
    step_ids = ids
    for _ in range(num_tokens):
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        if use_cache and past is not None:
            res = model(input_ids=step_ids, attention_mask=mask, position_ids=pos[:, -1:], past_key_values=past,
                        use_cache=True)
        else:
            res = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=use_cache)
        past = res.past_key_values if use_cache else None
        logits = res.logits[:, -1, :].float()
        guided = logits[b:] + cfg.cfg_scale * (logits[:b] - logits[b:])
        guided = restrict_to_range(guided, image_start, image_end) / max(cfg.temperature, 1e-6)
        all_logits.append(guided)
        probs = torch.softmax(filter_top_k_top_p(guided, cfg.top_k, cfg.top_p), dim=-1)
        nxt = torch.multinomial(probs, 1, generator=gen)
        out.append(nxt)
        step_ids = torch.cat([nxt, nxt], 0)
        ids = torch.cat([ids, step_ids], 1)
        mask = torch.cat([mask, torch.ones_like(step_ids)], 1)
    tokens = torch.cat(out, 1)
    return (tokens, torch.stack(all_logits, 1)) if return_logits else tokens
