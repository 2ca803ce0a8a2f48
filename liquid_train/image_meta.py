"""What a model's image side is: the code grid it was trained on, the resolution, which VQ weights made the codes,
and the prompt templates. Recorded from the run's data, carried by every checkpoint and by the HF export.

Why: a sampler that guesses these draws the wrong number of codes (a model trained on 8x8 grids asked for 32x32
at 512 px), decodes with other VQ weights than the data was encoded with, or prompts with an instruction the model
never saw. The chain is: ``data_pipeline encode`` records the VQ (name + sha256 of its weights) and the resolution
in ``encode_settings.json``; ``build pairs`` copies them, with the grid and the codebook size, into
``<pairs>.meta.json``; the trainer stores :func:`from_data_config` in each checkpoint's ``liquid_model.json``
(key ``image``, plus the data tokenizer under ``tokenizer_source``); the export writes :func:`export_record` to
``liquid_image_tokens.json``; ``tools/sample.py`` reads it back (:func:`read_export_record`).
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Tuple

from liquid_train.data.config import I2T_PROMPT, T2I_INSTRUCTIONS

EXPORT_FILE = "liquid_image_tokens.json"
SIDECAR_KEY = "image"
TOKENIZER_KEY = "tokenizer_source"
"""``liquid_model.json`` key: the tokenizer directory that built the run's datasets (the export's default)."""


def read_pairs_meta(pairs_path: Optional[str]) -> Dict[str, Any]:
    """``<pairs_path>.meta.json`` (``build pairs``), with the VQ identity and resolution filled from the encode's
    ``encode_settings.json`` when the meta predates them; {} when there is no pairs dataset or meta."""
    if not pairs_path or not os.path.exists(pairs_path + ".meta.json"):
        return {}
    with open(pairs_path + ".meta.json") as f:
        meta = json.load(f)
    source = meta.get("source")
    settings_file = os.path.join(source, "encode_settings.json") if source else None
    if ("vq_identity" not in meta or "resolution" not in meta) and settings_file and os.path.exists(settings_file):
        with open(settings_file) as f:
            settings = json.load(f)
        for key in ("vq_identity", "resolution"):
            if key not in meta and key in settings:
                meta[key] = settings[key]
    return meta


def _field(data_cfg, name: str, default=None):
    return data_cfg.get(name, default) if hasattr(data_cfg, "get") else getattr(data_cfg, name, default)


def from_data_config(data_cfg) -> Dict[str, Any]:
    """The image record of a run: grid / codebook / VQ / resolution from its pairs dataset, templates from its data
    config. Fields the data do not record are None (e.g. a text-only run has no grid)."""
    meta = read_pairs_meta(_field(data_cfg, "pairs_path"))
    instructions = _field(data_cfg, "t2i_instructions") or T2I_INSTRUCTIONS
    return {
        "image_grid": list(meta["image_grid"]) if meta.get("image_grid") else None,
        "resolution": meta.get("resolution"),
        "pad_to_square": bool(meta.get("pad_to_square", False)),
        "codebook_size": meta.get("codebook_size"),
        "vq_tokenizer": meta.get("vq_tokenizer"),
        "vq_identity": meta.get("vq_identity"),
        "t2i_instructions": [str(s) for s in instructions],
        "i2t_prompt": str(_field(data_cfg, "i2t_prompt") or I2T_PROMPT),
    }


def sidecar_entries(data_cfg) -> Dict[str, Any]:
    """What a trainer checkpoint's ``liquid_model.json`` carries about its data (see the module docstring)."""
    tokenizer = _field(data_cfg, "tokenizer")
    return {SIDECAR_KEY: from_data_config(data_cfg),
            TOKENIZER_KEY: os.path.abspath(tokenizer) if tokenizer else None}


def export_record(vocab, image: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """``liquid_image_tokens.json`` of an export: the vocabulary's image ids plus the checkpoint's image record.
    The VQ named is the one the data was encoded with (else the vocabulary's)."""
    image = dict(image or {})
    return {
        "image_token_offset": vocab.image_token_offset, "num_image_tokens": vocab.num_image_tokens,
        "codebook_size": image.get("codebook_size") or vocab.num_image_tokens,
        "vq_tokenizer": image.get("vq_tokenizer") or vocab.vq_tokenizer,
        "vq_identity": image.get("vq_identity"),
        "image_grid": image.get("image_grid"), "resolution": image.get("resolution"),
        "pad_to_square": bool(image.get("pad_to_square", False)),
        "t2i_instructions": image.get("t2i_instructions"), "i2t_prompt": image.get("i2t_prompt"),
        "boi_id": vocab.boi_id, "eoi_id": vocab.eoi_id, "uncond_id": vocab.uncond_id,
        "boi_token": vocab.boi_token, "eoi_token": vocab.eoi_token, "uncond_token": vocab.uncond_token,
    }


def read_export_record(model_dir: str) -> Dict[str, Any]:
    """The export's ``liquid_image_tokens.json`` ({} when absent: an export made before it was written)."""
    path = os.path.join(model_dir, EXPORT_FILE)
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def sampling_vq(cfg, vocab) -> Tuple[str, str]:
    """(VQ name or path, the config key it comes from) for in-training T2I samples: ``sampling.vq_tokenizer``, else
    the VQ the pairs were encoded with (``<pairs>.meta.json``), else the vocabulary's."""
    explicit = cfg.sampling.vq_tokenizer
    if explicit:
        return str(explicit), "sampling.vq_tokenizer"
    recorded = read_pairs_meta(_field(cfg.data, "pairs_path")).get("vq_tokenizer")
    if recorded:
        return str(recorded), "data.pairs_path"
    return vocab.vq_tokenizer, "model.vocab"


def grid_text(grid: Optional[List[int]]) -> str:
    return f"{grid[0]}x{grid[1]}" if grid else "unknown"
