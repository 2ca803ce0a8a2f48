"""The quickstart's three model sizes, as inline ``model.arch`` fields of ordinary run configs.

The registry ships one ``tiny`` shape per family; a scaling question needs three. These are the same family math
(``qwen2.5`` tiny: 512-row base vocabulary, bos/eos/pad 497) at growing width and depth, given to the trainer the
way any user gives a custom shape: ``model.size: tiny`` plus ``model.arch.*`` overrides. Nothing registers them in
the process; the checkpoints record the architecture, so the converter and the samplers read it back from there.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Dict, List

from liquid_train.models.families import ModelArch, get_model_arch

QUICKSTART_SIZES: Dict[str, dict] = {
    "qs-s": dict(num_layers=2, hidden_size=48, ffn_hidden_size=96, num_attention_heads=4, num_query_groups=2,
                 head_dim=12),
    "qs-m": dict(num_layers=3, hidden_size=96, ffn_hidden_size=192, num_attention_heads=4, num_query_groups=2,
                 head_dim=24),
    "qs-l": dict(num_layers=4, hidden_size=160, ffn_hidden_size=320, num_attention_heads=4, num_query_groups=2,
                 head_dim=40),
}
FAMILY = "qwen2.5"
BASE_SIZE = "tiny"


def _shape(size: str) -> dict:
    if size not in QUICKSTART_SIZES:
        raise ValueError(f"quickstart size {size!r}; known: {sorted(QUICKSTART_SIZES)}")
    return QUICKSTART_SIZES[size]


def arch_overrides(size: str) -> List[str]:
    """Config overrides that train quickstart size ``size`` (``qs-s`` / ``qs-m`` / ``qs-l``)."""
    fields = dict(_shape(size), size=size)
    return [f"model.family={FAMILY}", f"model.size={BASE_SIZE}", *(f"model.arch.{k}={v}" for k, v in fields.items())]


def size_arch(size: str) -> ModelArch:
    """The architecture the trainer builds for quickstart size ``size`` (the family's tiny shape, overridden)."""
    return replace(get_model_arch(FAMILY, BASE_SIZE), size=size, **_shape(size))
