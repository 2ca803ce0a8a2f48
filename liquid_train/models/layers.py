"""Small modules plugged into megatron-core's layer spec for what 0.16.1 lacks.

* :class:`LiquidCoreAttention`: core attention for the local (non-TE) path. Unlike megatron's DotProductAttention it
  (a) COMBINES a passed-in block-diagonal mask (packed samples) with the causal and sliding-window masks (megatron's
  sliding window replaces the passed mask), (b) applies Gemma 2's tanh soft-capping of attention logits, (c) accepts
  ``packed_seq_params`` by turning ``cu_seqlens`` into the equivalent block-diagonal mask. A row whose every key is
  masked (pure padding) attends to itself instead of producing NaNs.
* :class:`RowParallelLinearWithPostNorm`: megatron's RowParallelLinear followed by an RMSNorm: Gemma 2's
  post-attention / post-feedforward norms sit exactly there (before the residual add).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from megatron.core import tensor_parallel
from megatron.core.tensor_parallel.layers import RowParallelLinear
from megatron.core.transformer.module import MegatronModule


def block_diagonal_mask_from_cu_seqlens(cu_seqlens: torch.Tensor, total: int) -> torch.Tensor:
    """[1,1,t,t] bool mask, True = masked, from cumulative sequence lengths (padding entries repeated at the end)."""
    seg = torch.zeros(total, dtype=torch.long, device=cu_seqlens.device)
    bounds = cu_seqlens[1:-1]
    bounds = bounds[(bounds > 0) & (bounds < total)]
    seg[bounds.long()] = 1
    seg = torch.cumsum(seg, 0)
    return (seg[:, None] != seg[None, :])[None, None]


class LiquidCoreAttention(MegatronModule):
    def __init__(self, config, layer_number: int, attn_mask_type=None, attention_type: str = "self",
                 attention_dropout: Optional[float] = None, softmax_scale: Optional[float] = None,
                 cp_comm_type=None, pg_collection=None, **unused):
        super().__init__(config=config)
        from megatron.core import parallel_state

        tp = parallel_state.get_tensor_model_parallel_world_size()
        self.layer_number = max(1, layer_number)
        self.heads = config.num_attention_heads // tp
        self.groups = config.num_query_groups // tp
        self.scale = softmax_scale if softmax_scale is not None else (
            config.softmax_scale if config.softmax_scale is not None else config.kv_channels ** -0.5)
        self.softcap = getattr(config, "liquid_attn_logit_softcap", None)
        window = getattr(config, "liquid_sliding_window", None)
        # 0-based layers with the window (ModelArch.window_layers; Gemma 2's default: layer_idx % 2 == 0);
        # megatron's layer_number is 1-based.
        sliding = getattr(config, "liquid_sliding_window_layers", range(0, config.num_layers, 2))
        self.window = window if (window and (self.layer_number - 1) in sliding) else None
        self.dropout_p = config.attention_dropout if attention_dropout is None else attention_dropout

    def forward(self, query, key, value, attention_mask, attn_mask_type=None, attention_bias=None,
                packed_seq_params=None):
        thd = query.dim() == 3
        if thd:  # packed: [t, np, hn] -> [t, 1, np, hn]
            query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
            cu = packed_seq_params.cu_seqlens_q_padded if packed_seq_params.cu_seqlens_q_padded is not None \
                else packed_seq_params.cu_seqlens_q
            attention_mask = block_diagonal_mask_from_cu_seqlens(cu, query.size(0))
        sq, b, np_, hn = query.shape
        sk = key.size(0)
        q = query.permute(1, 2, 0, 3)  # [b, np, sq, hn]
        k = key.permute(1, 2, 0, 3)
        v = value.permute(1, 2, 0, 3)
        if self.heads != self.groups:
            rep = self.heads // self.groups
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
        pos_q = torch.arange(sk - sq, sk, device=q.device)[:, None]
        pos_k = torch.arange(sk, device=q.device)[None, :]
        allowed = pos_k <= pos_q
        if self.window is not None:
            allowed = allowed & (pos_q - pos_k < self.window)
        allowed = allowed[None, None]
        if attention_mask is not None:
            allowed = allowed & ~attention_mask.to(torch.bool)
        allowed = allowed | (pos_k == pos_q)[None, None]  # never a fully masked row
        if self.softcap is None:
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=self.scale,
                                                 dropout_p=self.dropout_p if self.training else 0.0)
        else:
            scores = torch.matmul(q.float(), k.float().transpose(-1, -2)) * self.scale
            scores = torch.tanh(scores / self.softcap) * self.softcap
            scores = scores.masked_fill(~allowed, float("-inf"))
            probs = torch.softmax(scores, dim=-1).to(v.dtype)
            if self.training and self.dropout_p > 0:
                with tensor_parallel.get_cuda_rng_tracker().fork():
                    probs = F.dropout(probs, self.dropout_p)
            ctx = torch.matmul(probs, v)
        ctx = ctx.permute(2, 0, 1, 3).reshape(sq, b, np_ * hn)
        return ctx.squeeze(1) if thd else ctx


class RowParallelLinearWithPostNorm(RowParallelLinear):
    """RowParallelLinear whose (all-reduced) output goes through an RMSNorm: Gemma 2's post-norms."""

    def __init__(self, input_size, output_size, *, config, **kwargs):
        super().__init__(input_size, output_size, config=config, **kwargs)
        self.post_norm = torch.nn.RMSNorm(output_size, eps=config.layernorm_epsilon, dtype=config.params_dtype)
        setattr(self.post_norm.weight, "sequence_parallel", config.sequence_parallel)

    def forward(self, input_, *args, **kwargs):
        output, bias = super().forward(input_, *args, **kwargs)
        return self.post_norm(output), bias
