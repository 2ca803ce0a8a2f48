"""Training FLOPs and MFU: ONE formula used everywhere (metrics, benchmarks, scaling-law fits).

Why one formula: scaling-law fits compare runs of different sizes by training compute, so every run must count
FLOPs the same way. Per trained token (forward pass, multiply-add = 2 FLOPs), over L layers::

    qkv        2 * h * (n_q + 2 * n_kv) * d
    attn_out   2 * (n_q * d) * h
    scores+AV  2 * 2 * n_q * d * s / 2        (causal: half the s x s score matrix; packing not credited)
    mlp        2 * h * f * (3 if gated else 2)
    output     2 * h * V_padded               (once, not per layer; the input embedding is a lookup: 0 FLOPs)

training FLOPs per token = 3 x forward (backward = 2 x forward); no credit for activation recomputation.
MFU = achieved FLOPs/s per device / peak dense FLOPs/s per device (bf16 peak; FP8 peak when FP8 is on).
"""
from __future__ import annotations

from typing import Optional

# Dense peak TFLOP/s per device (no sparsity), by substring of torch.cuda.get_device_name().
_PEAK_TFLOPS = {
    "H200": {"bf16": 989.0, "fp8": 1979.0},
    "H100": {"bf16": 989.0, "fp8": 1979.0},
    "A100": {"bf16": 312.0, "fp8": 312.0},
    "L40S": {"bf16": 362.0, "fp8": 733.0},
}


def forward_flops_per_token(num_layers: int, hidden_size: int, num_attention_heads: int, num_query_groups: int,
                            kv_channels: int, ffn_hidden_size: int, gated_linear_unit: bool, seq_length: int,
                            padded_vocab_size: int) -> float:
    h, d, L = hidden_size, kv_channels, num_layers
    nq, nkv = num_attention_heads, num_query_groups
    qkv = 2 * h * (nq + 2 * nkv) * d
    attn_out = 2 * nq * d * h
    scores_av = 2 * 2 * nq * d * seq_length / 2
    mlp = 2 * h * ffn_hidden_size * (3 if gated_linear_unit else 2)
    return L * (qkv + attn_out + scores_av + mlp) + 2 * h * padded_vocab_size


def training_flops_per_token(transformer_config, seq_length: int, padded_vocab_size: int) -> float:
    """From a megatron ``TransformerConfig`` (the model's own numbers, whatever the family)."""
    c = transformer_config
    kv = c.kv_channels or c.hidden_size // c.num_attention_heads
    return 3.0 * forward_flops_per_token(
        num_layers=c.num_layers, hidden_size=c.hidden_size, num_attention_heads=c.num_attention_heads,
        num_query_groups=c.num_query_groups or c.num_attention_heads, kv_channels=kv,
        ffn_hidden_size=c.ffn_hidden_size, gated_linear_unit=bool(c.gated_linear_unit), seq_length=seq_length,
        padded_vocab_size=padded_vocab_size)


def peak_tflops_per_device(precision: str, configured: Optional[float] = None) -> Optional[float]:
    """Configured value, else the dense peak of a known GPU; None on CPU (MFU is then reported as null)."""
    if configured:
        return float(configured)
    import torch

    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    for key, peaks in _PEAK_TFLOPS.items():
        if key in name:
            return peaks["fp8" if precision == "fp8" else "bf16"]
    return None


def non_embedding_params(transformer_config) -> int:
    """Parameters of the transformer layers and final norm (embedding and output layer excluded)."""
    c = transformer_config
    h, L = c.hidden_size, c.num_layers
    kv = c.kv_channels or h // c.num_attention_heads
    nq, nkv = c.num_attention_heads, c.num_query_groups or c.num_attention_heads
    attn = h * (nq + 2 * nkv) * kv + nq * kv * h
    if getattr(c, "add_qkv_bias", False):
        attn += (nq + 2 * nkv) * kv
    mlp = h * c.ffn_hidden_size * (3 if c.gated_linear_unit else 2)
    norms = 2 * h
    return int(L * (attn + mlp + norms) + h)
