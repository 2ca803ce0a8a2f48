"""The quickstart's accuracy-vs-loss picture: the paper's "VQAScore is linear in validation loss" in miniature."""
from __future__ import annotations

from typing import List

import matplotlib
import matplotlib.pyplot as plt
import numpy as np

from liquid_train.atomic import atomic_path

SIZE_COLOURS = {"qs-s": "tab:blue", "qs-m": "tab:orange", "qs-l": "tab:green"}


def accuracy_vs_loss_figure(points: List[dict], fit: dict, path: str, cfg_label: str) -> None:
    """Scatter of T2I accuracy against validation T2I loss (one point per checkpoint), coloured by size, with the
    least-squares line and its R²."""
    matplotlib.use("Agg")
    fig, ax = plt.subplots(figsize=(6, 4.2), dpi=120)
    for size, colour in SIZE_COLOURS.items():
        pts = [p for p in points if p["size"] == size]
        if pts:
            ax.scatter([p["val_t2i"] for p in pts], [p["t2i"] for p in pts], color=colour, label=size, s=28,
                       marker="o", alpha=0.85)
    xs = np.linspace(min(p["val_t2i"] for p in points), max(p["val_t2i"] for p in points), 50)
    ax.plot(xs, fit["slope"] * xs + fit["intercept"], color="black", lw=1.2,
            label=f"fit: R² = {fit['r2']:.3f} (n = {fit['n']})")
    ax.set_xlabel("validation T2I loss")
    ax.set_ylabel(f"T2I accuracy (mean of attributes, {cfg_label})")
    ax.set_title("T2I accuracy vs validation loss (mid-run and final checkpoints)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
