"""Three quickstart model sizes, registered into the model-family registry of the running process.

The registry ships one ``tiny`` shape per family; a scaling question needs three. These are the same family math
(``qwen2.5`` tiny: 512-row base vocabulary, bos/eos/pad 497) at growing width and depth. ``train_entry`` registers
them before handing over to the real ``liquid-train`` CLI, so the trainer itself is unchanged.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Dict

from liquid_train.models.families import FAMILIES

QUICKSTART_SIZES: Dict[str, dict] = {
    "qs-s": dict(num_layers=2, hidden_size=48, ffn_hidden_size=96, num_attention_heads=4, num_query_groups=2,
                 head_dim=12),
    "qs-m": dict(num_layers=3, hidden_size=96, ffn_hidden_size=192, num_attention_heads=4, num_query_groups=2,
                 head_dim=24),
    "qs-l": dict(num_layers=4, hidden_size=160, ffn_hidden_size=320, num_attention_heads=4, num_query_groups=2,
                 head_dim=40),
}
FAMILY = "qwen2.5"


def register_quickstart_sizes(family: str = FAMILY) -> None:
    tiny = FAMILIES[family]["tiny"]
    for name, shape in QUICKSTART_SIZES.items():
        FAMILIES[family][name] = replace(tiny, size=name, **shape)
