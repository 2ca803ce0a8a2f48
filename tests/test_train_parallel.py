"""TP=2, PP=2 (1F1B and interleaved) and DP=2 runs (two gloo processes each) follow the single-process loss curve.

All runs start from the same model checkpoint saved at TP=1/PP=1 (``model.init_from``), which also exercises
loading a dist checkpoint at another layout; the single-process run is the oracle.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
DRIVER = os.path.join(HERE, "test_train_fixtures.py")
STEPS = 8


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.dirname(HERE) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONWARNINGS"] = "ignore"
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


def _port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(args, nproc=1):
    if nproc == 1:
        cmd = [sys.executable, DRIVER, *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}", f"--master-port={_port()}",
               DRIVER, *args]
    out = subprocess.run(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-5000:]


def _losses(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        recs = [r for r in map(json.loads, f) if r["kind"] == "train"]
    return [r["loss"] for r in recs], recs


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("parallel")
    init = str(root / "init")
    _run(["--save-init", init])
    ref = str(root / "ref")
    _run([f"run_dir={ref}", f"train.iters={STEPS}", f"model.init_from={init}", "checkpoint.save_at_end=false"])
    return root, init, _losses(ref)


LAYOUTS = {
    "tp2": ["parallel.tensor_parallel=2"],
    "pp2_1f1b": ["parallel.pipeline_parallel=2"],
    "pp2_interleaved": ["parallel.pipeline_parallel=2", "parallel.virtual_pipeline_parallel=2"],
    "dp2": [],
}


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_two_process_layout_matches_single_process(reference, layout):
    root, init, (ref_losses, ref_recs) = reference
    run_dir = str(root / layout)
    _run([f"run_dir={run_dir}", f"train.iters={STEPS}", f"model.init_from={init}", "checkpoint.save_at_end=false",
          *LAYOUTS[layout]], nproc=2)
    losses, recs = _losses(run_dir)
    assert len(losses) == STEPS
    for step, (a, b) in enumerate(zip(ref_losses, losses), 1):
        assert abs(a - b) <= 1e-4 * abs(a), (layout, step, a, b)
    for a, b in zip(ref_recs, recs):
        assert a["tokens/t2i"] == b["tokens/t2i"] and a["consumed_samples"] == b["consumed_samples"]
        assert abs(a["grad_norm"] - b["grad_norm"]) <= 1e-3 * a["grad_norm"]
    assert ref_losses[-1] < ref_losses[0]  # and it is training
