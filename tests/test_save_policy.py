"""Checkpoint saves: every ``save_interval`` steps and at least every ``save_interval_minutes`` (the rule and the
trainer's use of it)."""
import os
import subprocess
import sys

from liquid_train.testing.runs import ensure_tiny_run_data, tiny_run_overrides
from liquid_train.training.save_policy import SavePolicy

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_steps_and_wall_clock_both_trigger_and_a_save_resets_the_clock():
    now = [0.0]
    policy = SavePolicy(every_steps=10, every_minutes=1, clock=lambda: now[0])
    due = []
    for step in range(1, 31):
        now[0] += 7.0  # 7 s per step: 60 s pass during step 9, 18, 27 ... unless a save reset the clock
        if policy.due(step):
            policy.saved(step)
            due.append(step)
    assert due == [9, 10, 19, 20, 29, 30]
    assert SavePolicy(0, 0, clock=lambda: 1e9).due(5) is False  # both off
    assert [s for s in range(1, 5) if SavePolicy(0, 1e-9).due(s)] == [1, 2, 3, 4]


def test_trainer_saves_by_time_without_a_step_interval(tmp_path):
    data = ensure_tiny_run_data(str(tmp_path / "data"))
    run = tmp_path / "run"
    overrides = [o for o in tiny_run_overrides(data, iters=3)]
    proc = subprocess.run([sys.executable, "-m", "liquid_train.cli", f"run_dir={run}", *overrides,
                           "checkpoint.save_interval=0", "checkpoint.save_interval_minutes=1e-9",
                           "checkpoint.keep_last=5"],
                          cwd=REPO, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = sorted(d for d in os.listdir(run / "checkpoints") if d.startswith("iter_"))
    assert saved == ["iter_0000001", "iter_0000002", "iter_0000003"]  # each step, and no second save at the end
