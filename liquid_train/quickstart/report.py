"""The paper's three questions, asked of the quickstart's runs and answered from what was measured.

Each answer is a comparison of two or three measured numbers, printed with the numbers, so a reader can see how
close it was; nothing here is tuned or thresholded toward an answer. A question whose runs are missing (``--short``)
is answered "not measured".

1. Does validation loss fall with model size? (1:1:1 runs at three sizes; the paper's Fig. 3)
2. Does adding I2T data raise T2I accuracy, and adding T2I data raise I2T accuracy? (1:1:2 and 1:2:1 vs 1:1:1 at
   the middle size; the paper's Table 1, where "add I2T" improved generation and "add T2I" understanding)
3. Does mixed training cost less text loss at the larger size? (text-only vs mixed validation text loss at the
   smallest and largest size; the paper's Table 4: the language gap shrinks with scale)
"""
from __future__ import annotations

from typing import Dict, List, Optional

from liquid_train.quickstart.scene import ATTRIBUTES


def attribute_mean(scores: Dict[str, float]) -> float:
    return sum(scores[a] for a in ATTRIBUTES) / len(ATTRIBUTES)


def _fmt(v: Optional[float]) -> str:
    return "-" if v is None else f"{v:.3f}"


def answer_questions(runs: Dict[str, dict], accuracy: Dict[str, dict]) -> List[Dict[str, str]]:
    """``runs``: name -> {"val": overall val loss, "text": val text loss, ...}; ``accuracy``: name -> {"t2i": scores,
    "i2t": scores}. Returns one {question, measured, answer} per question."""
    out = []
    sizes = [runs.get(n, {}).get("val") for n in ("s_1-1-1", "m_1-1-1", "l_1-1-1")]
    if all(v is not None for v in sizes):
        falls = sizes[0] > sizes[1] > sizes[2]
        out.append({"question": "validation loss falls with size (1:1:1, S -> M -> L)",
                    "measured": " -> ".join(_fmt(v) for v in sizes),
                    "answer": "yes" if falls else "no"})
    else:
        out.append({"question": "validation loss falls with size (1:1:1, S -> M -> L)", "measured": "-",
                    "answer": "not measured"})
    for more, task, label in (("m_1-1-2", "t2i", "adding I2T data (1:1:2) raises T2I accuracy"),
                              ("m_1-2-1", "i2t", "adding T2I data (1:2:1) raises I2T accuracy")):
        if more in accuracy and "m_1-1-1" in accuracy:
            base, with_more = attribute_mean(accuracy["m_1-1-1"][task]), attribute_mean(accuracy[more][task])
            out.append({"question": label, "measured": f"1:1:1 {base:.3f} vs {more[2:]} {with_more:.3f}",
                        "answer": "yes" if with_more > base else "no"})
        else:
            out.append({"question": label, "measured": "-", "answer": "not measured"})
    gaps = []
    for size in ("s", "l"):
        mixed, text_only = runs.get(f"{size}_1-1-1", {}).get("text"), runs.get(f"{size}_text", {}).get("text")
        gaps.append(None if mixed is None or text_only is None else mixed - text_only)
    label = "mixed training costs less text loss at the larger size (mixed - text-only val text loss, S vs L)"
    if all(g is not None for g in gaps):
        out.append({"question": label, "measured": f"S {gaps[0]:+.3f} vs L {gaps[1]:+.3f}",
                    "answer": "yes" if gaps[1] < gaps[0] else "no"})
    else:
        out.append({"question": label, "measured": "-", "answer": "not measured"})
    return out


def results_markdown(runs: Dict[str, dict], accuracy: Dict[str, dict], answers: List[Dict[str, str]],
                     timings: Dict[str, float], chance: Dict[str, float]) -> str:
    lines = ["# Quickstart results", "", "## Runs (final train loss, last validation losses)", "",
             "| run | steps | train loss | val | val text | val t2i | val i2t |", "|---|---|---|---|---|---|---|"]
    for name, r in runs.items():
        lines.append(f"| {name} | {r.get('steps')} | {_fmt(r.get('loss'))} | {_fmt(r.get('val'))} | "
                     f"{_fmt(r.get('text'))} | {_fmt(r.get('t2i'))} | {_fmt(r.get('i2t'))} |")
    if accuracy:
        cols = (*ATTRIBUTES, "all")
        lines += ["", "## T2I and I2T accuracy per attribute (analyser / caption parser)", ""]
        if "vq_ceiling" in accuracy:
            lines += ["`vq_ceiling`: the analyser on VQ round trips of the same scenes, the most any T2I model can "
                      "score with this tokenizer.", ""]
        lines += ["| run | task | " + " | ".join(cols) + " | mean of attributes |",
                  "|---|---|" + "---|" * (len(cols) + 1)]
        for name, acc in accuracy.items():
            for task in ("t2i", "i2t"):
                if task not in acc:
                    continue
                s = acc[task]
                lines.append(f"| {name} | {task} | " + " | ".join(f"{s[c]:.3f}" for c in cols)
                             + f" | {attribute_mean(s):.3f} |")
        lines.append("| chance | - | " + " | ".join(f"{chance[c]:.3f}" for c in cols)
                     + f" | {attribute_mean(chance):.3f} |")
    lines += ["", "## The paper's questions in miniature", "", "| question | measured | answer |", "|---|---|---|"]
    lines += [f"| {a['question']} | {a['measured']} | {a['answer']} |" for a in answers]
    lines += ["", "## Stage timings (s)", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in timings.items()]
    lines.append(f"| total | {sum(timings.values()):.1f} |")
    return "\n".join(lines) + "\n"
