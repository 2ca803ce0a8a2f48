"""Scaling-law fits recover the parameters of synthetic runs generated from known laws."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

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
        with open(os.path.join(run, "config.yaml"), "w") as f:
            f.write(f"model:\n  family: qwen2.5\n  size: x\n  num_params: {int(n)}\n")
        with open(os.path.join(run, "metrics.jsonl"), "w") as f:
            for step, d in enumerate(np.geomspace(1e9, 1e12, 12)):
                f.write(json.dumps({"kind": "train", "step": step, "loss": 9.9}) + "\n")
                loss = chinchilla(n, d) * np.exp(noise * rng.standard_normal())
                f.write(json.dumps({"kind": "valid", "step": step, "val_loss": loss, "consumed_tokens": d,
                                    "flops": 6 * n * d}) + "\n")
        dirs.append(run)
    return dirs


@pytest.mark.slow
def test_chinchilla_recovers_known_parameters(tmp_path):
    runs = [sl.read_run_dir(p) for p in write_runs(str(tmp_path))]
    n = np.concatenate([np.full(len(r.loss), r.num_params) for r in runs])
    d = np.concatenate([r.tokens for r in runs])
    fit = sl.fit_chinchilla(n, d, np.concatenate([r.loss for r in runs]))
    for k, v in TRUE.items():
        assert abs(fit[k] - v) / v < 0.02, (k, fit[k], v)


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
