"""Scaling-law fits recover the parameters of synthetic runs generated from known laws."""
import json
import os
import subprocess
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tools"))
import scaling_laws as sl  # noqa: E402

TRUE = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}


def chinchilla(n, d):
    return TRUE["E"] + TRUE["A"] / n ** TRUE["alpha"] + TRUE["B"] / d ** TRUE["beta"]


def write_runs(root, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    dirs = []
    for n in (5e7, 2e8, 1e9, 4e9):
        run = os.path.join(root, f"n{n:.0e}")
        os.makedirs(run)
        with open(os.path.join(run, "run_info.json"), "w") as f:
            json.dump({"num_params": int(n)}, f)
        with open(os.path.join(run, "metrics.jsonl"), "w") as f:
            for step, d in enumerate(np.geomspace(1e9, 1e12, 12)):
                f.write(json.dumps({"kind": "train", "step": step, "loss": 9.9}) + "\n")
                loss = chinchilla(n, d) * np.exp(noise * rng.standard_normal())
                f.write(json.dumps({"kind": "valid", "step": step, "val_loss": loss, "consumed_tokens": d,
                                    "flops": 6 * n * d}) + "\n")
        dirs.append(run)
    return dirs


def pooled(dirs):
    runs = [sl.read_run_dir(p) for p in dirs]
    n = np.concatenate([np.full(len(r.loss), r.num_params) for r in runs])
    return n, np.concatenate([r.tokens for r in runs]), np.concatenate([r.loss for r in runs])


def test_chinchilla_recovers_known_parameters(tmp_path):
    n, d, loss = pooled(write_runs(str(tmp_path)))
    fit = sl.fit_chinchilla(n, d, loss)
    for k, v in TRUE.items():
        assert abs(fit[k] - v) / v < 0.02, (k, fit[k], v)


def test_fast_path_finds_the_exhaustive_optimum(tmp_path):
    """8 best grid points by initial objective == all 192 starts (Hoffmann et al.'s exhaustive search), on noisy
    data where the optimum is not an exact interpolation (objective ~3e-4, not ~0)."""
    n, d, loss = pooled(write_runs(str(tmp_path), noise=0.01, seed=1))
    exhaustive = sl.fit_chinchilla(n, d, loss, starts=None)
    fast = sl.fit_chinchilla(n, d, loss)
    assert exhaustive["objective"] > 1e-5
    assert abs(fast["objective"] - exhaustive["objective"]) <= 1e-9 * exhaustive["objective"], (fast, exhaustive)
    # parameters in the optimiser's coordinates: log A, log B, log E (i.e. relative), alpha, beta
    diff = np.abs(sl._chinchilla_theta(fast) - sl._chinchilla_theta(exhaustive))
    assert diff.max() <= 1e-4, (diff, fast, exhaustive)
    # a bootstrap resample, warm-started from the full-data optimum as analyse() does, reaches at least the
    # optimum of its own 8-start search
    idx = np.random.default_rng(0).integers(0, len(n), len(n))
    warm = sl.fit_chinchilla(n[idx], d[idx], loss[idx], starts=4, warm_starts=(sl._chinchilla_theta(fast),))
    cold = sl.fit_chinchilla(n[idx], d[idx], loss[idx])
    assert warm["objective"] <= cold["objective"] * (1 + 1e-9)
    assert np.abs(sl._chinchilla_theta(warm) - sl._chinchilla_theta(cold)).max() <= 1e-4


def test_objective_vectorised_and_gradient_agree():
    rng = np.random.default_rng(0)
    n = np.repeat([5e7, 2e8, 1e9], 6)
    d = np.tile(np.geomspace(1e9, 1e12, 6), 3)
    args = (np.log(n), np.log(d), np.log(chinchilla(n, d)) + 0.01 * rng.standard_normal(len(n)), 1e-3)
    many = sl._chinchilla_objective_many(sl._CHINCHILLA_GRID, *args)
    one = np.array([sl._chinchilla_objective(t, *args)[0] for t in sl._CHINCHILLA_GRID])
    np.testing.assert_allclose(many, one, rtol=1e-12)
    # against scipy's logsumexp (what the objective used before) and central differences of the gradient
    from scipy.special import huber, logsumexp
    for theta in (np.array([6.0, 6.0, 0.5, 0.34, 0.28]), sl._CHINCHILLA_GRID[37]):
        a0, b0, e, alpha, beta = theta
        ref = huber(1e-3, logsumexp([a0 - alpha * args[0], b0 - beta * args[1], np.full(len(n), e)], axis=0)
                    - args[2]).sum()
        f, g = sl._chinchilla_objective(theta, *args)
        assert abs(f - ref) <= 1e-12 * ref
        h = 1e-7
        num = [(sl._chinchilla_objective(theta + h * np.eye(5)[i], *args)[0]
                - sl._chinchilla_objective(theta - h * np.eye(5)[i], *args)[0]) / (2 * h) for i in range(5)]
        np.testing.assert_allclose(g, num, rtol=1e-4, atol=1e-9)


def test_cli_writes_all_outputs(tmp_path):
    dirs = write_runs(str(tmp_path / "runs"), noise=0.005)[:3]
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, os.path.join(REPO, "tools", "scaling_laws.py"), *dirs, "--out", str(out),
                           "--bootstrap", "20"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    for f in ("fits.json", "fits.md", "loss_vs_flops.png", "loss_vs_flops.svg"):
        assert (out / f).stat().st_size > 0, f
    res = json.loads((out / "fits.json").read_text())
    assert set(res) == {"power_law", "power_law_ci", "chinchilla", "chinchilla_ci"}
    assert set(res["chinchilla"]) == {"E", "A", "B", "alpha", "beta", "objective"}
    assert set(res["chinchilla_ci"]) == set(res["chinchilla"])
    for k, (lo, hi) in res["chinchilla_ci"].items():
        assert lo <= hi, k
    assert "| chinchilla | alpha |" in (out / "fits.md").read_text()


def test_power_law_and_linear_fit():
    c = np.geomspace(1e18, 1e22, 20)
    fit = sl.fit_power_law(c, 35.0 * c ** -0.05)
    assert abs(fit["a"] - 35.0) / 35 < 1e-6 and abs(fit["b"] + 0.05) < 1e-9
    x = np.linspace(4.9, 6.5, 10)
    lin = sl.fit_linear(x, 2.5 - 0.3 * x)
    assert abs(lin["slope"] + 0.3) < 1e-9 and lin["r2"] > 0.999999


def test_missing_num_params_is_a_clear_error(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    (run / "metrics.jsonl").write_text(json.dumps({"kind": "valid", "step": 1, "val_loss": 3.0,
                                                   "consumed_tokens": 10}) + "\n")
    try:
        sl.read_run_dir(str(run))
    except ValueError as e:
        assert "num_params" in str(e)
    else:
        raise AssertionError("expected a ValueError")
