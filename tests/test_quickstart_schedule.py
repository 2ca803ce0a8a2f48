"""The quickstart trains several runs at once: how many, with how many threads, in which order, and what a failure
does to the rest."""
import json
import os
import sys

import pytest

from liquid_train.quickstart.console import CommandFailed, QuickstartConsole
from liquid_train.quickstart.plan import RUNS, process_slots


@pytest.mark.parametrize("cores, runs, expected", [(2, 7, (2, 1)), (2, 1, (1, 2)), (1, 7, (1, 1)), (16, 7, (7, 2)),
                                                   (16, 21, (16, 1)), (2, 0, (1, 2))])
def test_process_slots_share_the_cores(cores, runs, expected):
    workers, threads = process_slots(cores, runs)
    assert (workers, threads) == expected
    assert workers * threads <= max(cores, 1)


def test_runs_are_ordered_by_size_and_steps():
    cost = {spec.name: spec.cost(round(300 * spec.iter_multiplier), 128, 1024) for spec in RUNS}
    assert cost["s_1-1-1"] < cost["m_1-1-1"] < cost["l_1-1-1"]
    assert cost["m_1-1-1"] < cost["m_1-2-1"] == cost["m_1-1-2"]  # 400 steps against 300
    assert cost["l_text"] == cost["l_1-1-1"]  # same model and steps: the mixture does not change the FLOPs


def _job(tmp_path, name, seconds, rc=0):
    """A child that records when it started and ended (and the thread count it was given), then exits ``rc``."""
    code = (f"import json, os, sys, time; t0 = time.time(); time.sleep({seconds}); "
            f"open({str(tmp_path / (name + '.json'))!r}, 'w').write(json.dumps([t0, time.time(), "
            f"os.environ.get('OMP_NUM_THREADS')])); print('job {name} output'); sys.exit({rc})")
    return [sys.executable, "-c", code], name


def _spans(tmp_path, names):
    return {n: json.load(open(tmp_path / f"{n}.json")) for n in names if (tmp_path / f"{n}.json").exists()}


def test_run_parallel_keeps_at_most_workers_running(tmp_path):
    con = QuickstartConsole(str(tmp_path / "out"), str(tmp_path))
    names = [f"j{i}" for i in range(5)]
    con.run_parallel([_job(tmp_path, n, 0.6) for n in names], 2, "jobs", env={"OMP_NUM_THREADS": "1"}, poll_s=0.05)
    spans = _spans(tmp_path, names)
    assert set(spans) == set(names)
    assert all(threads == "1" for _, _, threads in spans.values())
    for n, (start, _, _) in spans.items():  # at any job's start, at most two jobs are running
        assert sum(1 for a, b, _ in spans.values() if a <= start < b) <= 2, n
    starts = sorted(spans.values())
    assert starts[1][0] < starts[0][1]  # two did overlap: the pool is not serial
    for n in names:  # each child's output went to its own log, not the console
        assert f"job {n} output" in open(tmp_path / "out" / "logs" / f"{n}.log").read()


def test_run_parallel_failure_stops_new_jobs_and_names_the_log(tmp_path):
    con = QuickstartConsole(str(tmp_path / "out"), str(tmp_path))
    jobs = [_job(tmp_path, "bad", 0.1, rc=3), _job(tmp_path, "slow", 0.8), _job(tmp_path, "never", 0.1)]
    with pytest.raises(CommandFailed, match=r"bad: exit code 3; full output in .*bad\.log"):
        con.run_parallel(jobs, 2, "jobs", poll_s=0.05)
    spans = _spans(tmp_path, ["bad", "slow", "never"])
    assert "slow" in spans  # the job already running was let finish (its checkpoint is whole)
    assert "never" not in spans  # nothing new started after the failure
    assert os.path.exists(tmp_path / "out" / "logs" / "bad.log")


def test_one_output_directory_holds_one_schedule(tmp_path):
    """Runs are reused by name, so a directory of 300-step runs refuses a 600-step study (and says where to go),
    while the same schedule is taken again; a directory of runs made before the record holds the default."""
    from liquid_train.quickstart.__main__ import main, schedule_clash
    from liquid_train.quickstart.config import QuickstartConfig

    cfg = QuickstartConfig(out=str(tmp_path / "qs"))
    os.makedirs(cfg.out)
    assert schedule_clash(cfg) is None
    assert json.load(open(tmp_path / "qs" / "schedule.json")) == {"steps": 300, "short": False}
    assert schedule_clash(cfg) is None
    cfg.train_iters = 600
    message = schedule_clash(cfg)
    assert "holds 300-step runs" in message and "600-step" in message and cfg.out in message
    legacy = QuickstartConfig(out=str(tmp_path / "old"), train_iters=600)
    os.makedirs(os.path.join(legacy.out, "runs"))
    assert "holds 300-step runs" in schedule_clash(legacy)
    assert main(["--out", cfg.out, "--steps", "600"]) == 2
    assert main(["--out", cfg.out, "--steps", "4"]) == 2
