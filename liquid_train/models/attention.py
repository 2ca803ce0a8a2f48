"""Core attention backends for the project's layer specs, all consuming megatron's own ``PackedSeqParams``.

A packed micro-batch reaches attention in megatron's THD layout: ``query`` ``[t, heads, head_dim]`` with
``PackedSeqParams(qkv_format="thd", cu_seqlens_q=...)`` marking where each sample (attention segment) starts. That
is the contract Transformer Engine's fused attention implements on GPUs (``attention_backend: te``, megatron's TE
layer spec, nothing of ours); the two backends here implement the same contract for what TE cannot do (Gemma 2's
logit soft-capping) and for machines without TE:

* :class:`LocalCoreAttention` (``local``): exact attention one segment at a time (causal, optional sliding window,
  optional tanh soft-capping in fp32). It is the reference every other backend is tested against, and the CPU
  backend. It never builds a mask across segments; per segment it builds at most that segment's own window mask.
* :class:`FlexCoreAttention` (``flex``): torch FlexAttention with a ``BlockMask`` for documents, causality and the
  window and a ``score_mod`` for the soft-cap, so no ``[s, s]`` score matrix is ever materialised. Compiled on GPUs.
  FlexAttention has no CPU backward: on CPU it serves evaluation and sampling, and training there is refused up
  front (see :func:`liquid_train.models.builder.resolve_attention_backend`).

Both also accept megatron's bshd layout with a dense ``attention_mask`` (True = masked) for callers that pass one.
Which layers use the sliding window comes from the config (:func:`window_for_layer`).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from megatron.core import parallel_state
from megatron.core.transformer.module import MegatronModule
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

ATTENTION_BACKENDS = ("auto", "te", "local", "flex")


def window_for_layer(config, layer_number: int) -> Optional[int]:
    """Sliding window of the (1-based, global) layer, or None for global attention.

    ``config.liquid_sliding_window`` is the window; ``config.liquid_window_layers`` selects the layers: a period
    ``p`` means layers with ``(layer_number - 1) % p == 0`` (Gemma 2: every other layer starting with the first,
    HF's ``layer_idx % 2 == 0``); a tuple lists 0-based layer indices explicitly."""
    window = getattr(config, "liquid_sliding_window", None)
    if not window:
        return None
    layers = getattr(config, "liquid_window_layers", 2)
    index = layer_number - 1
    if isinstance(layers, (tuple, list)):
        return window if index in layers else None
    return window if index % int(layers) == 0 else None


def segment_bounds(packed_seq_params) -> torch.Tensor:
    """The cumulative segment lengths attention runs on (the padded ones when given, as megatron's RoPE does)."""
    p = packed_seq_params
    return p.cu_seqlens_q_padded if p.cu_seqlens_q_padded is not None else p.cu_seqlens_q


class _CoreAttentionBase(MegatronModule):
    """What both backends read from the config: local head counts, softmax scale, soft-cap, window, dropout."""

    def __init__(self, config, layer_number: int, attn_mask_type=None, attention_type: str = "self",
                 attention_dropout: Optional[float] = None, softmax_scale: Optional[float] = None,
                 cp_comm_type=None, pg_collection=None, **unused):
        super().__init__(config=config)
        tp = parallel_state.get_tensor_model_parallel_world_size()
        self.layer_number = max(1, layer_number)
        self.heads = config.num_attention_heads // tp
        self.groups = config.num_query_groups // tp
        self.scale = softmax_scale if softmax_scale is not None else (
            config.softmax_scale if config.softmax_scale is not None else config.kv_channels ** -0.5)
        self.softcap = getattr(config, "liquid_attn_logit_softcap", None)
        self.window = window_for_layer(config, self.layer_number)
        self.dropout_p = config.attention_dropout if attention_dropout is None else attention_dropout


class LocalCoreAttention(_CoreAttentionBase):
    """Exact attention, one packed segment at a time (see the module docstring)."""

    def _attend(self, q, k, v, allowed: Optional[torch.Tensor]) -> torch.Tensor:
        """q [b, np, sq, d], k/v [b, ng, sk, d]; ``allowed`` broadcastable to [b, np, sq, sk] (None = causal).
        Grouped-query attention without copying K/V per query head (SDPA's ``enable_gqa``; a broadcast group
        dimension on the soft-capping path)."""
        dropout = self.dropout_p if self.training else 0.0
        gqa = self.heads != self.groups
        if self.softcap is None:
            if allowed is None:
                return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale, dropout_p=dropout,
                                                      enable_gqa=gqa)
            return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=self.scale, dropout_p=dropout,
                                                  enable_gqa=gqa)
        b, heads, sq, d = q.shape
        groups, sk = k.size(1), k.size(2)
        qg = q.float().reshape(b, groups, heads // groups, sq, d)  # [b, g, r, sq, d]
        scores = torch.matmul(qg, k.float().unsqueeze(2).transpose(-1, -2)) * self.scale  # [b, g, r, sq, sk]
        scores = torch.tanh(scores / self.softcap) * self.softcap
        if allowed is None:
            allowed = _causal_window(sq, sk, None, scores.device)
        elif allowed.dim() == 4:
            allowed = allowed.unsqueeze(2)  # broadcast over the heads of a group as over the heads
        scores = scores.masked_fill(~allowed, float("-inf"))
        probs = torch.softmax(scores, dim=-1).to(v.dtype)
        if dropout:
            probs = F.dropout(probs, dropout)
        return torch.matmul(probs, v.unsqueeze(2)).reshape(b, heads, sq, d)

    def forward(self, query, key, value, attention_mask, attn_mask_type=None, attention_bias=None,
                packed_seq_params=None):
        if packed_seq_params is not None and packed_seq_params.qkv_format == "thd":
            return self._forward_thd(query, key, value, segment_bounds(packed_seq_params))
        sq, b, np_, hn = query.shape
        sk = key.size(0)
        q, k, v = (x.permute(1, 2, 0, 3) for x in (query, key, value))  # [b, heads, s, d]
        allowed = None
        if attention_mask is not None or self.window is not None or self.softcap is not None or sq != sk:
            allowed = _causal_window(sq, sk, self.window, q.device)[None, None]
            if attention_mask is not None:
                allowed = allowed & ~attention_mask.to(torch.bool)
                allowed = allowed | _diagonal(sq, sk, q.device)  # every row may see itself: none is empty
        ctx = self._attend(q, k, v, allowed)
        return ctx.permute(2, 0, 1, 3).reshape(sq, b, np_ * hn)

    def _forward_thd(self, query, key, value, cu_seqlens):
        t, np_, hn = query.shape
        bounds = cu_seqlens.tolist()  # reference path: segment lengths on the host
        out = query.new_empty(t, np_, hn)
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            if hi <= lo:
                continue
            q, k, v = (x[lo:hi].permute(1, 0, 2).unsqueeze(0) for x in (query, key, value))  # [1, heads, n, d]
            n = hi - lo
            allowed = None if self.window is None or n <= self.window else \
                _causal_window(n, n, self.window, query.device)[None, None]
            out[lo:hi] = self._attend(q, k, v, allowed)[0].permute(1, 0, 2)
        return out.reshape(t, np_ * hn)


def _causal_window(sq: int, sk: int, window: Optional[int], device) -> torch.Tensor:
    """[sq, sk] bool, True = may attend: causal (queries are the last sq keys), within ``window`` when given."""
    pos_q = torch.arange(sk - sq, sk, device=device)[:, None]
    pos_k = torch.arange(sk, device=device)[None, :]
    allowed = pos_k <= pos_q
    if window is not None:
        allowed = allowed & (pos_q - pos_k < window)
    return allowed


def _diagonal(sq: int, sk: int, device) -> torch.Tensor:
    """[sq, sk] bool, True where a query meets its own key (queries are the last sq keys)."""
    return torch.arange(sk - sq, sk, device=device)[:, None] == torch.arange(sk, device=device)[None, :]


def document_ids(cu_seqlens: torch.Tensor, total: int) -> torch.Tensor:
    """[total] int32 segment index of every THD position, computed on the device (no host sync)."""
    marks = torch.zeros(total + 1, dtype=torch.int32, device=cu_seqlens.device)
    inner = cu_seqlens[1:-1].long().clamp(0, total)
    marks.index_add_(0, inner, torch.ones_like(inner, dtype=torch.int32))
    return torch.cumsum(marks[:total], 0, dtype=torch.int32)


_COMPILED_FLEX = None


def _flex_kernel():
    """FlexAttention, compiled on GPUs (the eager form materialises scores; it is the CPU form, forward only)."""
    global _COMPILED_FLEX
    if not torch.cuda.is_available():
        return flex_attention
    if _COMPILED_FLEX is None:
        _COMPILED_FLEX = torch.compile(flex_attention, dynamic=False)
    return _COMPILED_FLEX


class FlexCoreAttention(_CoreAttentionBase):
    """FlexAttention over packed segments: block mask for documents / causality / window, score_mod soft-cap."""

    def __init__(self, config, layer_number: int, *args, **kwargs):
        super().__init__(config, layer_number, *args, **kwargs)
        if self.dropout_p:
            raise ValueError("attention_backend=flex has no attention dropout; set attention_dropout=0 or use "
                             "attention_backend=local")

    def _block_mask(self, doc: Optional[torch.Tensor], total: int, device, cache_on=None):
        window = self.window
        key = ("liquid_block_mask", window, total)
        cache = getattr(cache_on, "_liquid_cache", None) if cache_on is not None else None
        if cache is not None and key in cache:
            return cache[key]

        def mask_mod(b, h, q_idx, kv_idx):
            keep = q_idx >= kv_idx
            if doc is not None:
                keep = keep & (doc[q_idx] == doc[kv_idx])
            if window is not None:
                keep = keep & (q_idx - kv_idx < window)
            return keep

        mask = create_block_mask(mask_mod, 1, None, total, total, device=device)
        if cache_on is not None:
            if cache is None:
                cache = {}
                setattr(cache_on, "_liquid_cache", cache)
            cache[key] = mask
        return mask

    def _score_mod(self):
        cap = self.softcap
        if cap is None:
            return None

        def softcap(score, b, h, q_idx, kv_idx):
            return torch.tanh(score / cap) * cap

        return softcap

    def forward(self, query, key, value, attention_mask, attn_mask_type=None, attention_bias=None,
                packed_seq_params=None):
        if packed_seq_params is not None and packed_seq_params.qkv_format == "thd":
            t, np_, hn = query.shape
            doc = document_ids(segment_bounds(packed_seq_params), t)
            mask = self._block_mask(doc, t, query.device, cache_on=packed_seq_params)
            q, k, v = (x.permute(1, 0, 2).unsqueeze(0) for x in (query, key, value))  # [1, heads, t, d]
            out = _flex_kernel()(q, k, v, score_mod=self._score_mod(), block_mask=mask, scale=self.scale,
                                 enable_gqa=self.heads != self.groups)
            return out[0].permute(1, 0, 2).reshape(t, np_ * hn)
        if attention_mask is not None:
            raise ValueError("attention_backend=flex takes packed sequences (PackedSeqParams) or plain causal "
                             "batches, not a dense attention_mask; use attention_backend=local for masked batches")
        sq, b, np_, hn = query.shape
        mask = self._block_mask(None, sq, query.device)
        q, k, v = (x.permute(1, 2, 0, 3) for x in (query, key, value))
        out = _flex_kernel()(q, k, v, score_mod=self._score_mod(), block_mask=mask, scale=self.scale,
                             enable_gqa=self.heads != self.groups)
        return out.permute(2, 0, 1, 3).reshape(sq, b, np_ * hn)
