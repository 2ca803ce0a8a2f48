"""Scaling-law fits from many runs' metrics: loss vs compute per size, Chinchilla L(N, D), eval score vs loss.

    python tools/scaling_laws.py runs/*/ --out scaling_out [--wandb-csv export.csv ...] [--eval scores.csv]

Inputs: run directories holding ``metrics.jsonl`` (validation lines: step, val_loss, consumed_tokens, flops) and
``config.yaml`` (``model.num_params`` = non-embedding parameters, ``model.family/size``); or wandb CSV exports with
columns ``run, num_params, consumed_tokens, val_loss`` (``flops`` optional). FLOPs missing from a log are
computed as 6*N*D. Outputs: ``fits.json``, ``fits.md`` (table with bootstrap 95% intervals), ``loss_vs_flops.png/svg``
(the paper's Fig. 3 style: one curve per size, log-log, power-law fits dashed) and ``score_vs_loss.png/svg``.

The Chinchilla fit follows Hoffmann et al. 2022 (Approach 3): minimise the Huber loss (delta 1e-3) of
``log L_hat - log L`` with ``log L_hat = LSE(e, a0 - alpha log N, b0 - beta log D)`` by L-BFGS-B from a grid of
initial points, keeping the best.
"""
from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
from scipy.optimize import minimize
from scipy.special import huber, logsumexp


@dataclass
class RunPoints:
    name: str
    num_params: float
    tokens: np.ndarray
    flops: np.ndarray
    loss: np.ndarray


def read_run_dir(path: str) -> RunPoints:
    metrics = os.path.join(path, "metrics.jsonl")
    if not os.path.exists(metrics):
        raise FileNotFoundError(f"{path}: no metrics.jsonl")
    num_params = None
    cfg_path = os.path.join(path, "config.yaml")
    if os.path.exists(cfg_path):
        from omegaconf import OmegaConf
        cfg = OmegaConf.load(cfg_path)
        num_params = OmegaConf.select(cfg, "model.num_params")
    rows = []
    with open(metrics) as f:
        for i, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{metrics}:{i}: not JSON ({e})") from None
            if rec.get("kind") == "valid" and rec.get("val_loss") is not None:
                rows.append(rec)
    if not rows:
        raise ValueError(f"{metrics}: no validation lines (kind=valid with val_loss)")
    if num_params is None:
        raise ValueError(f"{cfg_path}: model.num_params (non-embedding parameters) is needed for the fits")
    tokens = np.array([r["consumed_tokens"] for r in rows], float)
    flops = np.array([r.get("flops") or 6.0 * num_params * r["consumed_tokens"] for r in rows], float)
    return RunPoints(os.path.basename(os.path.normpath(path)), float(num_params), tokens, flops,
                     np.array([r["val_loss"] for r in rows], float))


def read_wandb_csv(path: str) -> List[RunPoints]:
    by_run: Dict[str, list] = {}
    with open(path) as f:
        reader = csv.DictReader(f)
        need = {"run", "num_params", "consumed_tokens", "val_loss"}
        if not need <= set(reader.fieldnames or []):
            raise ValueError(f"{path}: needs columns {sorted(need)}; has {reader.fieldnames}")
        for row in reader:
            if row["val_loss"] in ("", "NaN"):
                continue
            by_run.setdefault(row["run"], []).append(row)
    runs = []
    for name, rows in by_run.items():
        n = float(rows[0]["num_params"])
        tokens = np.array([float(r["consumed_tokens"]) for r in rows])
        flops = np.array([float(r["flops"]) if r.get("flops") else 6 * n * float(r["consumed_tokens"]) for r in rows])
        runs.append(RunPoints(name, n, tokens, flops, np.array([float(r["val_loss"]) for r in rows])))
    return runs


# --- fits ------------------------------------------------------------------------------------------------------
def fit_power_law(flops: np.ndarray, loss: np.ndarray) -> Dict[str, float]:
    """L = a * C^b by least squares in log-log space (the paper's per-size lines)."""
    b, log_a = np.polyfit(np.log(flops), np.log(loss), 1)
    return {"a": float(np.exp(log_a)), "b": float(b)}


