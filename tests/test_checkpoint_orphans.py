"""No process the trainer started outlives it: megatron's checkpoint helpers (the spawn Manager that carries the
write results, multiprocessing's resource tracker, the forked async writer and its per-file writers).

The trainer is started as the leader of a new session; every process it starts, directly or not, stays in that
session (none of them calls setsid), even after being reparented. So "no child remains" is checked as "no
process is left in the session", which needs no knowledge of which helpers exist.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import psutil
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
DRIVER = os.path.join(os.path.dirname(HERE), "liquid_train", "testing", "train_driver.py")  # the trainer driver
GRACE_S = 10


def _env(**extra):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.dirname(HERE) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONWARNINGS"] = "ignore"
    env.update(extra)
    return env


def _launch(args, env=None):
    return subprocess.Popen([sys.executable, DRIVER, *args], env=env or _env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _session(sid: int):
    """Processes of session ``sid`` other than its (dead) leader."""
    left = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.pid != sid and os.getsid(proc.pid) == sid and proc.status() != psutil.STATUS_ZOMBIE:
                left.append(proc)
        except (OSError, psutil.Error):
            pass
    return left


def _assert_session_empties(sid: int):
    deadline = time.time() + GRACE_S
    left = _session(sid)
    while left and time.time() < deadline:
        time.sleep(0.2)
        left = _session(sid)
    described = [(p.pid, " ".join(p.cmdline())[:120]) for p in left if p.is_running()]
    for p in left:  # clean up what the test started, by pid
        try:
            p.kill()
        except psutil.Error:
            pass
    assert not described, f"left {GRACE_S} s after the trainer ended: {described}"


def _steps(run_dir):
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        return max([json.loads(line)["step"] for line in f if line.strip().endswith("}")] or [0])


@pytest.mark.slow
def test_kill9_during_an_async_save_leaves_no_process(tmp_path):
    run_dir = str(tmp_path / "run")
    proc = _launch([f"run_dir={run_dir}", "train.iters=100000", "checkpoint.save_interval=1",
                    "checkpoint.async_save=true", "checkpoint.keep_last=1"])
    try:
        me = psutil.Process(proc.pid)
        deadline = time.time() + 300
        while time.time() < deadline:  # past a few saves, with a forked async writer alive right now
            if proc.poll() is not None:
                raise AssertionError(f"run exited early ({proc.returncode}):\n{proc.stdout.read()[-3000:]}")
            kids = me.children(recursive=True)
            forked = [k for k in kids if _same_cmd(k, me)]
            if _steps(run_dir) >= 3 and forked and len(kids) >= 3:
                break
            time.sleep(0.01)
        else:
            raise AssertionError("no async save in flight within 300 s")
        # the Manager, the resource tracker and the writer fork: what a kill -9 used to orphan
        assert len(kids) >= 3, [(k.pid, k.cmdline()[:3]) for k in kids]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    _assert_session_empties(proc.pid)


def _same_cmd(child, parent) -> bool:
    try:
        return child.cmdline() == parent.cmdline()
    except psutil.Error:
        return False


# runs the driver's main() in this process, then lists the children still alive after run() returned
_IN_PROCESS = """
import json, runpy, sys, psutil
rc = runpy.run_path(sys.argv[1], run_name="driver")["main"](sys.argv[2:])
alive = [" ".join(c.cmdline()) for c in psutil.Process().children(recursive=True)]
print("ALIVE " + json.dumps(alive))
sys.exit(rc)
"""


@pytest.mark.slow
@pytest.mark.parametrize("end", ["normal", "error"])
def test_no_process_is_left_after_a_run_ends(tmp_path, end):
    run_dir = str(tmp_path / "run")
    args = [f"run_dir={run_dir}", "checkpoint.save_interval=1", "checkpoint.async_save=true"]
    env = _env()
    if end == "normal":
        args.append("train.iters=4")
    else:  # three non-finite losses in a row after two saves: the run aborts (exit 3)
        args += ["train.iters=10", "train.max_consecutive_nan=3"]
        env.update(LT_TEST_NAN_STEPS="3,4,5", LT_TEST_MICROBATCHES="2")
    proc = subprocess.Popen([sys.executable, "-c", _IN_PROCESS, DRIVER, *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    out, _ = proc.communicate(timeout=400)
    assert proc.returncode == (0 if end == "normal" else 3), out[-3000:]
    saved = [n for n in os.listdir(os.path.join(run_dir, "checkpoints")) if re.fullmatch(r"iter_\d+", n)]
    assert len(saved) == 2, saved  # async saves were published (keep-last-2), so the helpers ran
    if end == "normal":  # the run closed its checkpoint manager: its writer Manager is gone while the process lives
        (alive,) = [json.loads(line[6:]) for line in out.splitlines() if line.startswith("ALIVE ")]
        assert [c for c in alive if "resource_tracker" not in c] == [], alive
    _assert_session_empties(proc.pid)


@pytest.mark.slow
def test_preemption_signal_to_the_whole_process_group_saves_then_leaves_no_process(tmp_path):
    """SLURM signals every process of a job step: the writer Manager must survive SIGUSR1 (the trainer still needs
    it for the preemption checkpoint) and go when the trainer goes."""
    from liquid_train.training import ckpt_manifest

    run_dir = str(tmp_path / "run")
    proc = _launch([f"run_dir={run_dir}", "train.iters=100000", "checkpoint.save_interval=2",
                    "checkpoint.async_save=true"])
    try:
        deadline = time.time() + 300
        while _steps(run_dir) < 3 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert proc.poll() is None and _steps(run_dir) >= 3, proc.stdout.read()[-3000:] if proc.poll() else "slow"
        os.killpg(proc.pid, signal.SIGUSR1)
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out[-3000:]
    ck = os.path.join(run_dir, "checkpoints")
    with open(os.path.join(ck, "latest")) as f:
        name = f.read().strip()
    assert int(name[5:]) == _steps(run_dir)  # the preemption checkpoint is the last step trained
    assert ckpt_manifest.verify(os.path.join(ck, name)) is None
    _assert_session_empties(proc.pid)
