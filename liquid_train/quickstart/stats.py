"""Error bars for the quickstart's answers: seed-paired intervals and the rule that reads an answer from one.

Why paired by seed: every condition of a comparison is trained once per seed, and seed ``k`` fixes the data order
and the initialisation of all of them, so the per-seed difference removes the shared part of the run-to-run noise
(the same reasoning as a paired t-test). The interval is the t interval of the mean paired difference; with the
handful of seeds a CPU affords it is wide, and that is the point: an answer is "yes" or "no" only when the interval
excludes zero, "inconclusive" otherwise. With one seed there is no interval, and the answer is the sign of the one
difference, marked "1 seed" so no one reads it as a finding.

A bootstrap interval (percentile, over the paired differences) is reported next to the t interval for readers who
distrust the normal approximation; scipy computes both, this module only decides what to compute and how to read it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
from scipy import stats

CONFIDENCE = 0.95


@dataclass(frozen=True)
class PairedDifference:
    """Summary of per-seed differences ``a - b``: their mean, std (ddof 1) and a 95% t interval (None for 1 seed)."""
    n: int
    mean: float
    std: Optional[float]
    low: Optional[float]
    high: Optional[float]
    boot_low: Optional[float] = None
    boot_high: Optional[float] = None

    def describe(self) -> str:
        if self.n < 2:
            return f"{self.mean:+.3f} (1 seed)"
        return (f"{self.mean:+.3f} ± {self.std:.3f}, 95% CI [{self.low:+.3f}, {self.high:+.3f}] "
                f"({self.n} seeds)")


def mean_std(values: Sequence[float]) -> tuple:
    """Mean and sample standard deviation (ddof 1; None for a single value)."""
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), (float(arr.std(ddof=1)) if arr.size > 1 else None)


def paired_difference(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE,
                      n_boot: int = 2000, seed: int = 0) -> PairedDifference:
    """``a[k] - b[k]`` over seeds ``k``: mean, std, the t interval of the mean and a percentile bootstrap."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"paired samples must be two equal-length non-empty lists, got {a.shape} and {b.shape}")
    d = a - b
    mean, std = mean_std(d)
    if d.size < 2:
        return PairedDifference(1, mean, None, None, None)
    half = stats.t.ppf(0.5 + confidence / 2, df=d.size - 1) * std / math.sqrt(d.size)
    if std == 0.0:
        boot_low = boot_high = mean
    else:
        boot = stats.bootstrap((d,), np.mean, confidence_level=confidence, n_resamples=n_boot, method="percentile",
                               random_state=np.random.default_rng(seed))
        boot_low, boot_high = float(boot.confidence_interval.low), float(boot.confidence_interval.high)
    return PairedDifference(int(d.size), mean, std, mean - half, mean + half, boot_low, boot_high)


def answer(diff: PairedDifference) -> str:
    """"yes" when the interval lies above zero (the effect asked about is there), "no" when below, "inconclusive"
    when it contains zero; a single seed gives the sign, marked as such."""
    if diff.n < 2:
        return ("yes" if diff.mean > 0 else "no") + " (1 seed)"
    if diff.low > 0:
        return "yes"
    if diff.high < 0:
        return "no"
    return "inconclusive"


def both(answers: Sequence[str]) -> str:
    """The answer to a question that needs several effects at once (loss falls S -> M and M -> L): "yes" only if
    all are, "no" if any is, else "inconclusive"; single-seed marks carry over."""
    marks = " (1 seed)" if any(a.endswith("(1 seed)") for a in answers) else ""
    plain = [a.replace(" (1 seed)", "") for a in answers]
    if all(a == "yes" for a in plain):
        return "yes" + marks
    if any(a == "no" for a in plain):
        return "no" + marks
    return "inconclusive" + marks


def linear_fit(x: Sequence[float], y: Sequence[float]) -> dict:
    """Least-squares line ``y = slope * x + intercept`` with its R² (the paper: VQAScore linear in val loss)."""
    fit = stats.linregress(np.asarray(x, dtype=float), np.asarray(y, dtype=float))
    return {"slope": float(fit.slope), "intercept": float(fit.intercept), "r2": float(fit.rvalue ** 2),
            "n": len(x)}