def _chinchilla_objective(theta, log_n, log_d, log_l, delta):
    """Huber loss of log residuals and its analytic gradient (L-BFGS-B with finite differences is ~50x slower)."""
    a0, b0, e, alpha, beta = theta
    u = np.stack([a0 - alpha * log_n, b0 - beta * log_d, np.full_like(log_n, e)])
    pred = logsumexp(u, axis=0)
    w = np.exp(u - pred)  # softmax weights = d pred / d u_i
    r = pred - log_l
    g = np.clip(r, -delta, delta)  # Huber derivative
    grad = np.array([(g * w[0]).sum(), (g * w[1]).sum(), (g * w[2]).sum(),
                     -(g * w[0] * log_n).sum(), -(g * w[1] * log_d).sum()])
    return huber(delta, r).sum(), grad


def fit_chinchilla(n: np.ndarray, d: np.ndarray, loss: np.ndarray, delta: float = 1e-3) -> Dict[str, float]:
    """L(N, D) = E + A/N^alpha + B/D^beta: Huber on log residuals, L-BFGS-B from a grid of initialisations."""
    log_n, log_d, log_l = np.log(n), np.log(d), np.log(loss)
    best = None
    grid = itertools.product([0, 5, 10, 20], [0, 5, 10, 20], [-1, 0, 1], [0.2, 0.5], [0.2, 0.5])
    for init in grid:
        res = minimize(_chinchilla_objective, np.array(init, float), args=(log_n, log_d, log_l, delta),
                       method="L-BFGS-B", jac=True, bounds=[(None, None)] * 3 + [(0.0, 3.0), (0.0, 3.0)])
        if best is None or res.fun < best.fun:
            best = res
    a0, b0, e, alpha, beta = best.x
    return {"E": float(np.exp(e)), "A": float(np.exp(a0)), "B": float(np.exp(b0)), "alpha": float(alpha),
            "beta": float(beta), "objective": float(best.fun)}


def fit_linear(x: np.ndarray, y: np.ndarray) -> Dict[str, float]:
    slope, intercept = np.polyfit(x, y, 1)
    pred = slope * x + intercept
    r2 = 1 - ((y - pred) ** 2).sum() / ((y - y.mean()) ** 2).sum()
    return {"slope": float(slope), "intercept": float(intercept), "r2": float(r2)}


def bootstrap(fit_fn, arrays: Sequence[np.ndarray], n_boot: int = 100, seed: int = 0) -> Dict[str, List[float]]:
    """95% percentile intervals of each fitted parameter over resampled points."""
    rng = np.random.default_rng(seed)
    m = len(arrays[0])
    samples: Dict[str, list] = {}
    for _ in range(n_boot):
        idx = rng.integers(0, m, m)
        for k, v in fit_fn(*[a[idx] for a in arrays]).items():
            samples.setdefault(k, []).append(v)
    return {k: [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] for k, v in samples.items()}


