"""Scaling-law fits from many runs' metrics: loss vs compute per size, Chinchilla L(N, D), eval score vs loss.
The CLI is ``tools/scaling_laws.py``; this module is the library (readers, fits, the checks of what the data
determine, plots, tables).

Inputs: run directories holding ``metrics.jsonl`` (validation lines: step, val_loss, consumed_tokens, flops) and
``run_info.json`` (``num_params`` = non-embedding parameters, written by the trainer); or wandb CSV exports with
columns ``run, num_params, consumed_tokens, val_loss`` (``flops`` optional). FLOPs missing from a log are
computed as 6*N*D. Outputs: ``fits.json``, ``fits.md`` (table with bootstrap 95% intervals), ``loss_vs_flops.png/svg``
(the paper's Fig. 3 style: one curve per size, log-log, power-law fits dashed) and ``score_vs_loss.png/svg``.

The Chinchilla fit follows Hoffmann et al. 2022 (Approach 3): minimise the Huber loss (delta 1e-3) of
``log L_hat - log L`` with ``log L_hat = LSE(e, a0 - alpha log N, b0 - beta log D)`` by L-BFGS-B from a grid of
initial points, keeping the best. By default only the 8 grid points with the lowest initial objective are run (to
convergence); ``starts=None`` runs all 192 (see ``fit_chinchilla`` for why and what that costs).

What can be fitted is said, never guessed (:func:`chinchilla_undetermined`, :func:`chinchilla_degenerate`,
:func:`too_few_points`): a fit whose data do not determine it is not made, and ``fits.json`` / ``fits.md`` /
the CLI say why in one line. Along N, ``E + A / N^alpha`` has three free parameters, so it needs runs of at least
three sizes (two sizes are fitted exactly by infinitely many (E, A, alpha)); along D, ``B / D^beta`` likewise needs
three token counts; and the optimum found must not sit where a term switches off (E, A/N^alpha or B/D^beta -> 0, an
exponent at its bound), which is what an underdetermined fit converges to (E 1e-14, alpha 1.95 from two runs).
"""
from __future__ import annotations

import csv
import functools
import itertools
import json
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullFormatter
from scipy.optimize import minimize
from scipy.special import huber
from threadpoolctl import threadpool_limits

from liquid_train.atomic import atomic_write_text


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
    info_path = os.path.join(path, "run_info.json")
    if os.path.exists(info_path):
        with open(info_path) as f:
            num_params = json.load(f).get("num_params")
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
        raise ValueError(f"{info_path}: num_params (non-embedding parameters, written by the trainer) is needed "
                         f"for the fits")
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


_CHINCHILLA_GRID = np.array(list(itertools.product([0, 5, 10, 20], [0, 5, 10, 20], [-1, 0, 1], [0.2, 0.5], [0.2, 0.5])),
                            float)
"""Hoffmann et al.'s grid of initial (a0 = log A, b0 = log B, e = log E, alpha, beta): 4x4x3x2x2 = 192 points."""
_CHINCHILLA_BOUNDS = [(None, None)] * 3 + [(0.0, 3.0), (0.0, 3.0)]
_LBFGSB_OPTIONS = {"ftol": 1e-15, "gtol": 1e-12}
"""Each L-BFGS-B start runs to convergence. scipy's defaults (ftol 2.2e-9, *absolute* while |f| < 1; gtol 1e-5)
stop a start far from its optimum here: the objective is ~1e-5..1e-3 and a0/alpha (b0/beta) are strongly coupled
through log N, log D ~ 17-27. With the defaults, the best of all 192 starts was still short of the converged optimum
by more than 1e-6 (relative) on 41 of 67 synthetic problems (up to 3%)."""
CHINCHILLA_STARTS = 8
"""L-BFGS-B starts per full-data fit by default (the grid points with the lowest initial objective)."""

def _single_thread_blas():
    """One BLAS thread while L-BFGS-B runs, restored afterwards (``threadpoolctl``: what ``OPENBLAS_NUM_THREADS=1``
    does, at run time). scipy >= 1.15's C L-BFGS-B calls BLAS/LAPACK (ddot, dpotrf, dtrtrs, ...) on 5-dimensional
    problems every iteration; with OpenBLAS's thread pool on a loaded 2-core machine one ``setulb`` call took ~5 ms
    instead of ~4 us (scipy/scipy#22438, #23191; OpenMathLib/OpenBLAS#5383), >95% of the fit's time there."""
    return threadpool_limits(limits=1, user_api="blas")


