"""Core attention backends for the project's layer specs, all consuming megatron's own ``PackedSeqParams``.

A packed micro-batch reaches attention in megatron's THD layout: ``query`` ``[t, heads, head_dim]`` with
``PackedSeqParams(qkv_format="thd", cu_seqlens_q=...)`` marking where each sample (attention segment) starts. That
is the contract Transformer Engine's fused attention implements on GPUs (``attention_backend: te``, megatron's TE
layer spec, nothing of ours); the two backends here implement the same contract for what TE cannot do (Gemma 2's
logit soft-capping) and for machines without TE:

* :class:`LocalCoreAttention` (``local``): exact attention (causal, optional sliding window, optional tanh
  soft-capping in fp32), the CPU backend and the reference the others are tested against (itself tested against
  each segment attended alone). Segments of up to 128 positions are gathered into chunks (one packed row each,
  when rows of equal length are laid end to end) and attended in one call under a mask that keeps every segment
  to itself; longer segments are attended one call each (:func:`thd_layout`). One call per short segment made a
  small model's CPU step 1.2x slower (``benchmarks/packed_attention.py``). Masks and scores are at most
  ``[chunks, size, size]`` or one segment's square, never ``[t, t]``.
* :class:`FlexCoreAttention` (``flex``): torch FlexAttention with a ``BlockMask`` for documents, causality and the
  window and a ``score_mod`` for the soft-cap, so no ``[s, s]`` score matrix is ever materialised. Compiled on GPUs.
  FlexAttention has no CPU backward: on CPU it serves evaluation and sampling, and training there is refused up
  front (see :func:`liquid_train.models.builder.resolve_attention_backend`).

Both also accept megatron's bshd layout with a dense ``attention_mask`` (True = masked) for callers that pass one.
Which layers use the sliding window comes from the config (:func:`window_for_layer`).
"""
from __future__ import annotations

from dataclasses import dataclass
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
            return self._forward_thd(query, key, value, packed_seq_params)
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

    def _forward_thd(self, query, key, value, packed_seq_params):
        """Short segments in one kernel call, long ones one call each (:func:`thd_layout`): the short ones are
        gathered into ``[chunks, heads, size, d]`` and attended under a mask that keeps each segment causal and to
        itself; a long one runs causal on its own, where a masked square would cost more than its call does."""
        t, np_, hn = query.shape
        layout = thd_layout(packed_seq_params, t, self.window, query.device)
        parts = []
        if layout.chunks:
            q, k, v = (x.index_select(0, layout.gather).view(layout.chunks, layout.size, x.size(1), hn)
                       .transpose(1, 2) for x in (query, key, value))  # [chunks, heads, size, d]
            parts.append(self._attend(q, k, v, layout.allowed).transpose(1, 2).reshape(-1, np_, hn))
        for lo, hi in layout.alone:
            q, k, v = (x[lo:hi].transpose(0, 1).unsqueeze(0) for x in (query, key, value))  # [1, heads, n, d]
            n = hi - lo
            allowed = None if self.window is None or n <= self.window else \
                _causal_window(n, n, self.window, query.device)[None, None]
            parts.append(self._attend(q, k, v, allowed)[0].transpose(0, 1))
        ctx = parts[0] if len(parts) == 1 else torch.cat(parts)
        if layout.slot is not None:
            ctx = ctx.index_select(0, layout.slot)
        return ctx.reshape(t, np_ * hn)


CHUNKED_SEGMENT_MAX = 128
"""Segments up to this length are attended together in chunks, longer ones one call each. Measured with
``benchmarks/packed_attention.py`` (1 thread, fp32): 27 segments of 20-70 positions (the quickstart's rows of 128)
took 11.5 ms forward + backward one call each and 5.4 ms chunked; segments of 50-400 positions took 125 ms one call
each and 197 ms chunked into squares of 512, where the mask costs the causal kernel's skipped half and padding."""


@dataclass(frozen=True)
class THDLayout:
    """How the local backend attends a packed THD stream of ``t`` positions.

    ``gather`` [chunks * size]: the stream position each chunk slot reads (empty slots read position 0, masked);
    ``allowed`` [chunks, 1, size, size]: True where a query may attend (same segment, causal, within the window;
    an empty slot sees only itself, so no softmax row is empty); ``alone``: (start, end) of each segment attended on
    its own; ``slot`` [t]: where each position's output sits in the chunk slots followed by the lone segments
    (None when that is the stream order already)."""
    chunks: int
    size: int
    gather: Optional[torch.Tensor]
    allowed: Optional[torch.Tensor]
    alone: tuple
    slot: Optional[torch.Tensor]


