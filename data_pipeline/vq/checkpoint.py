"""Reading and writing VQGAN checkpoints in the taming on-disk format (``vqgan.ckpt`` + ``vqgan.yaml``).

``vqgan.ckpt`` is a torch pickle whose ``"state_dict"`` holds the VQModel weights (training checkpoints also carry
``loss.*`` discriminator/LPIPS weights, which inference ignores). ``vqgan.yaml`` holds ``model.params``
(``ddconfig``, ``n_embed``, ``embed_dim``). Loading is strict: any missing or unexpected weight is an error that
lists the offending keys, because a silently half-loaded tokenizer produces plausible-looking garbage codes.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

import torch
from omegaconf import OmegaConf

from liquid_train.atomic import atomic_path
from ..errors import DataError
from .model import VQGANConfig, VQModel

CKPT_NAME = "vqgan.ckpt"
YAML_NAME = "vqgan.yaml"
IGNORED_PREFIXES = ("loss.",)
"""Training-only weights (discriminator, perceptual loss) found in taming training checkpoints."""
TAMING_TARGET = "taming.models.vqgan.VQModel"


class VQCheckpointError(DataError):
    """A VQ checkpoint that is missing or does not match its config (a one-line CLI error, exit 2)."""


def resolve_checkpoint_files(path: str | os.PathLike) -> Tuple[Path, Path]:
    """``path`` is a directory holding ``vqgan.ckpt`` + ``vqgan.yaml``, or the ``.ckpt`` file (yaml beside it)."""
    p = Path(path).expanduser()
    if p.is_dir():
        ckpt, yaml = p / CKPT_NAME, p / YAML_NAME
    else:
        ckpt = p
        yaml = p.with_suffix(".yaml")
        if not yaml.exists():
            yaml = p.parent / YAML_NAME
    missing = [str(f) for f in (ckpt, yaml) if not f.is_file()]
    if missing:
        raise VQCheckpointError(
            f"VQ tokenizer checkpoint not found: missing {missing}. Pass a directory containing {CKPT_NAME} and "
            f"{YAML_NAME} (taming-transformers format, e.g. Chameleon's tokenizer/vqgan.ckpt + vqgan.yaml)."
        )
    return ckpt, yaml


def read_yaml_config(yaml_path: str | os.PathLike) -> Tuple[VQGANConfig, Dict]:
    """Returns the model config and the whole yaml as a plain dict."""
    raw = OmegaConf.to_container(OmegaConf.load(str(yaml_path)), resolve=True)
    try:
        params = raw["model"]["params"]
    except (KeyError, TypeError):
        raise VQCheckpointError(f"{yaml_path}: expected a taming config with 'model: params: ...'") from None
    target = raw["model"].get("target", TAMING_TARGET)
    if not str(target).endswith("VQModel"):
        raise VQCheckpointError(f"{yaml_path}: model.target {target!r} is not a taming VQModel")
    try:
        return VQGANConfig.from_model_params(params), raw
    except ValueError as e:
        raise VQCheckpointError(f"{yaml_path}: {e}") from None


def check_state_dict_keys(expected: Iterable[str], found: Iterable[str], source: str) -> List[str]:
    """Raise listing missing/unexpected keys; returns the ignored training-only keys."""
    expected, found = set(expected), set(found)
    ignored = sorted(k for k in found - expected if k.startswith(IGNORED_PREFIXES))
    unexpected = sorted(found - expected - set(ignored))
    missing = sorted(expected - found)
    if missing or unexpected:
        def show(keys):
            return ", ".join(keys[:20]) + (f", ... ({len(keys)} in all)" if len(keys) > 20 else "")
        raise VQCheckpointError(
            f"{source}: state_dict does not match the VQGAN built from its yaml. "
            f"missing keys: [{show(missing)}]; unexpected keys: [{show(unexpected)}]. "
            "Check that vqgan.yaml belongs to this vqgan.ckpt."
        )
    return ignored


def load_vqgan(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> VQModel:
    """Build the VQModel described by ``vqgan.yaml`` and load ``vqgan.ckpt`` into it, strictly."""
    ckpt_path, yaml_path = resolve_checkpoint_files(path)
    cfg, _ = read_yaml_config(yaml_path)
    try:
        blob = torch.load(str(ckpt_path), map_location=map_location, weights_only=True)
    except Exception as e:  # truncated / not a torch file
        raise VQCheckpointError(f"{ckpt_path}: cannot be read as a torch checkpoint ({type(e).__name__}: {e})") from None
    state = blob.get("state_dict") if isinstance(blob, dict) else None
    if state is None:
        raise VQCheckpointError(f"{ckpt_path}: expected a dict with key 'state_dict' (taming checkpoint format)")
    model = VQModel(cfg)
    ref = model.state_dict()
    check_state_dict_keys(ref.keys(), state.keys(), str(ckpt_path))
    bad_shapes = [f"{k}: ckpt {tuple(state[k].shape)} vs model {tuple(v.shape)}"
                  for k, v in ref.items() if tuple(state[k].shape) != tuple(v.shape)]
    if bad_shapes:
        raise VQCheckpointError(f"{ckpt_path}: tensor shapes do not match {yaml_path}: " + "; ".join(bad_shapes[:10]))
    model.load_state_dict({k: state[k] for k in ref}, strict=True)
    return model.eval()


def save_vqgan(model: VQModel, out_dir: str | os.PathLike, extra_state: Optional[Dict] = None) -> Path:
    """Write ``vqgan.ckpt`` ({"state_dict": ...}) and ``vqgan.yaml`` in the taming format, atomically."""
    out = Path(out_dir)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    blob = {"state_dict": state, **(extra_state or {})}
    with atomic_path(str(out / CKPT_NAME)) as tmp:
        torch.save(blob, tmp)
    yaml_cfg = OmegaConf.create({"model": {"target": TAMING_TARGET, "params": model.config.to_model_params()}})
    with atomic_path(str(out / YAML_NAME)) as tmp:
        OmegaConf.save(yaml_cfg, tmp)
    return out