def _lse3(u):
    """logsumexp over axis -2 (the 3 terms) and the softmax weights. Same max-shifted arithmetic as
    scipy.special.logsumexp, whose array-API dispatch was ~75% of each objective call here."""
    m = u.max(axis=-2, keepdims=True)
    ex = np.exp(u - m)
    s = ex.sum(axis=-2, keepdims=True)
    return (m + np.log(s))[..., 0, :], ex / s


def _chinchilla_objective(theta, log_n, log_d, log_l, delta):
    """Huber loss of log residuals and its analytic gradient (L-BFGS-B with finite differences is ~50x slower)."""
    a0, b0, e, alpha, beta = theta
    u = np.stack([a0 - alpha * log_n, b0 - beta * log_d, np.full_like(log_n, e)])
    pred, w = _lse3(u)  # w: softmax weights = d pred / d u_i
    r = pred - log_l
    g = np.clip(r, -delta, delta)  # Huber derivative
    gw0, gw1 = g * w[0], g * w[1]
    grad = np.array([gw0.sum(), gw1.sum(), (g * w[2]).sum(), -(gw0 @ log_n), -(gw1 @ log_d)])
    return huber(delta, r).sum(), grad


def _chinchilla_objective_many(thetas, log_n, log_d, log_l, delta):
    """The objective (no gradient) at each row of ``thetas`` [K, 5], in one vectorised pass: [K]."""
    a0, b0, e, alpha, beta = (thetas[:, i:i + 1] for i in range(5))
    u = np.stack([a0 - alpha * log_n, b0 - beta * log_d, np.broadcast_to(e, (len(thetas), len(log_n)))], axis=1)
    return huber(delta, _lse3(u)[0] - log_l).sum(axis=1)


def _chinchilla_theta(fit: Dict[str, float]) -> np.ndarray:
    """A fit_chinchilla result back to the optimiser's (a0, b0, e, alpha, beta); an E, A or B that under/overflowed
    (a term the fit switched off) maps to the edge of the float range, which is where its log was."""
    with np.errstate(divide="ignore"):
        logs = np.log([fit["A"], fit["B"], fit["E"]])
    return np.concatenate([np.clip(logs, -745.0, 709.0), [fit["alpha"], fit["beta"]]])


def fit_chinchilla(n: np.ndarray, d: np.ndarray, loss: np.ndarray, delta: float = 1e-3,
                   starts: Optional[int] = CHINCHILLA_STARTS, warm_starts: Sequence[np.ndarray] = ()
                   ) -> Dict[str, float]:
    """L(N, D) = E + A/N^alpha + B/D^beta: Huber on log residuals, L-BFGS-B from a grid of initialisations.

    Hoffmann et al. 2022 (Approach 3) run L-BFGS from every point of a 192-point grid and keep the best:
    ``starts=None`` here (exhaustive). The default is the fast path: the objective is evaluated on the whole grid in
    one vectorised numpy pass (~1 ms), L-BFGS-B runs only from the ``starts`` grid points with the lowest initial
    objective plus any ``warm_starts`` (e.g. the full-data optimum, for bootstrap resamples), and the best is kept.
    The formulation is unchanged (Huber delta on log residuals, LSE parametrisation, 0 <= alpha, beta <= 3,
    analytic gradient, L-BFGS-B); each start now runs to convergence (``_LBFGSB_OPTIONS``).

    Why a few starts: converged, most of the grid lands on the same optimum (100-180 of 192 starts on the test's
    synthetic runs), and the best-ranked grid points are usually among them. Measured on 67 synthetic problems
    (3-5 runs x 4-12 points, 0.3-3% noise, bootstrap resamples, the quickstart's runs): 8 starts reached the converged
    192-start optimum (1e-9 relative) on 60, and beat the previous method (all 192 starts at scipy's default
    tolerances) on 62 while being worse on 2 (by up to 0.8%). The misses inspected (3 of 7) were data that do not pin
    a term down (B/D^beta vanishing or beta at its bound 3, E -> 0): plateaus from which only a few grid points
    escape. Use ``starts=None`` (``--chinchilla-starts all``) for final numbers on such data; it costs
    ~20x. ``tests/test_scaling_laws.py`` checks fast == exhaustive on one problem; ``benchmarks/scaling_fit.py``
    times both.
    """
    log_n, log_d, log_l = np.log(n), np.log(d), np.log(loss)
    args = (log_n, log_d, log_l, delta)
    grid = _CHINCHILLA_GRID
    if starts is not None and starts < len(grid):
        f0 = _chinchilla_objective_many(grid, *args)
        grid = grid[np.argsort(f0, kind="stable")[:max(int(starts), 0)]]
    inits: List[np.ndarray] = []
    for init in [np.asarray(w, float) for w in warm_starts] + list(grid):
        if np.isfinite(init).all() and not any(np.array_equal(init, v) for v in inits):
            inits.append(init)
    if not inits:
        raise ValueError("fit_chinchilla: no initial points (starts=0 and no finite warm_starts)")
    best = None
    with _single_thread_blas():
        for init in inits:
            res = minimize(_chinchilla_objective, init, args=args, method="L-BFGS-B", jac=True,
                           bounds=_CHINCHILLA_BOUNDS, options=_LBFGSB_OPTIONS)
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


