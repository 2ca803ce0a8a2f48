"""``liquid_model.json``: the architecture (and the original HF ``config.json``) stored next to every model and
trainer checkpoint, so a checkpoint says what model it holds. Written by the converter and the trainer, read by
the converter, the run-config build path (``model.size: null`` trains the architecture of ``model.init_from``)
and the samplers."""
from __future__ import annotations

import json
import os
from typing import Optional

from liquid_train.models.families import ModelArch, arch_from_dict, get_model_arch

MODEL_SIDECAR = "liquid_model.json"


class SidecarError(ValueError):
    """A missing or unreadable sidecar; the message names the file."""


def read_sidecar(ckpt_dir: str) -> dict:
    path = os.path.join(ckpt_dir, MODEL_SIDECAR)
    if not os.path.exists(path):
        raise SidecarError(f"{path}: missing; not a liquid-train model/trainer checkpoint directory")
    try:
        with open(path) as f:
            return json.load(f)
    except ValueError as exc:
        raise SidecarError(f"{path}: not valid JSON ({exc})") from None


def sidecar_arch(side: dict) -> ModelArch:
    """The architecture a sidecar records (older sidecars: flat fields, or family and size)."""
    if "arch" in side:
        return arch_from_dict(side["arch"])
    if all(k in side for k in ("num_layers", "hidden_size")):
        return arch_from_dict(side)
    return get_model_arch(side["family"], side["size"])


def checkpoint_arch(ckpt_dir: Optional[str]) -> Optional[ModelArch]:
    """The architecture of a checkpoint directory that has a sidecar, else None."""
    if not ckpt_dir or not os.path.exists(os.path.join(ckpt_dir, MODEL_SIDECAR)):
        return None
    return sidecar_arch(read_sidecar(ckpt_dir))