# --- plots -----------------------------------------------------------------------------------------------------
def plot_loss_vs_flops(runs: List[RunPoints], fits: Dict[str, Dict[str, float]], out_dir: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4.5))
    cmap = plt.get_cmap("viridis")
    for i, run in enumerate(sorted(runs, key=lambda r: r.num_params)):
        color = cmap(i / max(len(runs) - 1, 1))
        ax.plot(run.flops, run.loss, "o-", color=color, ms=3, label=f"{run.name} ({run.num_params / 1e9:.2g}B)")
        if run.name in fits:
            c = np.geomspace(run.flops.min(), run.flops.max(), 50)
            ax.plot(c, fits[run.name]["a"] * c ** fits[run.name]["b"], "--", color=color, lw=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("Training FLOPs")
    ax.set_ylabel("Validation loss")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    for ext in ("png", "svg"):
        fig.savefig(os.path.join(out_dir, f"loss_vs_flops.{ext}"), dpi=150)
    plt.close(fig)


def plot_score_vs_loss(loss: np.ndarray, score: np.ndarray, fit: Dict[str, float], out_dir: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.scatter(loss, score, s=18)
    x = np.linspace(loss.min(), loss.max(), 20)
    ax.plot(x, fit["slope"] * x + fit["intercept"], "--", label=f"R$^2$ = {fit['r2']:.3f}")
    ax.set_xlabel("Validation loss")
    ax.set_ylabel("Eval score")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    for ext in ("png", "svg"):
        fig.savefig(os.path.join(out_dir, f"score_vs_loss.{ext}"), dpi=150)
    plt.close(fig)


def _atomic_write(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def analyse(runs: List[RunPoints], out_dir: str, eval_csv: Optional[str] = None, n_boot: int = 100) -> dict:
    os.makedirs(out_dir, exist_ok=True)
    result: dict = {"power_law": {}, "power_law_ci": {}}
    for run in runs:
        result["power_law"][run.name] = fit_power_law(run.flops, run.loss)
        result["power_law_ci"][run.name] = bootstrap(fit_power_law, [run.flops, run.loss], n_boot)
    n = np.concatenate([np.full(len(r.loss), r.num_params) for r in runs])
    d = np.concatenate([r.tokens for r in runs])
    l = np.concatenate([r.loss for r in runs])
    if len(runs) >= 2:
        result["chinchilla"] = fit_chinchilla(n, d, l)
        result["chinchilla_ci"] = bootstrap(fit_chinchilla, [n, d, l], max(n_boot // 10, 5))
    if eval_csv:
        with open(eval_csv) as f:
            rows = list(csv.DictReader(f))
        if not rows or not {"val_loss", "score"} <= set(rows[0]):
            raise ValueError(f"{eval_csv}: needs columns val_loss, score")
        x = np.array([float(r["val_loss"]) for r in rows])
        y = np.array([float(r["score"]) for r in rows])
        result["score_vs_loss"] = fit_linear(x, y)
        result["score_vs_loss_ci"] = bootstrap(fit_linear, [x, y], n_boot)
        plot_score_vs_loss(x, y, result["score_vs_loss"], out_dir)
    plot_loss_vs_flops(runs, result["power_law"], out_dir)
    _atomic_write(os.path.join(out_dir, "fits.json"), json.dumps(result, indent=2))
    lines = ["| fit | parameter | value | 95% CI |", "|---|---|---|---|"]
    for key in ("chinchilla", "score_vs_loss"):
        for p, v in result.get(key, {}).items():
            ci = result.get(key + "_ci", {}).get(p)
            if ci and p != "objective":
                lines.append(f"| {key} | {p} | {v:.4g} | [{ci[0]:.4g}, {ci[1]:.4g}] |")
    for name, fit in result["power_law"].items():
        ci = result["power_law_ci"][name]
        for p, v in fit.items():
            lines.append(f"| power law {name} | {p} | {v:.4g} | [{ci[p][0]:.4g}, {ci[p][1]:.4g}] |")
    _atomic_write(os.path.join(out_dir, "fits.md"), "\n".join(lines) + "\n")
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="*", help="run directories with metrics.jsonl + config.yaml")
    ap.add_argument("--wandb-csv", action="append", default=[])
    ap.add_argument("--eval", help="CSV with columns val_loss, score (e.g. VQAScore per checkpoint)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--bootstrap", type=int, default=100)
    args = ap.parse_args(argv)
    runs = [read_run_dir(p) for p in args.runs]
    for c in args.wandb_csv:
        runs.extend(read_wandb_csv(c))
    if not runs:
        ap.error("no runs given")
    result = analyse(runs, args.out, args.eval, args.bootstrap)
    if "chinchilla" in result:
        print("Chinchilla fit:", json.dumps(result["chinchilla"]))
    print(open(os.path.join(args.out, "fits.md")).read())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
