"""The GPU suite cannot rot: its dry run (the same section code on CPU at tiny shapes) exits 0 and reports every
section ran or skipped, none as a GPU pass; its oracles compute the right thing on CPU; what a bare GPU machine
lacks is carried; bad requests are one line and exit 2; the suite never reaches the network."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from importlib import metadata

import pytest
import torch
from packaging.requirements import Requirement

from liquid_train.gpu_suite.context import allow_network, forbid_network
from liquid_train.gpu_suite.runner import SECTIONS
from liquid_train.gpu_suite.wheels import OPTIONAL_ON_TARGET, TARGET_IMAGE, WHEELS, device_command, suite_imports

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUITE = os.path.join(REPO, "benchmarks", "gpu_suite.py")


def _run(*args, timeout=300):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, SUITE, *args], capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=REPO)


def _keys(node):
    if isinstance(node, dict):
        for k, v in node.items():
            yield k
            yield from _keys(v)
    elif isinstance(node, list):
        for v in node:
            yield from _keys(v)


def _values(node, key):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                yield v
            yield from _values(v, key)
    elif isinstance(node, list):
        for v in node:
            yield from _values(v, key)


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_suite")
    proc = _run("--dry-run", "--out", str(out), "--threads", "1")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with open(out / "results.json") as f:
        record = json.load(f)
    return record, (out / "results.md").read_text()


@pytest.mark.slow
def test_dry_run_reports_every_section_skipped_never_a_pass(dry_run):
    record, md = dry_run
    assert record["dry_run"] is True
    assert list(record["sections"]) == list(SECTIONS)
    for name, section in record["sections"].items():
        status = section["status"]
        assert status == "ran" or status.startswith("skipped: "), (name, status)
        assert status.startswith("skipped: dry run on CPU"), (name, status)  # on CPU: never a GPU claim
        assert section["exercised"], name  # ... but the section's code did run
    assert "ok" not in set(_keys(record)), "a dry run must not carry pass/fail verdicts"
    assert "ran" not in set(_values(record, "status")), "nothing runs as on a GPU in a dry run"
    assert "Transformer Engine" in record["sections"]["fp8"]["status"] or "FP8" in record["sections"]["fp8"]["status"]
    assert record["network_refused"] == []
    env = record["environment"]
    for field in ("device", "torch", "transformer_engine", "megatron_core", "python"):
        assert env[field], field
    for text in ("device: cpu", f"torch {env['torch']}", "TE ", f"megatron-core {env['megatron_core']}"):
        assert text in md, text
    for name in SECTIONS:
        assert f"| {name} | skipped: dry run on CPU" in md


@pytest.mark.slow
def test_dry_run_oracles_hold_on_cpu(dry_run):
    """The numbers the dry run computed are right where CPU can tell: a packed micro-batch equals its samples
    alone (fp32, local and flex), flex equals the exact path, two identical fp32 runs give identical curves."""
    sections = dry_run[0]["sections"]
    numerics = sections["numerics"]["exercised"]
    for family in ("qwen2.5", "gemma2"):
        rows = numerics["packed_vs_alone"][family]
        assert rows["local fp32"]["segments"] >= 3
        for name in ("local fp32", "flex fp32"):
            assert rows[name]["status"] == "exercised", rows[name]
            checks = rows[name]["checks"]
            assert checks["tokens"]["value"] == 0
            assert checks["loss"]["value"] <= checks["loss"]["limit"], (family, name, checks)
        assert rows["local fp32"]["checks"]["grads"]["value"] <= 1e-4
        cross = numerics["flex_vs_local_grads"][family]["checks"]["loss"]
        assert cross["value"] <= cross["limit"]
        assert rows["te bf16"]["status"].startswith("skipped: ")
    assert sections["fp8"]["exercised"]["checks"]["final_loss"]["value"] == 0.0
    attention = sections["gemma2_attention"]["exercised"]["cases"]
    for case in attention.values():
        assert case["status"] == "exercised" and case["checks"]["outputs"]["value"] <= 1e-4
    mfu = sections["mfu"]["exercised"]
    assert mfu["largest_planned"]["params"] > 3e9  # the planner picks a multi-billion model for one GPU
    assert all(case["status"] == "exercised" and case["tokens_per_s"] > 0 for case in mfu["cases"].values())
    vq = sections["vq"]["exercised"]
    assert set(vq["img_s_by_batch"]) == {"1", "4"} and vq["one_per_call_fp32_img_s"] > 0
    assert set(vq["host_decode"]["img_s_by_workers"]) == {"1", "2"}


def _error_lines(proc):
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    return [line for line in proc.stderr.splitlines() if line.startswith("gpu_suite:")]


def test_bad_requests_are_one_line_exit_2(tmp_path):
    proc = _run("--dry-run", "--out", str(tmp_path), "--only", "numerics,nope")
    lines = _error_lines(proc)
    assert proc.returncode == 2 and len(lines) == 1 and "nope" in lines[0] and "known:" in lines[0]
    if not torch.cuda.is_available():
        proc = _run("--out", str(tmp_path))
        lines = _error_lines(proc)
        assert proc.returncode == 2 and len(lines) == 1 and "--dry-run" in lines[0]


def test_carried_wheels_and_the_machine_cover_what_the_suite_imports():
    have = TARGET_IMAGE | set(WHEELS) | OPTIONAL_ON_TARGET
    missing = suite_imports() - have
    assert not missing, f"the GPU machine lacks {missing}: add them to liquid_train.gpu_suite.wheels.WHEELS"
    for name in WHEELS:  # their own requirements (as installed here) are there too
        for line in metadata.requires(name) or ():
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                assert req.name.lower().replace("_", "-") in have, (name, line)
    command = device_command()
    assert len(command) < 2000 and ".whl/*.whl" in command and "--out $OUT" in command


def test_network_guard_refuses_remote_and_allows_loopback():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    forbid_network()
    try:
        with socket.socket() as s:
            with pytest.raises(ConnectionRefusedError, match="no network"):
                s.connect(("192.0.2.1", 80))  # TEST-NET-1: never routed
        with socket.socket() as s:
            s.connect(server.getsockname())
    finally:
        allow_network()
        server.close()


def test_without_numba_the_index_kernels_refuse_in_one_line():
    """The bare GPU machine has no numba: importing the data package works, building an index says what is
    missing."""
    code = ("import sys; sys.modules['numba'] = None\n"
            "from liquid_train.data import kernels\n"
            "try:\n"
            "    kernels.pack_chunk(*[None] * 13)\n"
            "except ImportError as err:\n"
            "    print('REFUSED', err)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "REFUSED" in out.stdout and "needs numba" in out.stdout, out.stdout