# --- what the data determine -------------------------------------------------------------------------------------
POWER_LAW_PARAMS = 2
LINEAR_PARAMS = 2
CHINCHILLA_PER_AXIS = 3
"""Free parameters along each axis of L(N, D): E, A, alpha along N (B, beta and E along D)."""
DEGENERATE_REL = 1e-3
"""A Chinchilla term below this fraction of the smallest loss at every point counts as switched off."""
EXPONENT_EDGE = 1e-3


def format_count(n: float) -> str:
    """Parameter counts as people write them: 42K, 250K, 50M, 0.5B, 7.6B (2 significant digits, no 7.4e-05B)."""
    for scale, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= (1e8 if unit == "B" else scale):  # 0.5B rather than 500M, as model names are written
            value = n / scale
            return f"{value:.0f}{unit}" if value >= 100 else f"{value:.2g}{unit}"
    return f"{n:.0f}"


def too_few_points(m: int, params: int, what: str) -> Optional[str]:
    """A fit of ``params`` parameters needs more points than that (then the residual says how well it fits)."""
    if m <= params:
        return (f"{m} point{'s' if m != 1 else ''} for {params} free parameters: {what} needs at least {params + 1} "
                f"(more validation points: a smaller train.eval_interval)")
    return None


def chinchilla_undetermined(n: np.ndarray, d: np.ndarray) -> Optional[str]:
    """Why the pooled points cannot determine L(N, D) = E + A/N^alpha + B/D^beta, or None."""
    sizes = np.unique(n)
    if len(sizes) < CHINCHILLA_PER_AXIS:
        listed = ", ".join(format_count(x) for x in sizes)
        return (f"{len(sizes)} model size{'s' if len(sizes) != 1 else ''} ({listed}) cannot determine E, A and alpha "
                f"({CHINCHILLA_PER_AXIS} free parameters along N); give runs of at least {CHINCHILLA_PER_AXIS} sizes")
    tokens = np.unique(d)
    if len(tokens) < CHINCHILLA_PER_AXIS:
        return (f"{len(tokens)} distinct token count{'s' if len(tokens) != 1 else ''} cannot determine B and beta; "
                f"log validation at least {CHINCHILLA_PER_AXIS} times per run")
    return too_few_points(len(n), 5, "the Chinchilla fit")


