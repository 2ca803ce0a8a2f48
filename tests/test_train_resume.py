"""Preemption and resume, for real: a run is killed with SIGKILL mid-training, relaunched, and must reproduce the
uninterrupted run's losses bitwise; SIGUSR1 checkpoints and exits; non-finite losses are skipped, then abort."""
from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest

from liquid_train.testing.distributed import clean_env, command
from liquid_train.testing.runs import wait_for_step

DRIVER = "liquid_train.testing.train_driver"


def _env():
    return clean_env()


def _launch(args, env=None):
    return subprocess.Popen(command(DRIVER, args), env=env or _env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _records(run_dir, kind="train"):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if r["kind"] == kind]



def _finish(proc, timeout=300):
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-4000:]
    return out


@pytest.mark.slow
def test_kill9_and_resume_reproduces_losses_bitwise(tmp_path):
    straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
    common = ["train.iters=20", "checkpoint.save_interval=10", "train.eval_interval=10"]
    ref = _launch([f"run_dir={straight}", *common])
    _finish(ref)

    victim = _launch([f"run_dir={killed}", *common])
    wait_for_step(victim, killed, 13)  # past the step-10 checkpoint, mid-way to the next
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL
    with open(os.path.join(killed, "checkpoints", "latest")) as f:
        assert f.read().strip() == "iter_0000010"
    assert max(r["step"] for r in _records(killed)) >= 13  # steps past the checkpoint were logged, then lost

    _finish(_launch([f"run_dir={killed}", *common]))
    a, b = _records(straight), _records(killed)
    assert [r["step"] for r in b] == list(range(1, 21))  # one line per step, nothing repeated
    for ra, rb in zip(a, b):
        for key in ("loss", "loss/text", "loss/t2i", "loss/i2t", "grad_norm", "lr", "consumed_samples", "flops"):
            assert ra[key] == rb[key], (ra["step"], key, ra[key], rb[key])
    assert [r["val_loss"] for r in _records(straight, "valid")] == [r["val_loss"] for r in _records(killed, "valid")]
    # the run trained: loss fell, per-task losses and counts present
    assert sum(r["loss"] for r in a[-5:]) < sum(r["loss"] for r in a[:5])
    assert all(0 < r["tokens/text"] + r["tokens/t2i"] + r["tokens/i2t"] <= 4 * 32 for r in a)
    assert all(r["tokens/text"] > 0 and r["tokens/t2i"] > 0 and r["tokens/i2t"] > 0 for r in a[:3])
    # keep-last-2 and the run's records
    ckpts = sorted(n for n in os.listdir(os.path.join(killed, "checkpoints")) if n.startswith("iter_"))
    assert ckpts == ["iter_0000010", "iter_0000020"]
    assert os.path.exists(os.path.join(killed, "config.yaml"))
    with open(os.path.join(killed, "run_info.json")) as f:
        assert json.load(f)["num_params"] > 0


@pytest.mark.slow
def test_sigusr1_checkpoints_and_exits_then_nan_steps_are_skipped_and_abort(tmp_path):
    run_dir = str(tmp_path / "preempt")
    proc = _launch([f"run_dir={run_dir}", "train.iters=1000"])
    wait_for_step(proc, run_dir, 3)
    proc.send_signal(signal.SIGUSR1)
    _finish(proc, timeout=120)
    last = _records(run_dir)[-1]["step"]
    assert last < 1000
    with open(os.path.join(run_dir, "checkpoints", "latest")) as f:
        assert f.read().strip() == f"iter_{last:07d}"

    # non-finite losses: 2 isolated NaN steps are skipped and counted, 3 in a row abort with a clear message
    nan_dir = str(tmp_path / "nan")
    env = _env()
    env.update(LT_TEST_NAN_STEPS="2,4,6,7,8", LT_TEST_MICROBATCHES="2")
    proc = _launch([f"run_dir={nan_dir}", "train.iters=10", "train.max_consecutive_nan=3"], env=env)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 3, out[-3000:]
    assert "not finite for 3 steps in a row" in out
    recs = _records(nan_dir)
    assert [r["skipped_steps"] for r in recs] == [0, 1, 1, 2, 2, 3, 4]
    assert recs[2]["loss"] is not None and recs[1]["loss"] is None
