"""The GPU suite: every GPU-only claim of the project, on one GPU, in under 8 minutes (``liquid_train.gpu_suite``).

    python benchmarks/gpu_suite.py --out DIR [--only numerics,mfu] [--skip fp8] [--budget-s 480]
    python benchmarks/gpu_suite.py --dry-run --out DIR      # CPU, tiny shapes: the test suite runs this

Sections: numerics (TE spec vs local spec; packed micro-batch vs its samples alone for every attention backend;
flex vs local gradients), fp8 (FP8 vs BF16 loss curves and tokens/s, TE only), mfu (tokens/s, MFU by the project's
formula, peak memory vs the planner), vq (Chameleon VQGAN images/s at 512 px by batch size vs one image per call,
host decode rate by workers), gemma2_attention (FlexAttention vs exact at seq 4096). Writes ``DIR/results.json``
and ``DIR/results.md`` (device, torch, CUDA, TE and megatron-core versions, each section ran / skipped / failed).

On a bare GPU machine without megatron-core: ``python benchmarks/gpu_suite_wheels.py`` (here, with network)
downloads the wheels to carry and prints the command to run there. Exit status: 0, 1 if a section failed, 2 for
a bad request (one line).
"""
from __future__ import annotations

import argparse
import os
import sys

from data_pipeline.threads import available_cores
from liquid_train.gpu_suite.runner import SECTIONS, SUITE_BUDGET_S, SuiteError, run_suite, select


def _names(text):
    return [n.strip() for n in text.split(",") if n.strip()] if text else None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="directory for results.json and results.md")
    ap.add_argument("--dry-run", action="store_true", help="run the same code on CPU at tiny shapes")
    ap.add_argument("--only", help=f"comma-separated sections to run ({', '.join(SECTIONS)})")
    ap.add_argument("--skip", help="comma-separated sections to leave out")
    ap.add_argument("--budget-s", type=float, default=SUITE_BUDGET_S, help="time budget of the whole suite")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: the cores available)")
    ap.add_argument("--work-dir", default=None, help="scratch space (default: the system temp directory)")
    args = ap.parse_args(argv)
    try:
        sections = select(_names(args.only), _names(args.skip))
        if not sections:
            raise SuiteError("--only / --skip leave no section to run")
        try:
            os.makedirs(args.out, exist_ok=True)
        except OSError as exc:
            raise SuiteError(f"--out {args.out}: cannot create it ({exc.strerror}); choose a writable directory")
        if not os.access(args.out, os.W_OK):
            raise SuiteError(f"--out {args.out}: not writable; choose a writable directory")
        threads = args.threads or available_cores()
        if threads < 1:
            raise SuiteError(f"--threads {threads}: must be >= 1")
        record = run_suite(args.out, sections, args.dry_run, threads, args.budget_s, args.work_dir)
    except SuiteError as exc:
        print(f"gpu_suite: {exc}", file=sys.stderr)
        return 2
    failed = [name for name, s in record["sections"].items() if s["status"].startswith("failed")]
    print(f"gpu_suite: {len(record['sections']) - len(failed)} sections reported, {len(failed)} failed "
          f"({', '.join(failed) or 'none'}); {record['seconds']:.0f} s; results in {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
