"""The run-config blocks that shape the megatron model besides its architecture: precision and FP8, recompute,
attention backend, kernel fusions, parallel layout. Plain dataclasses (no megatron import), so the run config embeds
them as they are and validation can read them before anything heavy is imported; the model builder
(:func:`liquid_train.models.builder.build`) is the one consumer that turns them into a ``TransformerConfig``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

PRECISIONS = ("fp32", "bf16", "fp16", "fp8")
ATTENTION_BACKENDS = ("auto", "te", "local", "flex")
FUSION_MODES = ("auto", "all", "none")  # not on/off: YAML reads those as booleans
RECOMPUTE_GRANULARITIES = ("none", "selective", "full")
RECOMPUTE_METHODS = ("uniform", "block")
FP8_RECIPES = ("tensorwise", "delayed")  # current (per-tensor) scaling; delayed scaling (amax history)
FP8_FORMATS = ("hybrid", "e4m3")


@dataclass
class FP8Config:
    """Transformer Engine FP8 (``model.precision: fp8``; GPU + TE only)."""

    recipe: str = "tensorwise"
    """``tensorwise`` (current scaling, the default) or ``delayed`` (amax history; cannot keep BF16 end layers)."""
    format: str = "hybrid"
    """``hybrid``: e4m3 forward, e5m2 backward; ``e4m3``: both."""
    amax_history_len: int = 1024
    """Delayed scaling only."""
    amax_compute_algo: str = "max"
    """Delayed scaling only: ``max`` or ``most_recent``."""
    bf16_layers: int = 1
    """Transformer layers kept in BF16 at each end of the stack (the LM head is always BF16)."""


@dataclass
class RecomputeConfig:
    """Activation recomputation (megatron's ``recompute_*`` options)."""

    granularity: str = "none"
    """``none``, ``selective`` (the modules below) or ``full`` (whole layers)."""
    method: str = "uniform"
    """Full recompute: ``uniform`` (checkpoint every chunk of ``num_layers`` layers) or ``block`` (the first
    ``num_layers`` layers of each pipeline stage)."""
    num_layers: int = 1
    """Full recompute: layers per chunk (uniform) or per stage (block)."""
    modules: List[str] = field(default_factory=lambda: ["core_attn"])
    """Selective recompute: megatron's ``recompute_modules`` (core_attn, mlp, layernorm, ...)."""


@dataclass(frozen=True)
class BuildOptions:
    """Everything besides the architecture and vocabulary that goes into the megatron model, resolved."""

    precision: str = "fp32"
    tensor_parallel: Optional[int] = None
    """None: read from megatron's parallel state (which must then be initialised)."""
    pipeline_parallel: Optional[int] = None
    virtual_pipeline_parallel: Optional[int] = None
    sequence_parallel: bool = False
    recompute: RecomputeConfig = field(default_factory=RecomputeConfig)
    fp8: FP8Config = field(default_factory=FP8Config)
    attention_backend: str = "auto"
    fusions: str = "auto"
    init_method_std: float = 0.02
    training: bool = True
    """False for models that only run forward (export, sampling): allows backends without a backward here."""
