"""The one home of the model's numbers: parameters, FLOPs per token, activation / state memory, GPU peaks.

The trainer's MFU and ``run_info.json``, the planner (``liquid_train.planning``), the scaling-law fits, the GPU suite
and the docs all read these functions, so a 7B run, its plan and its scaling point count the same way.

* **Parameters** (:func:`count_params`) from a :class:`~liquid_train.models.families.ModelArch`: exact, equal to the
  released checkpoints (tied output counted once) and to ``sum(p.numel())`` of the model the build path constructs
  (``tests/test_accounting.py``).
* **FLOPs per token** (:func:`training_flops_per_token`), Megatron-LM / torchtitan convention, so MFU is comparable
  with their published figures: ``6 x (matmul parameters of the layers + output layer h*V)`` plus attention scores
  and values ``12 * L * s * n_q * d`` (forward + backward, the full ``s x s`` product: no causal discount, no credit
  for packing). Embedding lookups and norms count 0; recomputation is not credited (hardware FLOPs, which count it,
  are separate).
* **Memory** per GPU: weights / gradients / Adam state by precision and distributed optimizer; activations per layer
  by Korthikanti et al. 2022 term by term (GQA, gated MLP, no dropout), with the ``s^2`` attention term only where the
  attention backend stores scores (the exact soft-capping path does; TE / flash / flex do not).
* **GPU peaks**: dense BF16 / FP8 TFLOP/s and memory of known GPUs (``anchors.md``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

import torch

GiB = 1024 ** 3

GPU_SPECS: Dict[str, Dict[str, float]] = {
    # memory in bytes (what nvidia-smi reports as total), dense (no sparsity) peaks in FLOP/s
    "h100-80gb": {"memory": 79.6 * GiB, "bf16_peak": 989e12, "fp8_peak": 1979e12, "match": "H100"},
    "h200-141gb": {"memory": 139.8 * GiB, "bf16_peak": 989e12, "fp8_peak": 1979e12, "match": "H200"},
    "a100-80gb": {"memory": 79.2 * GiB, "bf16_peak": 312e12, "fp8_peak": 312e12, "match": "A100"},
    "l40s-48gb": {"memory": 44.5 * GiB, "bf16_peak": 362e12, "fp8_peak": 733e12, "match": "L40S"},
}


def gpu_key(device_name: str) -> Optional[str]:
    """The ``GPU_SPECS`` key of a ``torch.cuda.get_device_name()`` string, or None for an unknown GPU."""
    for key, spec in GPU_SPECS.items():
        if spec["match"] in device_name:
            return key
    return None


def peak_flops(gpu: str, precision: str) -> float:
    """Dense peak FLOP/s of a ``GPU_SPECS`` key at ``precision`` (fp8 peak for fp8, bf16 peak otherwise)."""
    spec = GPU_SPECS[gpu]
    return spec["fp8_peak"] if precision == "fp8" else spec["bf16_peak"]


def device_peak_tflops(precision: str, configured: Optional[float] = None) -> Optional[float]:
    """Configured TFLOP/s, else the dense peak of this machine's GPU; None on CPU or an unknown GPU (MFU null)."""
    if configured:
        return float(configured)

    if not torch.cuda.is_available():
        return None
    key = gpu_key(torch.cuda.get_device_name())
    return peak_flops(key, precision) / 1e12 if key else None


@dataclass
class ParamCounts:
    embedding: int
    output: int  # 0 when tied
    per_layer: int
    per_layer_matmul: int  # the part of per_layer that is matrix multiplies (biases and norms excluded)
    final_norm: int
    num_layers: int

    @property
    def non_embedding(self) -> int:
        return self.per_layer * self.num_layers + self.final_norm

    @property
    def total(self) -> int:
        return self.embedding + self.output + self.non_embedding


def count_params(arch, vocab_rows: Optional[int] = None) -> ParamCounts:
    """Exact parameter count of the decoder (HF convention: a tied output is counted once)."""
    h, L, f = arch.hidden_size, arch.num_layers, arch.ffn_hidden_size
    d = arch.head_dim or h // arch.num_attention_heads
    q, kv = arch.num_attention_heads * d, arch.num_query_groups * d
    matmul = h * q + 2 * h * kv + q * h + (3 if arch.activation in ("swiglu", "geglu") else 2) * h * f
    bias = q + 2 * kv if arch.qkv_bias else 0
    norms = (4 if arch.post_norms else 2) * h
    rows = vocab_rows if vocab_rows is not None else arch.vocab_size
    emb = rows * h
    return ParamCounts(embedding=emb, output=0 if arch.tie_embeddings else emb, per_layer=matmul + bias + norms,
                       per_layer_matmul=matmul, final_norm=h, num_layers=L)


def flops_per_token(arch, seq_length: int, vocab_rows: int, full_recompute: bool = False) -> Dict[str, float]:
    """Training FLOPs per token: ``model`` (for MFU), ``hardware`` (with full recompute's extra forward), and the
    ``dense`` / ``attention`` parts."""
    pc = count_params(arch, vocab_rows)
    d = arch.head_dim or arch.hidden_size // arch.num_attention_heads
    dense = 6.0 * (pc.num_layers * pc.per_layer_matmul + vocab_rows * arch.hidden_size)
    attention = 12.0 * arch.num_layers * seq_length * arch.num_attention_heads * d
    model = dense + attention
    return {"model": model, "hardware": model * (4 / 3 if full_recompute else 1.0), "dense": dense,
            "attention": attention}


