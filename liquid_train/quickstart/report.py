"""The paper's questions, asked of the quickstart's runs and answered from intervals over seeds.

Each answer is read from the seed-paired interval of the difference the question is about (``stats.py``): "yes" or
"no" only when the 95% interval excludes zero, "inconclusive" otherwise, "(1 seed)" when there was one seed and so no
interval. Nothing here is tuned or thresholded toward an answer. A question whose runs are missing (``--short``) is
answered "not measured". T2I answers, and the accuracy-vs-loss fit, use guidance scale 1 (``ANSWER_CFG``); every scale
is in the tables. Why not the public default 7: measured on the first full run, CFG 7 brought every model's T2I
accuracy down to chance (0.20-0.25 against 0.23-0.43 at CFG 1), so a question answered there would compare noise.

1. Does validation loss fall with model size? (1:1:1 runs at three sizes; the paper's Fig. 3)
2. Does adding I2T data raise T2I accuracy, and adding T2I data raise I2T accuracy? (1:1:2 and 1:2:1 vs 1:1:1 at
   the middle size; the paper's Table 1, where "add I2T" improved generation and "add T2I" understanding)
3. Does mixed training cost less text loss at the larger size? (text-only vs mixed validation text loss at the
   smallest and largest size; the paper's Table 4: the language gap shrinks with scale)
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence

from liquid_train.quickstart.evaluate import CFG_SCALES, cfg_key
from liquid_train.quickstart.plan import RUNS, SIZE_SERIES
from liquid_train.quickstart.scene import ATTRIBUTES
from liquid_train.quickstart.stats import answer, both, mean_std, paired_difference

ANSWER_SCALE = 1.0
ANSWER_CFG = cfg_key(ANSWER_SCALE)
"""The guidance scale T2I questions are answered at (see the module docstring)."""


def attribute_mean(scores: Dict[str, float]) -> float:
    return sum(scores[a] for a in ATTRIBUTES) / len(ATTRIBUTES)


def _fmt(v: Optional[float]) -> str:
    return "-" if v is None else f"{v:.3f}"


def _fmt_ms(values: Sequence[Optional[float]]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    mean, std = mean_std(values)
    return f"{mean:.3f}" if std is None else f"{mean:.3f} ± {std:.3f}"


def per_seed(table: Dict[str, dict], spec: str, seeds: Sequence[int], get: Callable[[dict], float]) -> Optional[list]:
    """``get`` of run ``spec`` at every seed, or None if any seed's run is missing."""
    out = []
    for seed in seeds:
        row = table.get(f"{spec}_seed{seed}")
        value = None if row is None else get(row)
        if value is None:
            return None
        out.append(value)
    return out


def _t2i(row: dict) -> Optional[float]:
    scores = row.get("t2i", {}).get(ANSWER_CFG)
    return None if scores is None else attribute_mean(scores)


def _i2t(row: dict) -> Optional[float]:
    return attribute_mean(row["i2t"]) if "i2t" in row else None


def answer_questions(runs: Dict[str, dict], accuracy: Dict[str, dict], seeds: Sequence[int]) -> List[Dict[str, str]]:
    """``runs``: run name (``<spec>_seed<k>``) -> {"val": overall val loss, "text": val text loss, ...};
    ``accuracy``: run name -> {"t2i": {cfg: scores}, "i2t": scores}. One {question, measured, answer} each."""
    out = []
    label = "validation loss falls with size (1:1:1, S -> M -> L)"
    vals = [per_seed(runs, name, seeds, lambda r: r.get("val")) for name in SIZE_SERIES]
    if all(v is not None for v in vals):
        steps = [paired_difference(vals[0], vals[1]), paired_difference(vals[1], vals[2])]
        out.append({"question": label,
                    "measured": " -> ".join(_fmt_ms(v) for v in vals)
                    + f"; S - M {steps[0].describe()}; M - L {steps[1].describe()}",
                    "answer": both([answer(d) for d in steps])})
    else:
        out.append({"question": label, "measured": "-", "answer": "not measured"})
    for more, get, label in (("m_1-1-2", _t2i, "adding I2T data (1:1:2) raises T2I accuracy (CFG 1)"),
                             ("m_1-2-1", _i2t, "adding T2I data (1:2:1) raises I2T accuracy")):
        base, with_more = per_seed(accuracy, "m_1-1-1", seeds, get), per_seed(accuracy, more, seeds, get)
        if base is not None and with_more is not None:
            d = paired_difference(with_more, base)
            out.append({"question": label, "measured": f"1:1:1 {_fmt_ms(base)} vs {more[2:]} {_fmt_ms(with_more)}; "
                                                       f"difference {d.describe()}", "answer": answer(d)})
        else:
            out.append({"question": label, "measured": "-", "answer": "not measured"})
    label = "mixed training costs less text loss at the larger size (mixed - text-only val text loss, S vs L)"
    gaps = []
    for size in ("s", "l"):
        mixed = per_seed(runs, f"{size}_1-1-1", seeds, lambda r: r.get("text"))
        text_only = per_seed(runs, f"{size}_text", seeds, lambda r: r.get("text"))
        gaps.append(None if mixed is None or text_only is None else [m - t for m, t in zip(mixed, text_only)])
    if all(g is not None for g in gaps):
        d = paired_difference(gaps[0], gaps[1])
        out.append({"question": label, "measured": f"S {_fmt_ms(gaps[0])} vs L {_fmt_ms(gaps[1])}; "
                                                   f"S - L {d.describe()}", "answer": answer(d)})
    else:
        out.append({"question": label, "measured": "-", "answer": "not measured"})
    return out


