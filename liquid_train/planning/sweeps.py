"""Sweeps (``configs/sweeps/*.yaml``) -> one runnable run config per (model, variant), plus the sbatch lines.

Each run config = the model config (``configs/models/<model>.yaml``: architecture, layout, batch; its planner-only
``plan`` block dropped) + ``data`` from the variant's data config + the sweep's ``common`` and the variant's dotted
overrides + ``--set`` values + ``run_dir``. Nothing is left for the person launching to guess:

* the fields a run cannot start without (the sweep's ``required`` list: the base checkpoint, the tokenizer, the
  datasets) are either given with ``--set KEY=VALUE`` (``{model}``, ``{variant}``, ``{family}``, ``{size}`` expand
  per run) or written as ``???``, which ``liquid-train`` refuses with one line naming the key; a dataset the
  variant's mixture does not use is not required;
* checkpoints default to every 1000 steps and at least hourly (``checkpoint.save_interval`` /
  ``save_interval_minutes``);
* :func:`check` runs the trainer's preflight (without the machine checks) on every composed config at the world
  size of its model's plan, so a config that would fail on the cluster fails here, on the login node.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import yaml
from omegaconf import OmegaConf

from liquid_train.atomic import atomic_write_text
from liquid_train.training.config import REPO_ROOT, ConfigError, config_sources, load_config
from liquid_train.training.preflight import preflight

DEFAULT_REQUIRED = ("model.init_from", "data.tokenizer", "data.pairs_path", "data.text_path")
COMMANDS_FILE = "commands.txt"


class SweepError(ValueError):
    """A sweep file or ``--set`` value that cannot be composed (the message names the file or key)."""


@dataclass
class ComposedRun:
    name: str
    path: str
    nodes: int
    gpus_per_node: int
    missing: List[str]
    """Required keys left as ``???``."""

    @property
    def world_size(self) -> int:
        return self.nodes * self.gpus_per_node

    @property
    def command(self) -> str:
        return (f"GPUS_PER_NODE={self.gpus_per_node} CONFIG={self.path} sbatch --nodes={self.nodes} "
                f"--gpus-per-node={self.gpus_per_node} launch/pretrain.sh")


def _parse_settings(settings: Sequence[str]) -> Dict[str, str]:
    out = {}
    for item in settings:
        if "=" not in item:
            raise SweepError(f"--set {item!r}: not of the form KEY=VALUE")
        key, value = item.split("=", 1)
        out[key.strip()] = value
    return out


def _expand(value: str, fields: Dict[str, str], key: str):
    try:
        text = value.format_map(fields)
    except (KeyError, IndexError, ValueError) as err:
        raise SweepError(f"--set {key}={value}: unknown placeholder {err}; use {{model}}, {{variant}}, {{family}} "
                         f"or {{size}}") from None
    return yaml.safe_load(text) if text else None


def _needed(key: str, mixture: Dict[str, float]) -> bool:
    """A dataset the mixture gives no weight is not required."""
    if key == "data.text_path":
        return float(mixture.get("text", 0)) > 0
    if key == "data.pairs_path":
        return float(mixture.get("t2i", 0)) > 0 or float(mixture.get("i2t", 0)) > 0
    return True


def expand(sweep_path: str, out_dir: str, runs_root: str = "runs", settings: Sequence[str] = ()) -> List[ComposedRun]:
    """Write ``<out_dir>/<model>__<variant>.yaml`` (atomically) and ``<out_dir>/commands.txt``."""
    if not os.path.exists(sweep_path):
        raise SweepError(f"{sweep_path}: no such sweep file")
    sweep = OmegaConf.load(sweep_path)
    for key in ("name", "models", "variants"):
        if key not in sweep:
            raise SweepError(f"{sweep_path}: missing '{key}'")
    required = list(sweep.get("required") or DEFAULT_REQUIRED)
    given = _parse_settings(settings)
    os.makedirs(out_dir, exist_ok=True)
    runs: List[ComposedRun] = []
    for model in sweep.models:
        mpath = os.path.join(REPO_ROOT, "configs/models", f"{model}.yaml")
        if not os.path.exists(mpath):
            raise SweepError(f"{sweep_path}: model '{model}' has no configs/models/{model}.yaml")
        mcfg = OmegaConf.load(mpath)
        nodes = int(OmegaConf.select(mcfg, "plan.nodes", default=1))
        gpus = int(OmegaConf.select(mcfg, "plan.gpus_per_node", default=8))
        if "plan" in mcfg:
            del mcfg["plan"]
        for vname, variant in sweep.variants.items():
            data_path = os.path.join(REPO_ROOT, variant.data)
            if not os.path.exists(data_path):
                raise SweepError(f"{sweep_path}: variant {vname}: data config {variant.data} not found")
            cfg = OmegaConf.merge(mcfg, {"data": OmegaConf.load(data_path)})
            for k, v in list((sweep.get("common") or {}).items()) + list((variant.get("overrides") or {}).items()):
                OmegaConf.update(cfg, k, v, merge=False)
            fields = {"model": model, "variant": vname, "family": str(cfg.model.family), "size": str(cfg.model.size)}
            for k, v in given.items():
                OmegaConf.update(cfg, k, _expand(v, fields, k), merge=False)
            mixture = dict(OmegaConf.select(cfg, "data.mixture", default={}) or {})
            missing = []
            for key in required:
                if key in given:
                    continue
                if _needed(key, mixture):
                    OmegaConf.update(cfg, key, "???", merge=False)
                    missing.append(key)
                else:
                    OmegaConf.update(cfg, key, None, merge=False)
            run = f"{model}__{vname}"
            cfg.run_dir = os.path.join(runs_root, sweep.name, run)
            path = os.path.join(out_dir, f"{run}.yaml")
            header = (f"# {run}: composed by tools/sweep.py from {sweep_path} (model configs/models/{model}.yaml, "
                      f"data {variant.data}).\n")
            if missing:
                header += (f"# Required before launch (liquid-train refuses '???'): {', '.join(missing)}; pass them "
                           f"as key=value after the launch command, or compose again with --set.\n")
            atomic_write_text(path, header + OmegaConf.to_yaml(cfg))
            runs.append(ComposedRun(run, path, nodes, gpus, missing))
    atomic_write_text(os.path.join(out_dir, COMMANDS_FILE), "\n".join(r.command for r in runs) + "\n")
    return runs


def check(runs: Sequence[ComposedRun]) -> None:
    """The trainer's preflight on each composed config (files, layout at the plan's world size, vocabulary,
    tokenizer, data, sampling VQ; not the machine's GPUs). Raises ConfigError naming the file and the key."""
    for run in runs:
        try:
            preflight(load_config(run.path), run.world_size, machine=False)
        except ConfigError as err:
            raise ConfigError(f"{run.path}: {err.located(config_sources(run.path))}") from None


def unset_summary(runs: Sequence[ComposedRun]) -> Optional[str]:
    keys = sorted({k for r in runs for k in r.missing})
    if not keys:
        return None
    return (f"required fields left as '???' in {sum(bool(r.missing) for r in runs)} of {len(runs)} configs: "
            f"{', '.join(keys)}; set them with --set KEY=VALUE ({{model}} expands per run) or at launch")