def training_flops_per_token(arch, seq_length: int, vocab_rows: int) -> float:
    """Model FLOPs per trained token: the number MFU and the scaling fits use."""
    return flops_per_token(arch, seq_length, vocab_rows)["model"]


def state_bytes_per_param(precision: str, distributed_optimizer: bool, data_parallel: int) -> Dict[str, float]:
    """Weights, gradients and Adam state per parameter as megatron keeps them: fp32 gradient buffers always
    (``grad_reduce_in_fp32``); bf16/fp16/fp8 runs hold fp32 master weights in the optimizer, fp32 runs do not;
    the distributed optimizer shards the optimizer state over data-parallel ranks."""
    low = precision in ("bf16", "fp16", "fp8")
    optimizer = (12.0 if low else 8.0) / (data_parallel if distributed_optimizer else 1)
    return {"weights": 2.0 if low else 4.0, "grads": 4.0, "optimizer": optimizer}


@dataclass(frozen=True)
class Kernels:
    """What the build path's kernels keep for backward beyond the fused baseline of Korthikanti et al.'s count
    (:func:`kernels_of` reads them off a built model's config)."""

    fused_norm: bool = True
    """TE's RMSNorm keeps its input and a per-row statistic; torch's composite one also keeps the normalised input."""
    fused_glu: bool = True
    """megatron's fused SwiGLU keeps fc1's output; unfused, ``act(x1)`` and ``x2 + offset`` are kept as well."""
    scores_stored: bool = False
    """The ``s x s`` scores are kept, twice (the exact soft-capping path keeps the capped scores and the softmax);
    flash-style kernels keep a per-row statistic."""
    local_attention: bool = False
    """The local THD path keeps the fused QKV output whole (V is a view of it, Q and K are rotated copies) and each
    segment's output apart from the concatenated context."""


def kernels_of(config) -> Kernels:
    """The :class:`Kernels` of a megatron TransformerConfig built by ``liquid_train.models.builder``."""
    backend = getattr(config, "liquid_attention_backend", "local")
    return Kernels(fused_norm=backend == "te", fused_glu=bool(config.bias_activation_fusion),
                   scores_stored=backend == "local" and getattr(config, "liquid_attn_logit_softcap", None) is not None,
                   local_attention=backend == "local")


def activation_bytes_per_layer(s: int, b: int, h: int, a: int, *, head_dim: Optional[int] = None,
                               kv_heads: Optional[int] = None, ffn: Optional[int] = None, gated: bool = False,
                               dropout: bool = False, tp: int = 1, sequence_parallel: bool = True,
                               recompute: str = "none", bytes_per_value: int = 2, post_norms: bool = False,
                               kernels: Kernels = Kernels()) -> float:
    """Korthikanti et al. 2022, term by term (``bytes_per_value`` per activation, 1-byte dropout masks), plus what
    the kernels of ``kernels`` keep beyond their baseline.

    With ``kv_heads=a``, ``ffn=4h``, ``gated=False``, ``dropout=True``, ``tp=1``, bf16 and
    ``Kernels(scores_stored=True)`` this is exactly ``s*b*h*(34 + 5*a*s/h)``.
    """
    d = head_dim or h // a
    g = kv_heads or a
    f = ffn or 4 * h
    q_w, kv_w = a * d, g * d
    sbh = s * b * h
    v = bytes_per_value
    norms = 4 if post_norms else 2
    # In the sequence-parallel region (replicated across TP ranks without sequence parallelism): the inputs of QKV
    # and fc1 (the pre-norms' outputs), every norm's input (and, unfused, its normalised input), dropout masks.
    seq_region = v * sbh * (2 + norms * (1 if kernels.fused_norm else 2)) + (2 * sbh if dropout else 0)
    # Split over heads / ffn columns: Q, K, V for attention, the context (output projection's input), ...
    head_region = v * s * b * (2 * q_w + 2 * kv_w + (2 * q_w + kv_w if kernels.local_attention else 0))
    # ... fc1's output(s), kept for the activation's backward, the activation's output (fc2's input).
    glu = 2 * f if gated else f
    head_region += v * s * b * (glu + f + (0 if kernels.fused_glu or not gated else 2 * f))
    # the softmax (+ dropout mask and output); the soft-capping path keeps its capped scores too
    attn_quadratic = ((v + 3) if dropout else v) * a * s * s * b
    if kernels.scores_stored and kernels.local_attention:
        attn_quadratic += v * a * s * s * b
    if recompute == "full":
        return v * sbh / (tp if sequence_parallel else 1)
    quad = attn_quadratic if kernels.scores_stored and recompute != "selective" else 0
    return (head_region + quad) / tp + seq_region / (tp if sequence_parallel else 1)


def logits_bytes(s: int, b: int, padded_vocab: int, tp: int, bytes_per_value: int = 2,
                 softcapped: bool = False) -> float:
    """The last stage's logits (kept for backward by the loss, which recomputes its softmax from them) and their
    gradient; a final soft-cap keeps one more copy (its tanh output)."""
    return (2.0 + (1.0 if softcapped else 0.0)) * s * b * padded_vocab / tp * bytes_per_value
