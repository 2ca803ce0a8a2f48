"""RoPE inverse frequencies exactly as Hugging Face computes them, installed into megatron's rotary embedding.

Why: megatron-core 0.16.1's ``RotaryEmbedding`` takes an integer base and, for Llama-3 scaling, only a factor (its
low/high frequency factors and original context are fixed at 1 / 4 / 8192). A checkpoint with other values would
train a different model from the one it exports. The rotary module keeps its frequencies in ``inv_freq`` and builds
every position's angles from it (``outer(positions, inv_freq)``, also per ``cu_seqlens`` segment of packed THD
sequences), so replacing ``inv_freq`` after the model is built is all it takes; nothing else in megatron changes.

Supported types (``ModelArch.rope_type``): ``default``, ``linear`` (inv_freq / factor) and ``llama3`` (wavelengths
longer than original_context / low_freq_factor divided by the factor, shorter than original_context /
high_freq_factor kept, a linear blend in between). All of them have an attention scale of 1.
"""
from __future__ import annotations

import math

import torch

from liquid_train.models.families import ModelArch


def hf_inv_freq(arch: ModelArch) -> torch.Tensor:
    """float32 ``[head_dim // 2]`` inverse frequencies; the same operations, in the same order, as transformers."""
    dim = arch.head_dim
    exponents = torch.arange(0, dim, 2, dtype=torch.int64, device="cpu").to(dtype=torch.float32) / dim
    inv_freq = 1.0 / (arch.rope_theta ** exponents)
    if arch.rope_type == "default":
        return inv_freq
    factor = arch.rope_scaling_factor
    if arch.rope_type == "linear":
        return inv_freq / factor
    if arch.rope_type != "llama3":
        raise ValueError(f"rope_type {arch.rope_type!r} is not supported (default, linear, llama3)")
    low, high = arch.rope_low_freq_factor, arch.rope_high_freq_factor
    context = arch.rope_original_max_position
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > context / low, inv_freq / factor, inv_freq)
    smooth = (context / wavelen - low) / (high - low)
    blended = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < context / high) * ~(wavelen > context / low)
    return torch.where(medium, blended, scaled)


def install_rope(model, arch: ModelArch) -> None:
    """Give a built GPTModel (any pipeline stage) the exact RoPE of ``arch``; call before its first forward."""
    rotary = getattr(model, "rotary_pos_emb", None)
    if rotary is None:
        return
    if rotary.inv_freq.shape != (arch.head_dim // 2,):
        raise ValueError(f"rotary embedding has {tuple(rotary.inv_freq.shape)} frequencies, head_dim "
                         f"{arch.head_dim} needs {arch.head_dim // 2}")
    rotary.inv_freq = hf_inv_freq(arch).to(rotary.inv_freq.device)
    # RotaryEmbedding.forward is an lru_cache keyed by (module, length, ...): drop embeddings of the old frequencies.
    type(rotary).forward.cache_clear()