def thd_layout(packed_seq_params, total: int, window: Optional[int], device) -> THDLayout:
    """The layout of a packed micro-batch, built once on the host and cached on its ``PackedSeqParams`` (every
    layer of the micro-batch reuses it). Segments of at most :data:`CHUNKED_SEGMENT_MAX` positions keep their
    order and fill chunks of ``size`` = the longest of them rounded up to a power of two, so rows of equal length
    laid end to end become one chunk each; longer segments are attended alone."""
    key = ("liquid_thd_layout", window, total)
    cache = micro_batch_cache(packed_seq_params)
    if key in cache:
        return cache[key]
    bounds = [min(max(int(b), 0), total) for b in segment_bounds(packed_seq_params).tolist()]
    if bounds and bounds[-1] < total:  # positions past the last boundary: one more segment
        bounds.append(total)
    segments = [(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo]
    short = [(lo, hi) for lo, hi in segments if hi - lo <= CHUNKED_SEGMENT_MAX]
    alone = tuple((lo, hi) for lo, hi in segments if hi - lo > CHUNKED_SEGMENT_MAX)
    size = 1 << (max(hi - lo for lo, hi in short) - 1).bit_length() if short else 0
    gather, doc, offset = [], [], []
    fill = size
    for index, (lo, hi) in enumerate(short):
        if fill + hi - lo > size:  # start a new chunk, padding the last one
            gather.extend([-1] * (size - fill) if gather else [])
            fill = 0
        gather.extend(range(lo, hi))
        doc.extend([index] * (hi - lo))
        offset.extend(range(hi - lo))
        fill += hi - lo
    if short:
        gather.extend([-1] * (size - fill))
    chunks = len(gather) // size if size else 0
    slot = [0] * total
    for i, position in enumerate(gather):
        if position >= 0:
            slot[position] = i
    base = len(gather)
    for lo, hi in alone:
        slot[lo:hi] = range(base, base + hi - lo)
        base += hi - lo
    gather_t = allowed = None
    if chunks:
        gather_t = torch.tensor(gather, dtype=torch.long)
        empty = gather_t < 0
        doc_t = torch.full((chunks * size,), -1, dtype=torch.long)
        doc_t[~empty] = torch.tensor(doc, dtype=torch.long)
        pos_t = torch.zeros(chunks * size, dtype=torch.long)
        pos_t[~empty] = torch.tensor(offset, dtype=torch.long)
        doc_t, pos_t = doc_t.view(chunks, size), pos_t.view(chunks, size)
        allowed = (doc_t[:, :, None] == doc_t[:, None, :]) & (doc_t[:, :, None] >= 0) & \
            (pos_t[:, None, :] <= pos_t[:, :, None])
        if window is not None:
            allowed = allowed & (pos_t[:, :, None] - pos_t[:, None, :] < window)
        allowed = allowed | (empty.view(chunks, size)[:, :, None] & torch.eye(size, dtype=torch.bool)[None])
        gather_t, allowed = gather_t.clamp(min=0).to(device), allowed[:, None].to(device)
    in_order = base == total and slot == list(range(total))  # no empty slots, stream order
    layout = THDLayout(chunks, size, gather_t, allowed, alone,
                       None if in_order else torch.tensor(slot, dtype=torch.long, device=device))
    cache[key] = layout
    return layout


def micro_batch_cache(packed_seq_params) -> dict:
    """A dict kept on a micro-batch's ``PackedSeqParams``: what every layer derives from the segment boundaries
    (the local layout, the flex block mask) is built by the first layer and reused by the rest."""
    cache = getattr(packed_seq_params, "_liquid_cache", None)
    if cache is None:
        cache = {}
        setattr(packed_seq_params, "_liquid_cache", cache)
    return cache


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
        cache = micro_batch_cache(cache_on) if cache_on is not None else {}
        if key in cache:
            return cache[key]

        def mask_mod(b, h, q_idx, kv_idx):
            keep = q_idx >= kv_idx
            if doc is not None:
                keep = keep & (doc[q_idx] == doc[kv_idx])
            if window is not None:
                keep = keep & (q_idx - kv_idx < window)
            return keep

        mask = create_block_mask(mask_mod, 1, None, total, total, device=device)
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
