"""Runs the suite's sections in order within one time budget and records each outcome.

Each section has its own budget (seconds on one H100/H200, first compiles included); together they fit the suite's
8 minutes. A section that would start with less than half its budget left is skipped with that reason, so a run
always ends with a report. The report is rewritten after every section: a run killed by its caller's timeout still
leaves the sections it finished.

A dry run (``--dry-run``, on CPU) runs the same section code at tiny shapes. Its sections are reported
``skipped: dry run ...``, what the code computed is kept under ``exercised`` with the pass/fail verdicts removed: a
dry run proves the code runs, never a GPU claim.
"""
from __future__ import annotations

import os
import tempfile
import time
import traceback
from datetime import datetime, timezone
from typing import Callable, Dict, Iterable, Optional, Tuple

import torch

from liquid_train.gpu_suite import attention, fp8, mfu, numerics, report, vq
from liquid_train.gpu_suite.context import REFUSED, Context, Skip, forbid_network, free_memory
from liquid_train.parallel import destroy_parallel, initialize_parallel

SUITE_BUDGET_S = 480.0
SECTIONS: Dict[str, Tuple[Callable[[Context], Dict], float]] = {
    "numerics": (numerics.run, 150.0),
    "fp8": (fp8.run, 90.0),  # Transformer Engine only: seconds without it
    "mfu": (mfu.run, 150.0),
    "vq": (vq.run, 50.0),
    "gemma2_attention": (attention.run, 40.0),
}
DRY_RUN_REASON = "dry run on CPU: the code ran at tiny shapes (see 'exercised'); nothing was measured on a GPU"
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
               "WANDB_MODE": "disabled"}


class SuiteError(ValueError):
    """A request the suite cannot carry out (one line for the person running it)."""


def select(only: Optional[Iterable[str]], skip: Optional[Iterable[str]]) -> Tuple[str, ...]:
    for names, flag in ((only, "--only"), (skip, "--skip")):
        unknown = sorted(set(names or ()) - set(SECTIONS))
        if unknown:
            raise SuiteError(f"{flag}: unknown section(s) {unknown}; known: {list(SECTIONS)}")
    chosen = [n for n in SECTIONS if (not only or n in only) and n not in set(skip or ())]
    return tuple(chosen)


def _without_verdicts(node):
    """A dry run's results: no pass/fail verdicts, and parts that ran say ``exercised`` (on CPU, tiny shapes)."""
    if isinstance(node, dict):
        return {k: ("exercised" if k == "status" and v == "ran" else _without_verdicts(v))
                for k, v in node.items() if k != "ok"}
    if isinstance(node, list):
        return [_without_verdicts(v) for v in node]
    return node


def run_section(ctx: Context, name: str, fn: Callable[[Context], Dict], budget: float) -> Dict:
    if not ctx.dry_run and ctx.left() < budget / 2:
        return {"status": f"skipped: {ctx.left():.0f} s left of the suite's budget, the section needs about "
                          f"{budget:.0f} s (rerun it alone with --only {name})", "seconds": 0.0, "budget_s": budget}
    ctx.say(f"section {name} (budget {budget:.0f} s)")
    t0 = time.monotonic()
    status, results = "ran", {}
    try:
        results = fn(ctx)
    except Skip as skip:
        status, results = f"skipped: {skip}", skip.results
    except Exception as exc:  # one section's failure is recorded; the others still run
        status = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
        results = {"traceback": traceback.format_exc(limit=12)}
    finally:
        free_memory(ctx)
    seconds = time.monotonic() - t0
    entry = {"status": status, "seconds": seconds, "budget_s": budget, "over_budget": seconds > budget}
    if ctx.dry_run and not status.startswith("failed"):
        own = status[len("skipped: "):] if status.startswith("skipped: ") else None
        entry["status"] = f"skipped: {DRY_RUN_REASON}" + (f"; on a GPU: {own}" if own else "")
        entry["exercised"] = _without_verdicts(results)
    else:
        entry["results"] = results
    ctx.say(f"section {name}: {entry['status'][:160]} ({seconds:.0f} s)")
    return entry


def run_suite(out_dir: str, sections: Tuple[str, ...], dry_run: bool, threads: int,
              budget_s: float = SUITE_BUDGET_S, work_dir: Optional[str] = None) -> Dict:
    """Run the chosen sections; returns the record also written to ``out_dir`` (results.json, results.md)."""
    if not dry_run and not torch.cuda.is_available():
        raise SuiteError("no CUDA GPU is available here; run with --dry-run on a CPU machine")
    os.environ.update(OFFLINE_ENV)
    forbid_network()
    torch.set_num_threads(threads)
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="gpu_suite-", dir=work_dir) as scratch:
        ctx = Context(dry_run=dry_run, device=torch.device("cpu" if dry_run else "cuda"), work_dir=scratch,
                      deadline=start + budget_s, threads=threads)
        record = {"dry_run": dry_run, "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  "budget_s": budget_s, "seconds": 0.0, "environment": report.environment(), "sections": {}}
        initialize_parallel(1, 1, seed=1234)
        try:
            for name, (fn, budget) in SECTIONS.items():
                if name not in sections:
                    record["sections"][name] = {"status": "skipped: not selected (--only / --skip)",
                                                "seconds": 0.0, "budget_s": budget}
                    continue
                record["sections"][name] = run_section(ctx, name, fn, budget)
                record["seconds"] = time.monotonic() - start
                report.write(out_dir, record)
        finally:
            destroy_parallel()
        record.update(seconds=time.monotonic() - start, network_refused=list(REFUSED),
                      imported_distributions=report.imported_distributions(), log=ctx.log)
        report.write(out_dir, record)
    return record
