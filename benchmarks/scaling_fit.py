"""Chinchilla fit: the exhaustive 192-start L-BFGS-B search vs the fast path (vectorised grid pass + the 8 best
starts), on the same synthetic data in the same process; prints both times, the ratio, and whether both reach the
same optimum. Also times the bootstrap resamples as ``analyse`` fits them (warm start + 4 grid points), and the fast
path with OpenBLAS's thread pool left as it is (what dominated before on a loaded machine).

    python benchmarks/scaling_fit.py [--runs 4] [--points 12] [--noise 0.01] [--repeats 3] [--boot 5]

Data: L = 1.69 + 406.4/N^0.34 + 410.7/D^0.28 (Hoffmann et al. 2022) on N in [5e7, 4e9], D in [1e9, 1e12], times
exp(noise * standard normal).
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import time

import numpy as np
from threadpoolctl import threadpool_info

from liquid_train.planning import scaling_laws as sl


def timed(fn, repeats):
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("--points", type=int, default=12)
    ap.add_argument("--noise", type=float, default=0.01)
    ap.add_argument("--repeats", type=int, default=3, help="best-of for the fast path (the exhaustive runs once)")
    ap.add_argument("--boot", type=int, default=5, help="bootstrap resamples to time")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    n = np.repeat(np.geomspace(5e7, 4e9, args.runs), args.points)
    d = np.tile(np.geomspace(1e9, 1e12, args.points), args.runs)
    loss = (1.69 + 406.4 / n ** 0.34 + 410.7 / d ** 0.28) * np.exp(args.noise * rng.standard_normal(len(n)))
    print(f"{args.runs} runs x {args.points} points, noise {args.noise}, {len(sl._CHINCHILLA_GRID)} grid points")

    t_grid, _ = timed(lambda: sl._chinchilla_objective_many(sl._CHINCHILLA_GRID, np.log(n), np.log(d), np.log(loss),
                                                            1e-3), 20)
    t_ex, ex = timed(lambda: sl.fit_chinchilla(n, d, loss, starts=None), 1)
    t_fast, fast = timed(lambda: sl.fit_chinchilla(n, d, loss), args.repeats)
    guard = sl._single_thread_blas
    sl._single_thread_blas = contextlib.nullcontext  # BLAS threads as the process has them
    try:
        t_threads, _ = timed(lambda: sl.fit_chinchilla(n, d, loss), 1)
    finally:
        sl._single_thread_blas = guard
    rel = abs(fast["objective"] - ex["objective"]) / ex["objective"]
    dtheta = float(np.abs(sl._chinchilla_theta(fast) - sl._chinchilla_theta(ex)).max())
    print(f"grid objective pass (192 points, vectorised): {t_grid * 1e3:.2f} ms")
    print(f"exhaustive (192 starts): {t_ex:.2f} s  objective {ex['objective']:.12e}")
    print(f"fast ({sl.CHINCHILLA_STARTS} starts):         {t_fast:.3f} s  objective {fast['objective']:.12e}")
    print(f"ratio exhaustive/fast: {t_ex / t_fast:.1f}x; objective rel. diff {rel:.1e}, max |d theta| {dtheta:.1e} "
          f"-> {'SAME optimum' if rel <= 1e-9 and dtheta <= 1e-4 else 'DIFFERENT optimum'}")


    blas = sum(1 for p in threadpool_info() if p.get("user_api") == "blas")
    print(f"fast, BLAS threads not limited to 1 ({blas} BLAS libraries loaded): {t_threads:.3f} s")
    k = max(sl.CHINCHILLA_STARTS // 2, 1)
    warm = functools.partial(sl.fit_chinchilla, starts=k, warm_starts=(sl._chinchilla_theta(fast),))
    t0 = time.perf_counter()
    sl.bootstrap(warm, [n, d, loss], args.boot, seed=1)
    t_boot = time.perf_counter() - t0
    t0 = time.perf_counter()
    sl.bootstrap(sl.fit_chinchilla, [n, d, loss], args.boot, seed=1)
    t_boot_cold = time.perf_counter() - t0
    print(f"bootstrap, {args.boot} resamples: warm start + {k} grid points {t_boot:.2f} s, "
          f"{sl.CHINCHILLA_STARTS} grid points {t_boot_cold:.2f} s")


if __name__ == "__main__":
    main()
