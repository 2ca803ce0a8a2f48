"""Logit processing and the two decode loops: CFG image tokens, and text (captions, plain generation).

WHY one batch: the conditional and unconditional prompts are stacked into one left-padded batch of 2B rows, so each of
the 1024 decode steps is a single forward with a shared KV cache (the public Liquid code does the same), and CFG is
``uncond + scale * (cond - uncond)`` on the two halves. While an image is drawn only the K image ids may be sampled;
while text is drawn the image ids and ``<boi>/<eoi>/<unconditional>`` may not.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence

import torch
from tqdm import tqdm


@dataclass
class SamplingConfig:
    cfg_scale: float = 7.0
    temperature: float = 0.99
    """0 means greedy (argmax)."""
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


def pick_next(logits: torch.Tensor, cfg: SamplingConfig, generator: torch.Generator) -> torch.Tensor:
    """[B, V] processed logits -> [B, 1] ids: argmax at temperature 0, else top-k/top-p multinomial."""
    if cfg.temperature <= 0:
        return logits.argmax(-1, keepdim=True)
    probs = torch.softmax(filter_top_k_top_p(logits / cfg.temperature, cfg.top_k, cfg.top_p), dim=-1)
    return torch.multinomial(probs.cpu(), 1, generator=generator).to(logits.device)


class CachedDecoder:
    """A left-padded batch stepped one token at a time; with ``use_cache`` each step feeds only the new tokens.

    Position ids count real tokens only (left pads do not shift RoPE), and the attention mask hides the pads, so a
    padded row decodes exactly as it would alone.
    """

    def __init__(self, model, seqs: Sequence[Sequence[int]], pad_id: int, use_cache: bool = True):
        device = next(model.parameters()).device
        self.model, self.use_cache = model, use_cache
        ids, mask = left_pad([list(s) for s in seqs], pad_id)
        self.ids, self.mask = ids.to(device), mask.to(device)
        self._new, self._past = self.ids, None

    @torch.no_grad()
    def logits(self) -> torch.Tensor:
        """fp32 logits of the next token for every row, [B, V]."""
        pos = (self.mask.cumsum(-1) - 1).clamp(min=0)
        if self.use_cache and self._past is not None:
            res = self.model(input_ids=self._new, attention_mask=self.mask, position_ids=pos[:, -self._new.shape[1]:],
                             past_key_values=self._past, use_cache=True)
        else:
            res = self.model(input_ids=self.ids, attention_mask=self.mask, position_ids=pos, use_cache=self.use_cache)
        self._past = res.past_key_values if self.use_cache else None
        return res.logits[:, -1, :].float()

    def append(self, next_ids: torch.Tensor) -> None:
        """``next_ids`` [B, 1] becomes the last token of every row."""
        next_ids = next_ids.to(self.ids.device)
        self._new = next_ids
        self.ids = torch.cat([self.ids, next_ids], 1)
        self.mask = torch.cat([self.mask, torch.ones_like(next_ids)], 1)


@torch.no_grad()
def generate_image_tokens(model, cond: List[List[int]], uncond: List[int], num_tokens: int, image_start: int,
                          image_end: int, pad_id: int, cfg: SamplingConfig, use_cache: bool = True,
                          return_logits: bool = False, progress: bool = False):
    """Draw ``num_tokens`` image ids for each prompt in ``cond`` (each ends with <boi>) with CFG against ``uncond``."""
    b = len(cond)
    decoder = CachedDecoder(model, list(cond) + [list(uncond)] * b, pad_id, use_cache)
    gen = torch.Generator().manual_seed(cfg.seed)
    out, all_logits = [], []
    for _ in tqdm(range(num_tokens), desc="image tokens", disable=not progress, leave=False):
        logits = decoder.logits()
        guided = logits[b:] + cfg.cfg_scale * (logits[:b] - logits[b:])
        guided = restrict_to_range(guided, image_start, image_end)
        all_logits.append(guided / max(cfg.temperature, 1e-6))
        nxt = pick_next(guided, cfg, gen)
        out.append(nxt)
        decoder.append(torch.cat([nxt, nxt], 0))
    tokens = torch.cat(out, 1)
    return (tokens, torch.stack(all_logits, 1)) if return_logits else tokens


@torch.no_grad()
def generate_text_tokens(model, prompts: List[List[int]], max_new_tokens: int, eos_id: int, pad_id: int,
                         banned_ids: Optional[torch.Tensor], cfg: SamplingConfig, vocab_size: Optional[int] = None,
                         use_cache: bool = True) -> List[List[int]]:
    """Continue each prompt until ``eos_id`` (included) or ``max_new_tokens``; ``banned_ids`` are never drawn.

    ``vocab_size`` cuts off any rows above the real vocabulary (TP padding) so they cannot be drawn either.
    """
    decoder = CachedDecoder(model, prompts, pad_id, use_cache)
    gen = torch.Generator().manual_seed(cfg.seed)
    done = torch.zeros(len(prompts), dtype=torch.bool)
    out: List[List[int]] = [[] for _ in prompts]
    for _ in range(max_new_tokens):
        logits = decoder.logits()
        if vocab_size is not None and logits.shape[-1] > vocab_size:
            logits[:, vocab_size:] = float("-inf")
        if banned_ids is not None and banned_ids.numel():
            logits[:, banned_ids.to(logits.device)] = float("-inf")
        nxt = pick_next(logits, cfg, gen).cpu()
        nxt[done] = eos_id  # finished rows keep emitting eos (dropped below)
        for i in range(len(prompts)):
            if not done[i]:
                out[i].append(int(nxt[i, 0]))
        done |= nxt[:, 0] == eos_id
        if bool(done.all()):
            break
        decoder.append(nxt)
    return out