def chinchilla_degenerate(fit: Dict[str, float], n: np.ndarray, d: np.ndarray, loss: np.ndarray) -> Optional[str]:
    """Why an optimum is one the data do not pin down (a term switched off, an exponent at its bound), or None."""
    floor = DEGENERATE_REL * float(loss.min())
    if fit["E"] < floor:
        return (f"the optimum has E = {fit['E']:.2g} (irreducible loss -> 0): the data do not bound it; more sizes "
                f"or longer runs are needed")
    with np.errstate(over="ignore", under="ignore"):
        n_term, d_term = fit["A"] / n ** fit["alpha"], fit["B"] / d ** fit["beta"]
        scatter = float(np.sqrt(np.mean((np.log(fit["E"] + n_term + d_term) - np.log(loss)) ** 2)))
    for name, term, exp in (("A/N^alpha", n_term, "alpha"), ("B/D^beta", d_term, "beta")):
        axis = "N" if exp == "alpha" else "D"
        if float(np.max(term)) < floor:
            return f"the optimum switches the {name} term off (at most {float(np.max(term)):.2g}): the data do not " \
                   f"show loss falling with {axis}"
        spread = float(np.max(term) - np.min(term)) / float(loss.min())
        if spread <= 2 * scatter:
            return (f"the {name} term moves the loss by {spread:.2%} across the data, within twice the fit's scatter "
                    f"({scatter:.2%}): the data do not show loss falling with {axis}")
        lo, hi = _CHINCHILLA_BOUNDS[3 if exp == "alpha" else 4]
        if fit[exp] <= lo + EXPONENT_EDGE or fit[exp] >= hi - EXPONENT_EDGE:
            return (f"the optimum has {exp} = {fit[exp]:.3g}, at its bound [{lo:g}, {hi:g}]: the data do not "
                    "determine it")
    return None


# --- plots -----------------------------------------------------------------------------------------------------
def _log_ticks(ax, axis: str, lo: float, hi: float, max_ticks: int = 5) -> None:
    """Readable ticks on a log axis over [lo, hi]: decades when it spans two or more, else a few rounded values;
    no minor labels (they are what overlapped)."""
    ticks: List[float] = []
    decades = range(int(np.floor(np.log10(lo))), int(np.ceil(np.log10(hi))) + 1)
    for mults, least in (([1], 2), ([1, 3], 3), ([1, 2, 5], 3)):  # decades, then 1-3, then 1-2-5 series
        inside = [m * 10.0 ** e for e in decades for m in mults if lo <= m * 10.0 ** e <= hi * (1 + 1e-9)]
        if len(inside) >= least:
            step = int(np.ceil(len(inside) / max_ticks))
            ticks = inside[::step]
            break
    if not ticks:  # well under a decade: round values (0.8, 0.9, 1), as on a linear axis
        scale = 10.0 ** np.floor(np.log10(lo))
        raw = MaxNLocator(nbins=max_ticks - 1, steps=[1, 2, 2.5, 5, 10]).tick_values(lo / scale, hi / scale)
        ticks = [float(f"{v * scale:.3g}") for v in raw if lo <= v * scale <= hi * (1 + 1e-9)]
        if len(ticks) < 2:
            ticks = [float(f"{v:.2g}") for v in (lo, hi)]
    fmt = FuncFormatter(lambda v, _: _tick_label(v))
    target = ax.xaxis if axis == "x" else ax.yaxis
    target.set_major_locator(FixedLocator(ticks))
    target.set_major_formatter(fmt)
    target.set_minor_formatter(NullFormatter())


def _tick_label(v: float) -> str:
    if v <= 0:
        return "0"
    exp = int(np.floor(np.log10(v)))
    if -2 <= exp <= 3:
        return f"{v:.3g}"
    mant = v / 10.0 ** exp
    return f"$10^{{{exp}}}$" if abs(mant - 1) < 1e-9 else f"${mant:.2g}\\times10^{{{exp}}}$"


def plot_loss_vs_flops(runs: List[RunPoints], fits: Dict[str, Dict[str, float]], out_dir: str) -> None:
    fig = loss_vs_flops_figure(runs, fits)
    for ext in ("png", "svg"):
        fig.savefig(os.path.join(out_dir, f"loss_vs_flops.{ext}"), dpi=150)
    plt.close(fig)


