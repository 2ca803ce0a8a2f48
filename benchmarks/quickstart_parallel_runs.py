"""Throughput of the quickstart's training stage: two runs one after the other at all cores' threads (the old
schedule, the baseline) against the same two runs at once with the cores shared out (``plan.process_slots``, what
``stage_train`` does now). Prints both wall times and their ratio.

Needs a quickstart output directory whose data stages are done (``python -m liquid_train.quickstart --out DIR``
builds it; any finished or partial run there is left alone: these runs go to a temporary directory).

Usage: PYTHONPATH=. python benchmarks/quickstart_parallel_runs.py --out quickstart_out [--size qs-l] [--steps 100]
(the two runs are seeds 0 and 1)
"""
from __future__ import annotations

import os
import tempfile
import time

from data_pipeline.threads import available_cores
from liquid_train.quickstart import __main__ as driver
from liquid_train.quickstart.config import QuickstartConfig
from liquid_train.quickstart.console import QuickstartConsole
from liquid_train.quickstart.plan import MIX_1_1_1, RunSpec, process_slots


def _commands(cfg: QuickstartConfig, size: str, steps: int, root: str, tag: str):
    spec = RunSpec(f"bench_{tag}", size, tuple(MIX_1_1_1.items()))
    cfg.train_iters = steps
    base_cfg = driver.base_config()
    jobs = []
    for seed in (0, 1):
        jobs.append((driver._train_cmd(cfg, spec, seed, base_cfg, os.path.join(root, tag, str(seed))),
                     f"bench_{tag}_seed{seed}"))
    return jobs


def main(argv=None) -> int:
    args = driver.parse_run_benchmark_args(driver.run_benchmark_parser(__doc__.splitlines()[0], 100), argv)
    cores = available_cores()
    workers, threads = process_slots(cores, 2)
    cfg = QuickstartConfig(out=args.out)
    with tempfile.TemporaryDirectory() as root:
        con = QuickstartConsole(root, driver.REPO, driver.CHILD_ENV)
        t0 = time.time()
        con.run_parallel(_commands(cfg, args.size, args.steps, root, "serial"), 1, "one at a time",
                         env={"OMP_NUM_THREADS": str(cores)})
        serial = time.time() - t0
        t0 = time.time()
        con.run_parallel(_commands(cfg, args.size, args.steps, root, "shared"), workers, "at once",
                         env={"OMP_NUM_THREADS": str(threads)})
        shared = time.time() - t0
    print(f"two {args.size} 1:1:1 runs of {args.steps} steps on {cores} cores: one after the other at {cores} "
          f"thread(s) {serial:.1f} s; {workers} at once at {threads} thread(s) each {shared:.1f} s; "
          f"speed-up {serial / shared:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
