"""Checkpoints that cannot lie: every fault an operator can meet is either survived (fall back to the newest
checkpoint that verifies, resumed losses equal to an uninterrupted run bitwise) or one line naming the path and
what to do, exit code 2.

Faults: 16 flipped bytes inside the stored embedding weights, a truncated shard, a deleted file, a damaged
manifest, a binary/garbage/unreadable ``latest``, a full disk during a save (a real small tmpfs in a private
mount namespace where one can be mounted, otherwise an injected ENOSPC in the writer), a read-only run dir, the
HF export of a damaged checkpoint, and the relaunch of a finished run (which must do nothing). TensorBoard and
wandb must not show a replayed step twice.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from liquid_train.training import checkpoint as ckpt
from liquid_train.training import ckpt_manifest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
DRIVER = os.path.join(os.path.dirname(HERE), "liquid_train", "testing", "train_driver.py")  # the trainer driver
COMMON = ["train.iters=12", "checkpoint.save_interval=4", "checkpoint.keep_last=3", "train.eval_interval=4",
          "logging.tensorboard=true"]
OLD, NEW, END = "iter_0000004", "iter_0000008", "iter_0000012"  # the trained fixture stops at step 8 of 12


def _env(**extra):
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONWARNINGS"] = "ignore"
    env.update(extra)
    return env


def _drive(args, timeout=400, env=None):
    cmd = [sys.executable, DRIVER, *args]
    return subprocess.run(cmd, env=env or _env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout)


def _records(run_dir, kind="train"):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if r["kind"] == kind]


def _one_error_line(out: str) -> str:
    """The run failed the way an operator wants: no traceback, exactly one ``liquid-train:`` line."""
    assert "Traceback" not in out, out[-3000:]
    lines = [line for line in out.splitlines() if line.startswith("liquid-train:")]
    assert len(lines) == 1, out[-3000:]
    return lines[0]


def _flip_embedding_bytes(ckpt_dir: str, n: int = 16) -> str:
    """XOR ``n`` bytes in the middle of the stored embedding weights; returns the shard's name."""
    from torch.distributed.checkpoint import FileSystemReader

    storage = FileSystemReader(ckpt_dir).read_metadata().storage_data
    (info,) = [v for k, v in storage.items() if k.fqn == "embedding.word_embeddings.weight"]
    path = os.path.join(ckpt_dir, info.relative_path)
    with open(path, "r+b") as f:
        f.seek(info.offset + info.length // 2)
        data = f.read(n)
        f.seek(info.offset + info.length // 2)
        f.write(bytes(b ^ 0xFF for b in data))
    return info.relative_path


def _truncate(path: str, keep: float = 0.5) -> None:
    with open(path, "r+b") as f:
        f.truncate(int(os.path.getsize(path) * keep))


# --- the manifest on its own (no training) ----------------------------------------------------------------------
def test_manifest_names_the_first_bad_file_and_ranks_share_the_hashing(tmp_path):
    d = str(tmp_path / "iter_0000001")
    os.makedirs(os.path.join(d, "sub"))
    blobs = {"__0_0.distcp": os.urandom(300_000), "__1_0.distcp": os.urandom(200_000), "common.pt": b"x" * 10,
             "sub/extra.bin": os.urandom(1000)}
    for name, data in blobs.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
    names = ckpt_manifest.list_files(d)
    assert names == sorted(blobs)
    files = {**ckpt_manifest.describe(d, names, 0, 2), **ckpt_manifest.describe(d, names, 1, 2)}
    # rank r hashes its own __r_*.distcp shards
    assert set(ckpt_manifest.describe(d, names, 1, 2)) >= {"__1_0.distcp"}
    assert "__1_0.distcp" not in ckpt_manifest.describe(d, names, 0, 2)
    # an async writer's precomputed checksums are used while the size matches, then removed
    ckpt_manifest.hash_own_shards(d, 1)
    part = os.path.join(d, ckpt_manifest.PART_PREFIX + "1.json")
    assert json.load(open(part)) == {"__1_0.distcp": files["__1_0.distcp"]}
    assert ckpt_manifest.list_files(d) == names  # parts are never part of the manifest
    with open(part, "w") as f:
        json.dump({"__1_0.distcp": {"size": 200_000, ckpt_manifest.HASH: "precomputed"}}, f)
    assert ckpt_manifest.describe(d, names, 1, 2)["__1_0.distcp"][ckpt_manifest.HASH] == "precomputed"
    assert not os.path.exists(part)
    with open(part, "w") as f:
        json.dump({"__1_0.distcp": {"size": 1, ckpt_manifest.HASH: "stale"}}, f)
    assert ckpt_manifest.describe(d, names, 1, 2)["__1_0.distcp"] == files["__1_0.distcp"]
    ckpt_manifest.write_manifest(d, files, step=1, layout={"tp": 1})
    assert ckpt_manifest.verify(d) is None
    assert ckpt_manifest.read_manifest(d)["step"] == 1

    # one flipped byte in rank 1's shard: only rank 1 (of 2) sees it, a single process does
    with open(os.path.join(d, "__1_0.distcp"), "r+b") as f:
        f.seek(123_456)
        b = f.read(1)
        f.seek(123_456)
        f.write(bytes([b[0] ^ 1]))
    assert ckpt_manifest.verify(d, rank=0, world=2) is None
    p = ckpt_manifest.verify(d, rank=1, world=2)
    assert (p.reason, p.file) == ("checksum", "__1_0.distcp")
    assert ckpt_manifest.verify(d).file == "__1_0.distcp"

    _truncate(os.path.join(d, "common.pt"))
    p = ckpt_manifest.verify(d)
    assert (p.reason, p.file) == ("truncated", "common.pt")  # sizes are checked before any checksum
    os.unlink(os.path.join(d, "sub/extra.bin"))
    assert ckpt_manifest.verify(d).reason == "truncated"  # common.pt comes first in file order
    with open(os.path.join(d, "common.pt"), "wb") as f:
        f.write(b"x" * 10)
    p = ckpt_manifest.verify(d)
    assert (p.reason, p.file) == ("missing", "sub/extra.bin")
    with open(os.path.join(d, ckpt_manifest.MANIFEST), "wb") as f:
        f.write(b"\x00\xff garbage")
    assert ckpt_manifest.verify(d).reason == "manifest"
    os.unlink(os.path.join(d, ckpt_manifest.MANIFEST))
    with pytest.raises(FileNotFoundError):
        ckpt_manifest.verify(d)


def test_manifest_tool_compares_a_trusted_digest_first(tmp_path, capsys):
    d = str(tmp_path / "iter_0000002")
    os.makedirs(d)
    with open(os.path.join(d, "__0_0.distcp"), "wb") as f:
        f.write(os.urandom(10_000))
    with open(os.path.join(d, "trainer_state.json"), "w") as f:
        json.dump({"iteration": 2}, f)
    assert ckpt_manifest.main([d, "--write-manifest"]) == 0
    assert ckpt_manifest.read_manifest(d)["step"] == 2
    digest = capsys.readouterr().out.split("sha256 ")[1].strip()
    assert ckpt_manifest.main([d, "--expect", digest]) == 0
    with open(os.path.join(d, "__0_0.distcp"), "r+b") as f:
        f.write(b"\x00\x01")
    assert ckpt_manifest.main([d, "--expect", digest]) == 1  # a digest mismatch stops before parsing anything
    assert ckpt_manifest.main([d]) == 2  # and the manifest names the file
    assert "__0_0.distcp" in capsys.readouterr().err


def test_tensorboard_and_wandb_never_show_a_step_twice(tmp_path, monkeypatch):
    """A first attempt logs steps 1..13 and dies; the resume from the step-10 checkpoint replays 11..13 with other
    values. TensorBoard (as its reader loads it) shows each step once with the replay's values; wandb is sent
    each step once; metrics.jsonl has each step once."""
    import wandb
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from liquid_train.training.metrics import MetricsLogger

    sent = []
    real_log = wandb.sdk.wandb_run.Run.log

    def spy(self, data, step=None, **kw):
        sent.append(step)
        return real_log(self, data, step=step, **kw)

    monkeypatch.setattr(wandb.sdk.wandb_run.Run, "log", spy)
    run_dir = str(tmp_path / "run")
    first = MetricsLogger(run_dir, True, resume_step=0, tensorboard=True, wandb_mode="offline")
    for step in range(1, 14):
        first.log({"kind": "train", "step": step, "loss": 100.0 + step})
    first.close()
    second = MetricsLogger(run_dir, True, resume_step=10, tensorboard=True, wandb_mode="offline")
    for step in range(11, 21):
        second.log({"kind": "train", "step": step, "loss": 200.0 + step})
    second.close()

    assert [r["step"] for r in _records(run_dir)] == list(range(1, 21))
    acc = EventAccumulator(os.path.join(run_dir, "tensorboard"))
    acc.Reload()
    events = acc.Scalars("train/loss")
    assert [e.step for e in events] == list(range(1, 21))
    assert [e.value for e in events] == [100.0 + s for s in range(1, 11)] + [200.0 + s for s in range(11, 21)]
    assert sent == list(range(1, 14)) + list(range(14, 21))  # the replayed 11..13 are not sent again


# --- a real trained run (tiny megatron GPT, synthetic data) -----------------------------------------------------
@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    run_dir = str(tmp_path_factory.mktemp("straight") / "run")
    out = _drive([f"run_dir={run_dir}", *COMMON])
    assert out.returncode == 0, out.stdout[-4000:]
    return run_dir


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Stopped at step 8 of 12 (checkpoints at 4 and 8)."""
    run_dir = str(tmp_path_factory.mktemp("trained") / "run")
    out = _drive([f"run_dir={run_dir}", *COMMON, "train.exit_after_iters=8"])
    assert out.returncode == 0, out.stdout[-4000:]
    assert sorted(os.listdir(os.path.join(run_dir, "checkpoints"))) == [OLD, NEW, "latest"]
    return run_dir


def _copy(run_dir: str, dest) -> str:
    dest = str(dest)
    shutil.copytree(run_dir, dest)
    return dest


@pytest.mark.slow
def test_bit_flip_is_moved_aside_and_the_resume_from_the_last_good_one_is_bitwise(trained, straight, tmp_path):
    run_dir = _copy(trained, tmp_path / "flip")
    ck = os.path.join(run_dir, "checkpoints")
    shard = _flip_embedding_bytes(os.path.join(ck, NEW))
    out = _drive([f"run_dir={run_dir}", *COMMON])
    assert out.returncode == 0, out.stdout[-4000:]
    warning = [line for line in out.stdout.splitlines() if "does not verify" in line]
    assert len(warning) == 1 and shard in warning[0] and "checksum" in warning[0], out.stdout[-3000:]
    assert os.path.isdir(os.path.join(ck, NEW + ".corrupt-checksum"))  # moved aside, not deleted
    assert "Traceback" not in out.stdout

    # resumed from step 4: steps 5..12 equal the uninterrupted run's, bitwise, one line per step
    a, b = _records(straight), _records(run_dir)
    assert [r["step"] for r in b] == list(range(1, 13))
    for ra, rb in zip(a, b):
        for key in ("loss", "loss/text", "loss/t2i", "loss/i2t", "grad_norm", "lr", "consumed_samples"):
            assert ra[key] == rb[key], (ra["step"], key, ra[key], rb[key])
    assert [r["val_loss"] for r in _records(straight, "valid")] == [r["val_loss"] for r in _records(run_dir, "valid")]
    assert [r["step"] for r in _records(run_dir, "valid")] == [4, 8, 12]
    # tensorboard shows the replayed steps 5..8 once
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(os.path.join(run_dir, "tensorboard"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("train/loss")] == list(range(1, 13))
    assert [e.step for e in acc.Scalars("valid/val_loss")] == [4, 8, 12]
    # the new step-8 and step-12 checkpoints verify; the moved-aside one is kept as it was
    assert ckpt.find_resumable(ck) == os.path.join(ck, END)
    assert ckpt_manifest.verify(os.path.join(ck, NEW + ".corrupt-checksum")).file == shard


def test_truncated_deleted_and_unmanifested_checkpoints_in_process(trained, tmp_path, caplog):
    """find_resumable on its own: each damage is named, moved aside, and ``latest`` points at the one chosen."""
    for damage, reason, bad in (("truncate", "truncated", "__0_1.distcp"), ("delete", "missing", "common.pt"),
                                ("manifest", "manifest", ckpt_manifest.MANIFEST)):
        ck = _copy(os.path.join(trained, "checkpoints"), tmp_path / damage)
        newest = os.path.join(ck, NEW)
        if damage == "truncate":
            _truncate(os.path.join(newest, "__0_1.distcp"))
        elif damage == "delete":
            os.unlink(os.path.join(newest, "common.pt"))
        else:
            with open(os.path.join(newest, ckpt_manifest.MANIFEST), "w") as f:
                f.write("{not json")
        caplog.clear()
        assert ckpt.find_resumable(ck) == os.path.join(ck, OLD)
        assert os.path.isdir(f"{newest}.corrupt-{reason}") and not os.path.exists(newest)
        with open(os.path.join(ck, "latest")) as f:
            assert f.read().strip() == OLD
        warned = [r.getMessage() for r in caplog.records if "does not verify" in r.getMessage()]
        assert len(warned) == 1 and bad in warned[0] and f"{newest}.corrupt-{reason}" in warned[0], warned

    # verify=false takes latest as it is, without reading the shards
    ck = _copy(os.path.join(trained, "checkpoints"), tmp_path / "skip")
    _truncate(os.path.join(ck, NEW, "__0_0.distcp"))
    assert ckpt.find_resumable(ck, verify=False) == os.path.join(ck, NEW)
    # no latest (killed between the rename and the pointer update): the newest checkpoint that verifies
    os.unlink(os.path.join(ck, "latest"))
    assert ckpt.find_resumable(ck) == os.path.join(ck, OLD)
    assert os.path.isdir(os.path.join(ck, NEW + ".corrupt-truncated"))

    # a checkpoint without a manifest (older format) gets the structure check: fine when whole, named when not
    ck = _copy(os.path.join(trained, "checkpoints"), tmp_path / "old")
    for name in (OLD, NEW):
        os.unlink(os.path.join(ck, name, ckpt_manifest.MANIFEST))
    assert ckpt_manifest.check_structure(os.path.join(ck, NEW)) is None
    _truncate(os.path.join(ck, NEW, "__0_0.distcp"), keep=0.9)
    p = ckpt_manifest.check_structure(os.path.join(ck, NEW))
    assert (p.reason, p.file) == ("truncated", "__0_0.distcp")
    _truncate(os.path.join(ck, OLD, "common.pt"))
    assert ckpt_manifest.check_structure(os.path.join(ck, OLD)).file == "common.pt"


def test_bad_latest_pointers_are_one_line_errors(trained, tmp_path):
    ck = _copy(os.path.join(trained, "checkpoints"), tmp_path / "ptr")
    latest = os.path.join(ck, "latest")
    for content, expect in ((b"\x89PNG\r\n\x1a\n\x00\xff", "binary content"), (b"step twenty\n", "not a checkpoint name"),
                            (b"../../etc\n", "not a checkpoint name")):
        with open(latest, "wb") as f:
            f.write(content)
        with pytest.raises(ckpt.CheckpointError) as err:
            ckpt.find_resumable(ck)
        assert latest in str(err.value) and expect in str(err.value) and "\n" not in str(err.value)
    os.unlink(latest)
    os.mkdir(latest)  # unreadable: a directory where the pointer should be
    with pytest.raises(ckpt.CheckpointError, match="cannot be read"):
        ckpt.find_resumable(ck)
    assert sorted(os.listdir(ck)) == [OLD, NEW, "latest"]  # nothing moved


@pytest.mark.slow
def test_trainer_errors_are_one_line_exit_2(trained, tmp_path):
    # a binary latest
    run_dir = _copy(trained, tmp_path / "binary")
    with open(os.path.join(run_dir, "checkpoints", "latest"), "wb") as f:
        f.write(os.urandom(64) + b"\xff")
    out = _drive([f"run_dir={run_dir}", *COMMON])
    assert out.returncode == 2, out.stdout[-3000:]
    assert "latest is not a checkpoint name" in _one_error_line(out.stdout)

    # no checkpoint verifies: one error listing both, nothing moved, the metrics untouched
    run_dir = _copy(trained, tmp_path / "none")
    ck = os.path.join(run_dir, "checkpoints")
    _truncate(os.path.join(ck, NEW, "__0_0.distcp"))
    os.unlink(os.path.join(ck, OLD, "__0_1.distcp"))
    with open(os.path.join(run_dir, "metrics.jsonl"), "rb") as f:
        before = f.read()
    out = _drive([f"run_dir={run_dir}", *COMMON])
    assert out.returncode == 2, out.stdout[-3000:]
    line = _one_error_line(out.stdout)
    assert "no checkpoint in" in line and f"{NEW}: __0_0.distcp" in line and f"{OLD}: __0_1.distcp" in line
    assert sorted(os.listdir(ck)) == [OLD, NEW, "latest"]
    with open(os.path.join(run_dir, "metrics.jsonl"), "rb") as f:
        assert f.read() == before


@pytest.mark.slow
def test_relaunching_a_finished_run_does_nothing_and_says_so(straight):
    def snapshot():
        out = {}
        for root, _, files in os.walk(straight):
            for name in files:
                p = os.path.join(root, name)
                out[os.path.relpath(p, straight)] = (os.path.getsize(p), os.path.getmtime(p))
        return out

    before = snapshot()
    out = _drive([f"run_dir={straight}", *COMMON])
    assert out.returncode == 0, out.stdout[-3000:]
    assert "run already finished" in out.stdout and "train.iters=12" in out.stdout
    assert snapshot() == before  # no second valid/data record, no new tensorboard events, no new checkpoint
    assert [r["step"] for r in _records(straight, "valid")] == [4, 8, 12]


def test_export_of_a_damaged_checkpoint_is_one_line_exit_2(trained, tmp_path):
    tool = os.path.join(REPO, "tools", "convert_checkpoint.py")
    run_dir = _copy(trained, tmp_path / "export")
    ck = os.path.join(run_dir, "checkpoints")
    _truncate(os.path.join(ck, NEW, "__0_0.distcp"))
    os.unlink(os.path.join(ck, OLD, "common.pt"))
    for src, name in ((run_dir, "__0_0.distcp"), (os.path.join(ck, OLD), "common.pt")):
        out = subprocess.run([sys.executable, tool, "megatron-to-hf", "--ckpt", src, "--out", str(tmp_path / "hf")],
                             env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
        assert out.returncode == 2, out.stdout[-3000:]
        assert "Traceback" not in out.stdout
        errors = [line for line in out.stdout.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and name in errors[0] and "is damaged" in errors[0], out.stdout[-3000:]
    assert not os.path.exists(tmp_path / "hf")


# --- a full disk, a read-only run dir ---------------------------------------------------------------------------
def _can_unshare() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-Urm", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt 2>/dev/null || "
                            "mount -t tmpfs -o size=1m tmpfs /tmp"], capture_output=True)
    return probe.returncode == 0


_INJECT = '''
import builtins, errno, os, runpy, sys
ckpt_dir, budget = sys.argv.pop(1), int(sys.argv.pop(1))
real_open = builtins.open
real_statvfs = os.statvfs
def used():
    return sum(os.path.getsize(os.path.join(r, n)) for r, _, fs in os.walk(ckpt_dir) for n in fs)
def full_statvfs(path):  # the device of the checkpoint dir has budget bytes
    st = real_statvfs(path)
    if not str(path).startswith(ckpt_dir):
        return st
    free = max(0, budget - used()) // st.f_frsize
    return os.statvfs_result((st.f_bsize, st.f_frsize, budget // st.f_frsize, free, free) + tuple(st)[5:])
os.statvfs = full_statvfs
class Full:
    def __init__(self, f): self._f = f
    def write(self, data):
        if used() + len(data) > budget:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self._f.write(data)
    def __getattr__(self, name): return getattr(self._f, name)
    def __enter__(self): return self
    def __exit__(self, *a): return self._f.__exit__(*a)
def full_open(file, mode="r", *a, **k):
    f = real_open(file, mode, *a, **k)
    return Full(f) if isinstance(file, (str, os.PathLike)) and str(file).startswith(ckpt_dir) and "w" in mode else f
builtins.open = full_open
sys.argv[0] = sys.argv[1]; del sys.argv[1]
runpy.run_path(sys.argv[0], run_name="__main__")
'''


@pytest.mark.slow
@pytest.mark.parametrize("async_save", [False, True], ids=["sync", "async"])
def test_full_disk_during_a_save_is_one_line_and_latest_stays_good(tmp_path, async_save):
    """The disk fills during the second save: exit 2, one line saying so; ``latest`` still names the first
    checkpoint, which verifies; the failed ``.partial`` is gone."""
    run_dir, ck, copy = str(tmp_path / "run"), str(tmp_path / "ck"), str(tmp_path / "copy")
    os.makedirs(ck)
    args = [f"run_dir={run_dir}", f"checkpoint.dir={ck}", "train.iters=6", "checkpoint.save_interval=2",
            f"checkpoint.async_save={str(async_save).lower()}"]
    budget = 2 << 20  # one checkpoint of the tiny model is ~1.25 MB: the first fits, the second does not
    if _can_unshare():  # a real full file system: a 4 MiB tmpfs in a private mount namespace
        script = (f'mount -t tmpfs -o size={budget} tmpfs "{ck}" && "{sys.executable}" "{DRIVER}" '
                  + " ".join(f'"{a}"' for a in args) + f'; rc=$?; cp -a "{ck}/." "{copy}"; exit $rc')
        os.makedirs(copy)
        out = subprocess.run(["unshare", "-Urm", "sh", "-c", script], env=_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, timeout=400)
    else:  # injected: writes under the checkpoint dir past the budget fail with ENOSPC, statvfs agrees
        wrapper = tmp_path / "full_disk.py"
        wrapper.write_text(_INJECT)
        out = subprocess.run([sys.executable, str(wrapper), ck, str(budget), DRIVER, *args], env=_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=400)
        copy = ck
    assert out.returncode == 2, out.stdout[-4000:]
    line = _one_error_line(out.stdout)
    assert "no space left on the device of" in line and ck in line and "still names iter_0000002" in line, line
    assert sorted(os.listdir(copy)) == ["iter_0000002", "latest"]
    with open(os.path.join(copy, "latest")) as f:
        assert f.read().strip() == "iter_0000002"
    assert ckpt_manifest.verify(os.path.join(copy, "iter_0000002")) is None


def test_read_only_run_dir_is_one_line_exit_2_at_start(tmp_path):
    """Through the real CLI: checked before anything is built (no data or model needed to get there)."""
    run_dir = tmp_path / "ro"
    run_dir.mkdir()
    cli = [sys.executable, "-m", "liquid_train.cli", "--config", os.path.join(REPO, "configs/runs/tiny_cpu.yaml"),
           f"run_dir={run_dir}", "model.vocab=test"]
    if os.geteuid() != 0:
        os.chmod(run_dir, 0o555)
        out = subprocess.run(cli, cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, timeout=300)
        os.chmod(run_dir, 0o755)
    else:  # root writes through permissions: make it a read-only bind mount in a private mount namespace
        if not _can_unshare():
            pytest.skip("running as root without mount namespaces: cannot make a directory read-only")
        script = f'mount --bind "{run_dir}" "{run_dir}" && mount -o remount,ro,bind "{run_dir}" && exec ' + \
            " ".join(f'"{a}"' for a in cli)
        out = subprocess.run(["unshare", "-Urm", "sh", "-c", script], cwd=REPO, env=_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, timeout=300)
    assert out.returncode == 2, out.stdout[-3000:]
    line = _one_error_line(out.stdout)
    assert f"{run_dir} is not writable" in line and ("Read-only file system" in line or "Permission" in line), line
    assert os.listdir(run_dir) == []


@pytest.mark.slow
@pytest.mark.distributed
def test_two_ranks_share_the_manifest_and_fall_back_together(tmp_path):
    """DP=2 (two gloo processes): each rank hashes its own shards on save and verifies them on resume; a flip in
    rank 1's shard is found (by rank 1), both ranks fall back together, and the steps trained again equal the first
    time's, bitwise."""
    import socket

    def torchrun(args):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        env = _env()
        for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
            env.pop(key, None)
        return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2",
                               f"--master-port={port}", DRIVER, *args], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=400)

    common = ["train.iters=6", "checkpoint.save_interval=3", "checkpoint.keep_last=3", "train.eval_interval=0"]
    run_dir = str(tmp_path / "run")
    out = torchrun([f"run_dir={run_dir}", *common, "train.exit_after_iters=3"])
    assert out.returncode == 0, out.stdout[-4000:]
    out = torchrun([f"run_dir={run_dir}", *common])  # resumes from 3, saves at 6
    assert out.returncode == 0, out.stdout[-4000:]
    first = _records(run_dir)
    ck = os.path.join(run_dir, "checkpoints")
    manifest = ckpt_manifest.read_manifest(os.path.join(ck, "iter_0000006"))
    assert manifest["layout"]["dp"] == 2 and {"__0_0.distcp", "__1_0.distcp"} <= set(manifest["files"])
    shard = os.path.join(ck, "iter_0000006", "__1_0.distcp")  # written and hashed by rank 1
    with open(shard, "r+b") as f:
        f.seek(os.path.getsize(shard) // 2)
        data = f.read(16)
        f.seek(os.path.getsize(shard) // 2)
        f.write(bytes(x ^ 0xFF for x in data))
    # the relaunch: iter_6 does not verify (rank 1 finds it), both ranks resume from iter_3 and train 4..6 again
    out = torchrun([f"run_dir={run_dir}", *common])
    assert out.returncode == 0, out.stdout[-4000:]
    assert os.path.isdir(os.path.join(ck, "iter_0000006.corrupt-checksum")), out.stdout[-3000:]
    assert "__1_0.distcp" in out.stdout and "does not verify" in out.stdout
    again = _records(run_dir)
    assert [r["step"] for r in again] == list(range(1, 7))
    assert [(r["loss"], r["grad_norm"]) for r in again] == [(r["loss"], r["grad_norm"]) for r in first]