def _spec_names(table: Dict[str, dict]) -> List[str]:
    present = {name.rsplit("_seed", 1)[0] for name in table}
    return [spec.name for spec in RUNS if spec.name in present]


def results_markdown(runs: Dict[str, dict], accuracy: Dict[str, dict], answers: List[Dict[str, str]],
                     timings: Dict[str, float], chance: Dict[str, float], seeds: Sequence[int],
                     vq_ceiling: Optional[Dict[str, float]] = None, loss_fit: Optional[dict] = None) -> str:
    n = len(seeds)
    lines = ["# Quickstart results", "", f"{n} seed{'s' if n > 1 else ''} per run (data order and initialisation); "
             "values are mean ± std over seeds" + ("." if n > 1 else " (one seed: no std)."), "",
             "## Runs (final train loss, last validation losses)", "",
             "| run | steps | train loss | val | val text | val t2i | val i2t |", "|---|---|---|---|---|---|---|"]
    for name in _spec_names(runs):
        rows = [runs[f"{name}_seed{s}"] for s in seeds if f"{name}_seed{s}" in runs]
        cells = [_fmt_ms([r.get(k) for r in rows]) for k in ("loss", "val", "text", "t2i", "i2t")]
        lines.append(f"| {name} | {rows[0].get('steps')} | " + " | ".join(cells) + " |")
    cols = (*ATTRIBUTES, "all")
    if vq_ceiling is not None:
        lines += ["", "## The tokenizer's ceiling: VQ round trip of the evaluation scenes", "",
                  "The analyser on encode -> decode of the same scenes: the most any T2I model can score with this "
                  "tokenizer.", "", "| " + " | ".join(cols) + " | mean of attributes |",
                  "|" + "---|" * (len(cols) + 1), "| " + " | ".join(f"{vq_ceiling[c]:.3f}" for c in cols)
                  + f" | {attribute_mean(vq_ceiling):.3f} |"]
    if accuracy:
        scales = [cfg_key(s) for s in CFG_SCALES]
        lines += ["", "## T2I and I2T accuracy (mean of attributes; analyser / caption parser)", "",
                  f"T2I at guidance scales {', '.join(f'{s:g}' for s in CFG_SCALES)} (7 is the public Liquid "
                  "default); I2T greedy. Chance (a uniform guess): " f"{attribute_mean(chance):.3f}.", "",
                  "| run | " + " | ".join(f"T2I {k}" for k in scales) + " | I2T |", "|---|" + "---|" * (len(scales) + 1)]
        for name in _spec_names(accuracy):
            rows = [accuracy[f"{name}_seed{s}"] for s in seeds if f"{name}_seed{s}" in accuracy]
            t2i = [_fmt_ms([attribute_mean(r["t2i"][k]) for r in rows if k in r.get("t2i", {})]) for k in scales]
            i2t = _fmt_ms([attribute_mean(r["i2t"]) for r in rows if "i2t" in r])
            lines.append(f"| {name} | " + " | ".join(t2i) + f" | {i2t} |")
        lines += ["", f"### Per attribute (T2I at {ANSWER_CFG}, I2T), mean over seeds", "",
                  "| run | task | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
        for name in _spec_names(accuracy):
            rows = [accuracy[f"{name}_seed{s}"] for s in seeds if f"{name}_seed{s}" in accuracy]
            for task, get in (("t2i", lambda r: r.get("t2i", {}).get(ANSWER_CFG)), ("i2t", lambda r: r.get("i2t"))):
                got = [get(r) for r in rows if get(r) is not None]
                if got:
                    lines.append(f"| {name} | {task} | " + " | ".join(
                        f"{sum(g[c] for g in got) / len(got):.3f}" for c in cols) + " |")
        lines.append("| chance | - | " + " | ".join(f"{chance[c]:.3f}" for c in cols) + " |")
    if loss_fit is not None:
        lines += ["", "## T2I accuracy against validation T2I loss (the paper: VQAScore linear in val loss, "
                  "R² 0.905)", "", f"{loss_fit['n']} checkpoints (sizes, ratios, seeds; mid-run and final), T2I at "
                  f"{ANSWER_CFG}: accuracy = {loss_fit['slope']:.3f} x loss {loss_fit['intercept']:+.3f}, "
                  f"R² = {loss_fit['r2']:.3f} (`pictures/t2i_accuracy_vs_val_loss.png`)."]
    lines += ["", "## The paper's questions in miniature", "",
              "Answers are read from the seed-paired 95% interval of the difference: yes / no only when it excludes "
              "zero.", "", "| question | measured | answer |", "|---|---|---|"]
    lines += [f"| {a['question']} | {a['measured']} | {a['answer']} |" for a in answers]
    lines += ["", "## Stage timings (s)", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in timings.items()]
    lines.append(f"| total | {sum(timings.values()):.1f} |")
    return "\n".join(lines) + "\n"
