"""Kernel fusions of megatron's TransformerConfig: which can run here, and one error when one asked for cannot.

``fusions: auto`` turns on every fusion whose kernel exists on this machine for this model (none on CPU);
``all`` demands all of those that apply to the model and fails, naming the missing kernel, when one cannot run;
``none`` turns them all off. (Not on/off: YAML reads those as booleans.) Fusions that do not apply to a model (a GeGLU model has no fused SwiGLU; our own loss
and core attention make megatron's fused cross-entropy and masked softmax irrelevant) are always off.
"""
from __future__ import annotations

import importlib.util
from typing import Dict, List, Tuple

import torch

from liquid_train.models.options import FUSION_MODES



def _module_available(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _fusion_requirements(activation: str, attention_backend: str) -> List[Tuple[str, str, bool]]:
    """(TransformerConfig flag, what it needs, available) for every fusion that applies to the model."""
    cuda = torch.cuda.is_available()
    te = attention_backend == "te"  # TE's layers carry their own fused rope / wgrad accumulation
    apex_wgrad = _module_available("fused_weight_gradient_mlp_cuda")
    rows = [("bias_dropout_fusion", "a CUDA GPU (torch.jit fused bias-dropout-add)", cuda)]
    if activation == "swiglu":
        rows.append(("bias_activation_fusion", "a CUDA GPU (torch.jit fused SwiGLU)", cuda))
    rows.append(("apply_rope_fusion", "Transformer Engine's fused RoPE (attention_backend=te)", cuda and te))
    rows.append(("gradient_accumulation_fusion",
                 "Transformer Engine layers (attention_backend=te) or NVIDIA apex's fused_weight_gradient_mlp_cuda",
                 cuda and (te or apex_wgrad)))
    return rows


ALL_FLAGS = ("bias_dropout_fusion", "bias_activation_fusion", "apply_rope_fusion", "gradient_accumulation_fusion",
             "masked_softmax_fusion", "persist_layer_norm", "cross_entropy_loss_fusion")


def resolve_fusions(mode: str, activation: str, attention_backend: str) -> Dict[str, bool]:
    """TransformerConfig fusion flags for ``mode``; raises ValueError naming a requested kernel that cannot run."""
    if mode not in FUSION_MODES:
        raise ValueError(f"fusions={mode!r}; choose one of {FUSION_MODES}")
    flags = {flag: False for flag in ALL_FLAGS}
    if mode == "none":
        return flags
    for flag, needs, available in _fusion_requirements(activation, attention_backend):
        if mode == "all" and not available:
            raise ValueError(f"fusions=all: {flag} needs {needs}, which this machine does not have; "
                             f"use fusions=auto (fuse what can run) or fusions=none")
        flags[flag] = available
    return flags