def loss_vs_flops_figure(runs: List[RunPoints], fits: Dict[str, Dict[str, float]]):
    """The paper's Fig. 3: validation loss against training FLOPs, one curve per run, power-law fits dashed."""
    matplotlib.use("Agg")
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    cmap = plt.get_cmap("viridis")
    ordered = sorted(runs, key=lambda r: r.num_params)
    for i, run in enumerate(ordered):
        color = cmap(0.85 * i / max(len(runs) - 1, 1))
        ax.plot(run.flops, run.loss, "o-", color=color, ms=3, label=f"{run.name} ({format_count(run.num_params)})")
        if run.name in fits:
            c = np.geomspace(run.flops.min(), run.flops.max(), 50)
            ax.plot(c, fits[run.name]["a"] * c ** fits[run.name]["b"], "--", color=color, lw=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    flops = np.concatenate([r.flops for r in runs])
    loss = np.concatenate([r.loss for r in runs])
    _log_ticks(ax, "x", float(flops.min()), float(flops.max()))
    _log_ticks(ax, "y", float(loss.min()), float(loss.max()))
    ax.set_xlabel("Training FLOPs")
    ax.set_ylabel("Validation loss")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7, title="run (non-embedding params)", title_fontsize=7)
    fig.tight_layout()
    return fig


def plot_score_vs_loss(loss: np.ndarray, score: np.ndarray, fit: Dict[str, float], out_dir: str) -> None:
    matplotlib.use("Agg")
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


def analyse(runs: List[RunPoints], out_dir: str, eval_csv: Optional[str] = None, n_boot: int = 100,
            chinchilla_starts: Optional[int] = CHINCHILLA_STARTS, chinchilla: bool = True) -> dict:
    """All fits the data determine, plots and tables. ``chinchilla_starts``: L-BFGS-B starts of the full-data
    Chinchilla fit (None: all 192); each bootstrap resample starts from the full-data optimum plus half as many grid
    points. A fit the data do not determine is left out and ``result["not_fitted"][name]`` says why (one line)."""
    os.makedirs(out_dir, exist_ok=True)
    result: dict = {"power_law": {}, "power_law_ci": {}, "not_fitted": {}}
    for run in runs:
        reason = too_few_points(len(run.loss), POWER_LAW_PARAMS, f"the power law of {run.name}")
        if reason:
            result["not_fitted"][f"power law {run.name}"] = reason
            continue
        result["power_law"][run.name] = fit_power_law(run.flops, run.loss)
        result["power_law_ci"][run.name] = bootstrap(fit_power_law, [run.flops, run.loss], n_boot)
    n = np.concatenate([np.full(len(r.loss), r.num_params) for r in runs])
    d = np.concatenate([r.tokens for r in runs])
    l = np.concatenate([r.loss for r in runs])
    if chinchilla:
        reason = chinchilla_undetermined(n, d)
        fit = None
        if reason is None:
            fit = fit_chinchilla(n, d, l, starts=chinchilla_starts)
            reason = chinchilla_degenerate(fit, n, d, l)
        if reason is not None:
            result["not_fitted"]["chinchilla"] = reason
        else:
            result["chinchilla"] = fit
            # resamples are close to the full data: start from its optimum plus the best few grid points of the
            # resample
            boot_fit = functools.partial(fit_chinchilla, warm_starts=(_chinchilla_theta(fit),),
                                         starts=None if chinchilla_starts is None else max(chinchilla_starts // 2, 1))
            result["chinchilla_ci"] = bootstrap(boot_fit, [n, d, l], max(n_boot // 10, 5))
    if eval_csv:
        with open(eval_csv) as f:
            rows = list(csv.DictReader(f))
        if not rows or not {"val_loss", "score"} <= set(rows[0]):
            raise ValueError(f"{eval_csv}: needs columns val_loss, score")
        x = np.array([float(r["val_loss"]) for r in rows])
        y = np.array([float(r["score"]) for r in rows])
        reason = too_few_points(len(x), LINEAR_PARAMS, "score vs loss")
        if reason:
            result["not_fitted"]["score_vs_loss"] = reason
        else:
            result["score_vs_loss"] = fit_linear(x, y)
            result["score_vs_loss_ci"] = bootstrap(fit_linear, [x, y], n_boot)
            plot_score_vs_loss(x, y, result["score_vs_loss"], out_dir)
    plot_loss_vs_flops(runs, result["power_law"], out_dir)
    atomic_write_text(os.path.join(out_dir, "fits.json"), json.dumps(result, indent=2))
    atomic_write_text(os.path.join(out_dir, "fits.md"), fits_markdown(result))
    return result


def fits_markdown(result: dict) -> str:
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
    for name, reason in result.get("not_fitted", {}).items():
        lines.append(f"\nnot fitted: {name}: {reason}")
    return "\n".join(lines) + "\n"
