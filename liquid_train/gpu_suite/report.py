"""What the suite writes: the versions and device it ran on, and each section's outcome, as ``results.json`` and a
markdown table (``results.md``) in the output directory, both written atomically."""
from __future__ import annotations

import json
import math
import os
import platform
import sys
from importlib import metadata
from typing import Dict, List, Optional

import megatron.core
import torch

from liquid_train.atomic import atomic_write_text

JSON_NAME, MARKDOWN_NAME = "results.json", "results.md"


def _version(dist: str) -> Optional[str]:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def transformer_engine_version() -> str:
    """TE's version, or why it does not import (optional GPU package: imported here only)."""
    try:
        import transformer_engine  # noqa: F401  (optional GPU extra)
        import transformer_engine.pytorch  # noqa: F401
    except Exception as exc:  # TE raises RuntimeError, not only ImportError, without its CUDA libraries
        return f"not available ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})"
    return getattr(transformer_engine, "__version__", None) or _version("transformer-engine") or "unknown"


def environment() -> Dict:
    env = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
           "megatron_core": getattr(megatron.core, "__version__", None) or _version("megatron-core"),
           "transformer_engine": transformer_engine_version(), "triton": _version("triton"),
           "numpy": _version("numpy"), "platform": platform.platform()}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        capability = ".".join(map(str, torch.cuda.get_device_capability(0)))
        env.update(device=torch.cuda.get_device_name(0), capability=capability,
                   gpu_memory_gib=round(props.total_memory / 2**30, 1), multiprocessors=props.multi_processor_count,
                   cudnn=torch.backends.cudnn.version())
    else:
        env["device"] = f"cpu ({os.cpu_count()} cores visible)"
    return env


def imported_distributions() -> List[str]:
    """Installed distributions (not the standard library, not this project) that this process has imported."""
    owners = metadata.packages_distributions()
    tops = {name.split(".")[0] for name in list(sys.modules)}
    found = set()
    for top in tops:
        for dist in owners.get(top, ()):
            found.add(dist.lower().replace("_", "-"))
    return sorted(found - {"liquid-train"})


def _fmt(value) -> str:
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return f"{value:.4g}"
    return str(value)


HEADLINE_WORDS = ("img_s", "tokens_per_s", "mfu", "ratio", "_over_", "call_s", "peak_allocated_gib")


def _walk(prefix: str, node, checks: List, numbers: List) -> None:
    """Checks (dicts with value and limit) and headline scalars of a section's results, with their paths."""
    if isinstance(node, dict):
        if "value" in node and "limit" in node:
            checks.append((prefix, node))
            return
        for k, v in node.items():
            _walk(f"{prefix}.{k}" if prefix else str(k), v, checks, numbers)
    elif isinstance(node, (int, float)) and not isinstance(node, bool) and \
            any(word in prefix.rsplit(".", 1)[-1] for word in HEADLINE_WORDS):
        numbers.append((prefix, node))


def _summary(body: Dict, limit: int = 5) -> str:
    checks, numbers = [], []
    _walk("", body, checks, numbers)
    verdicts = [c.get("ok") for _, c in checks]
    head = []
    if checks:
        head.append(f"{len(checks)} checks computed" if None in verdicts else
                    f"{sum(verdicts)}/{len(checks)} checks ok")
    head += [f"{path}: {_fmt(v)}" for path, v in numbers[:limit]]
    return "; ".join(head)


def markdown(record: Dict) -> str:
    env = record["environment"]
    lines = [f"# GPU suite{' (dry run)' if record['dry_run'] else ''}", "",
             f"device: {env.get('device')}; torch {env['torch']} (CUDA {env.get('cuda')}); TE "
             f"{env['transformer_engine']}; megatron-core {env['megatron_core']}; Python {env['python']}",
             f"total {record['seconds']:.0f} s of a {record['budget_s']:.0f} s budget", "",
             "| section | status | time / budget | headline |", "|---|---|---|---|"]
    details = []
    for name, section in record["sections"].items():
        body = section.get("results") or section.get("exercised") or {}
        status = section["status"].replace("|", "/")
        lines.append(f"| {name} | {status} | {section['seconds']:.0f} s / {section['budget_s']:.0f} s | "
                     f"{_summary(body).replace('|', '/')} |")
        checks, _ = [], None
        _walk("", body, checks, [])
        for path, c in checks:
            verdict = "" if c.get("ok") is None else (" ok" if c["ok"] else " **NOT OK**")
            details.append(f"- {name}.{path}: {_fmt(c['value'])} (limit {_fmt(c['limit'])}; {c['what']}){verdict}")
    if details:
        lines += ["", "## Checks", ""] + details
    return "\n".join(lines) + "\n"


def write(out_dir: str, record: Dict) -> Dict[str, str]:
    paths = {"json": os.path.join(out_dir, JSON_NAME), "markdown": os.path.join(out_dir, MARKDOWN_NAME)}
    atomic_write_text(paths["json"], json.dumps(record, indent=1, default=str))
    atomic_write_text(paths["markdown"], markdown(record))
    return paths
