"""Tiny Hugging Face checkpoints written from a literal config.json dict, and logit comparisons, for import tests."""
from __future__ import annotations

import json
import os

import torch

from helpers_model import make_tokenizer

FAMILY_OF_MODEL_TYPE = {"qwen2": "qwen2.5", "llama": "llama3.2", "gemma": "gemma", "gemma2": "gemma2"}


def save_hf(cfg: dict, directory: str, seed: int = 0, tokenizer: bool = True):
    """A random tiny HF model of ``cfg`` (norms too, so a wrong mapping cannot hide) saved to ``directory`` with
    the family's tiny tokenizer; ``config.json`` is ``cfg`` verbatim (not transformers' rewrite of it)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    family = FAMILY_OF_MODEL_TYPE[cfg["model_type"]]
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(cfg, f)
    config = AutoConfig.from_pretrained(directory)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager").float().eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(torch.rand(p.shape, generator=gen) - 0.5 if family.startswith("gemma")
                        else 0.5 + torch.rand(p.shape, generator=gen))
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    model.save_pretrained(directory, safe_serialization=True)
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    if tokenizer:
        make_tokenizer(family).save_pretrained(directory)
    return model


def megatron_logits(model, tokens: torch.Tensor) -> torch.Tensor:
    s = tokens.size(1)
    mask = torch.triu(torch.ones(s, s, dtype=torch.bool), 1)[None, None].expand(tokens.size(0), 1, s, s)
    with torch.no_grad():
        return model(tokens, torch.arange(s).expand_as(tokens), mask)


def max_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """Largest |difference| relative to max(1, largest |reference logit|)."""
    return float((ours.double() - ref.double()).abs().max() / max(1.0, float(ref.double().abs().max())))


def imported_logits(ckpt: str, tokens: torch.Tensor, seed: int = 0):
    """(arch, vocab, logits) of a converted checkpoint's megatron model (sets up and tears down parallel state)."""
    from liquid_train.models.builder import build_gpt_model
    from liquid_train.models.hf_conversion import load_model_checkpoint, read_model_sidecar
    from liquid_train.parallel import destroy_parallel, initialize_parallel

    initialize_parallel(1, 1, seed=seed)
    try:
        arch, vocab = read_model_sidecar(ckpt)
        model = build_gpt_model(arch, vocab, "fp32").eval()
        load_model_checkpoint(model, ckpt)
        return arch, vocab, megatron_logits(model, tokens)
    finally:
        destroy_parallel()
