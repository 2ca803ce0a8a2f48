"""The SLURM launchers, for real: a throwaway slurm-wlm cluster (munged + slurmctld + slurmd, one node, localhost
only, free high ports, all state under a tmp dir) runs a tiny CPU training job submitted with ``sbatch
launch/pretrain_0.5b.sh`` (which execs ``launch/pretrain.sh``: srun + torchrun). Mid-run the batch shell gets
SIGUSR1 the way ``--signal=B:USR1@300`` delivers it before a time limit (``scancel --signal=USR1 --batch``); the
trainer must checkpoint at that step and exit cleanly, the launcher must ``scontrol requeue`` the job, and the
restarted job must resume from the checkpoint and finish: every train step 1..N logged exactly once, COMPLETED,
Restarts=1.

Skipped with a reason where slurm-wlm is not installed (``bash launch/ci/install_slurm.sh`` installs it) or its
daemons cannot be started here (not root, munged/slurmctld/slurmd fail); ``LIQUID_SLURM_REQUIRED=1`` turns those
skips into failures.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = os.path.join(REPO, "launch")
WRAPPERS = ("pretrain_0.5b.sh", "pretrain_7b.sh", "pretrain_32b.sh", "pretrain_gemma_7b.sh")
ITERS = 500  # ~0.02-0.03 s a step on 2 cores: ~10-15 s of training, long enough to signal it mid-run
GBS = 4


def _skip_or_fail(reason: str):
    if os.environ.get("LIQUID_SLURM_REQUIRED") == "1":
        pytest.fail(f"LIQUID_SLURM_REQUIRED=1 but: {reason}")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: str, n: int = 4000) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()[-n:]
    except OSError as err:
        return f"<{path}: {err}>"


def _wait(predicate, timeout: float, what: str, interval: float = 0.25, on_fail=lambda: ""):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{on_fail()}")


class Cluster:
    """munged + slurmctld + slurmd started in the foreground (Popen) with SLURM_CONF pointing at a tmp conf."""

    def __init__(self, root: str):
        self.root = root
        self.conf = os.path.join(root, "slurm.conf")
        self.procs = {}
        self.host = socket.gethostname().split(".")[0]
        self.env = dict(os.environ, SLURM_CONF=self.conf)
        for k in [k for k in self.env if k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_")) and k != "SLURM_CONF"]:
            del self.env[k]  # a test run inside a slurm job must not leak that job's settings

    def log(self, name: str) -> str:
        return os.path.join(self.root, "log", f"{name}.log")

    def logs(self) -> str:
        return "\n".join(f"--- {n} ---\n{_tail(self.log(n), 2500)}" for n in ("munged", "slurmctld", "slurmd"))

    def write_conf(self):
        r = self.root
        for d in ("state", "spool", "log", "munge"):
            os.makedirs(os.path.join(r, d), exist_ok=True)
        os.chmod(os.path.join(r, "munge"), 0o711)  # munged: socket dir must be searchable by all
        key = os.path.join(r, "munge", "munge.key")
        with open(key, "wb") as f:
            f.write(os.urandom(1024))
        os.chmod(key, 0o400)
        self.munge_socket = os.path.join(r, "munge", "munge.socket")
        ctld_port, slurmd_port = _free_port(), _free_port()
        cpus = os.cpu_count() or 1
        lines = [
            "ClusterName=lttest",
            f"SlurmctldHost={self.host}(127.0.0.1)",
            f"SlurmctldPort={ctld_port}", f"SlurmdPort={slurmd_port}",
            # cred_expire is also the wait before a requeued job may start again (default 120 s)
            "AuthType=auth/munge", f"AuthInfo=socket={self.munge_socket},cred_expire=5", "CredType=cred/munge",
            "SlurmUser=root", "SlurmdUser=root",
            f"StateSaveLocation={r}/state", f"SlurmdSpoolDir={r}/spool",
            f"SlurmctldPidFile={r}/slurmctld.pid", f"SlurmdPidFile={r}/slurmd.pid",
            f"SlurmctldLogFile={self.log('slurmctld')}", f"SlurmdLogFile={self.log('slurmd')}",
            "SlurmctldDebug=info", "SlurmdDebug=info",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU",
            "SchedulerType=sched/builtin", "SchedulerParameters=sched_interval=2",
            "MpiDefault=none", "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none", "JobCompType=jobcomp/none",
            "MailProg=/bin/true", "ReturnToService=2", "JobRequeue=1", "MinJobAge=60", "KillWait=5",
            "InactiveLimit=0", "SlurmctldTimeout=30", "SlurmdTimeout=30",
            f"NodeName={self.host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=1000 State=UNKNOWN",
            f"PartitionName=lt Nodes={self.host} Default=YES MaxTime=INFINITE State=UP",
        ]
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n")

    def _start(self, name, cmd):
        out = open(os.path.join(self.root, "log", f"{name}.stdout"), "w")
        self.procs[name] = subprocess.Popen(cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        out.close()

    def start(self):
        self.write_conf()
        r = self.root
        self._start("munged", ["munged", "-F", "-f", f"--key-file={r}/munge/munge.key", f"--socket={self.munge_socket}",
                               f"--pid-file={r}/munge/munged.pid", f"--log-file={self.log('munged')}",
                               f"--seed-file={r}/munge/munged.seed"])
        try:
            _wait(lambda: os.path.exists(self.munge_socket) or self.procs["munged"].poll() is not None, 20, "munged")
        except AssertionError:
            pass
        if not os.path.exists(self.munge_socket):
            _skip_or_fail(f"munged did not start (rc {self.procs['munged'].poll()}):\n{self.logs()}")
        self._start("slurmctld", ["slurmctld", "-D", "-c"])
        self._start("slurmd", ["slurmd", "-D", "-N", self.host])

        def node_idle():
            for name, p in self.procs.items():
                if p.poll() is not None:
                    return f"dead:{name}"
            out = self.run(["sinfo", "-h", "-N", "-o", "%T"], check=False)
            return "idle" if out.returncode == 0 and out.stdout.strip() == "idle" else None

        try:
            state = _wait(node_idle, 40, "the slurm node to become idle", interval=0.5)
        except AssertionError:
            state = "timeout"
        if state != "idle":
            _skip_or_fail(f"slurm daemons did not come up ({state}):\n{self.logs()}")

    def run(self, cmd, check=True, timeout=30, **kw):
        out = subprocess.run(cmd, env=kw.pop("env", self.env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, timeout=timeout, **kw)
        if check and out.returncode != 0:
            raise AssertionError(f"{cmd} failed ({out.returncode}): {out.stdout}\n{self.logs()}")
        return out

    def job(self, jobid: str) -> dict:
        out = self.run(["scontrol", "-o", "show", "job", jobid], check=False)
        return dict(re.findall(r"(\w+)=(\S*)", out.stdout)) if out.returncode == 0 else {}

    def _our_pids(self):
        """Processes of this cluster instance only: their environment names our SLURM_CONF (daemons, slurmstepd,
        job shells, srun, torchrun, trainer ranks all inherit it)."""
        mark = f"SLURM_CONF={self.conf}".encode()
        pids = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            if int(pid) == os.getpid():
                continue
            try:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    if mark in f.read().split(b"\0"):
                        pids.append(int(pid))
            except OSError:
                pass
        return pids

    def stop(self):
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            try:
                self.run(["scancel", "--full", "-u", "root"], check=False, timeout=10)
                _wait(lambda: not self.run(["squeue", "-h"], check=False, timeout=10).stdout.strip(), 20,
                      "jobs to end", interval=0.5)
            except Exception:
                pass
        for name in ("slurmd", "slurmctld", "munged"):
            p = self.procs.get(name)
            if p is not None and p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(5)
        for pid in self._our_pids():  # leftover slurmstepd / job processes of this instance
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


@pytest.fixture
def cluster():
    for tool in ("munged", "slurmctld", "slurmd", "sbatch", "scontrol", "scancel", "sinfo", "srun"):
        if shutil.which(tool) is None:
            _skip_or_fail(f"{tool} not on PATH: slurm-wlm is not installed (bash launch/ci/install_slurm.sh)")
    if os.geteuid() != 0:
        _skip_or_fail("slurmd must run as root to launch jobs; not root")
    root = tempfile.mkdtemp(prefix="lt-slurm-")  # short: the munge socket path must fit in sun_path
    c = Cluster(root)
    try:
        c.start()
        yield c
    finally:
        c.stop()
        shutil.rmtree(root, ignore_errors=True)


def _train_steps(run_dir):
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        recs = [json.loads(line) for line in f if line.strip().endswith("}")]
    return [r for r in recs if r["kind"] == "train"]


def _header(name):
    with open(os.path.join(LAUNCH, name)) as f:
        text = f.read()
    return text, dict(re.findall(r"^#SBATCH --([\w-]+)(?:=(\S+))?", text, re.M))


def test_launcher_headers_and_syntax():
    """The size wrappers carry the requeue/signal/log headers and exec the generic launcher."""
    for name in ("pretrain.sh", *WRAPPERS):
        assert subprocess.run(["bash", "-n", os.path.join(LAUNCH, name)]).returncode == 0, name
        text, header = _header(name)
        for key in ("requeue", "signal", "open-mode", "output", "nodes", "gpus-per-node", "time"):
            assert key in header, (name, key)
        assert header["signal"].startswith("B:USR1@") and header["open-mode"] == "append", name
        assert header["output"] == "logs/%x-%j.out", name
        if name != "pretrain.sh":
            assert 'exec bash "$repo/launch/pretrain.sh" "$@"' in text, name
    nodes = {n: _header(n)[1]["nodes"] for n in WRAPPERS}
    assert nodes == {"pretrain_0.5b.sh": "1", "pretrain_7b.sh": "1", "pretrain_32b.sh": "4",
                     "pretrain_gemma_7b.sh": "1"}


ENGINE_OVERRIDES = {"megatron": [], "deepspeed": ["engine=deepspeed", "deepspeed.zero_stage=2"]}
"""The launcher is the same for both engines (torchrun under srun, then the trainer picks the engine from the config);
the deepspeed run checks that DeepSpeed's checkpoints take the same signal -> checkpoint -> requeue -> resume path."""


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.parametrize("engine", sorted(ENGINE_OVERRIDES))
def test_sbatch_run_is_signalled_checkpointed_requeued_and_resumed(cluster, tmp_path, engine):
    t0 = time.time()
    from liquid_train.data.testing import make_tiny_tokenizer, tiny_vocab, write_tiny_datasets

    data = str(tmp_path / "data")
    tok_dir = os.path.join(data, "tok")
    tiny_vocab(make_tiny_tokenizer(tok_dir)).save(data)
    pairs, text = write_tiny_datasets(os.path.join(data, "ds"), num_pairs=200, num_texts=150, text_range=(20, 150))
    run_dir = str(tmp_path / "run")
    marks = {"data": time.time() - t0}
    submit = tmp_path / "submit"  # the job's working dir: the header's logs/%x-%j.out lands here, not in the repo
    (submit / "logs").mkdir(parents=True)

    env = dict(cluster.env, CONFIG=os.path.join(REPO, "configs/runs/tiny_cpu.yaml"), GPUS_PER_NODE="1",
               LIQUID_REPO=REPO, PYTHON=sys.executable, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore",
               MASTER_PORT=str(_free_port()), WANDB_MODE="disabled")
    try:
        socket.gethostbyname(cluster.host)
    except OSError:
        env["MASTER_ADDR"] = "127.0.0.1"  # the node name does not resolve here; a real cluster's does
    overrides = [f"run_dir={run_dir}", f"model.vocab={data}", f"data.vocab={data}", f"data.tokenizer={tok_dir}",
                 f"data.pairs_path={pairs}", f"data.text_path={text}", "data.seq_length=64",
                 f"train.iters={ITERS}", f"train.global_batch_size={GBS}", f"train.micro_batch_size={GBS}",
                 f"train.eval_interval={ITERS}", f"checkpoint.save_interval={ITERS}", "checkpoint.keep_last=2",
                 "logging.tensorboard=false", "logging.progress=false", "sampling.interval=0",
                 *ENGINE_OVERRIDES[engine]]
    # the wrapper's GPU-cluster header, made to fit a 1-node CPU cluster on the command line only
    sub = cluster.run(["sbatch", "--parsable", "--gpus-per-node=0", "--time=10",
                       os.path.join(LAUNCH, "pretrain_0.5b.sh"), *overrides], env=env, cwd=str(submit))
    jobid = sub.stdout.strip().split(";")[0]
    assert jobid.isdigit(), sub.stdout
    log = str(submit / "logs" / f"liquid-0.5b-{jobid}.out")

    def diag():
        return f"--- job log ---\n{_tail(log, 6000)}\n--- scontrol ---\n{cluster.job(jobid)}\n{cluster.logs()}"

    def state():
        return cluster.job(jobid).get("JobState")

    # 1. it trains: wait for a few steps, the job still running
    def some_steps():
        if state() in ("FAILED", "CANCELLED", "COMPLETED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"):
            raise AssertionError(f"job ended before the signal: {state()}\n{diag()}")
        return len(_train_steps(run_dir)) >= 5
    _wait(some_steps, 150, "5 train steps", on_fail=diag)
    assert state() == "RUNNING"
    marks["5 steps"] = time.time() - t0

    # 2. the pre-time-limit signal, as --signal=B:USR1@300 sends it: to the batch shell only
    cluster.run(["scancel", "--signal=USR1", "--batch", jobid])
    info = _wait(lambda: (lambda j: j if j.get("Restarts") == "1" else None)(cluster.job(jobid)), 90,
                 "the job to be requeued (Restarts=1)", on_fail=diag)
    assert info.get("JobState") in ("PENDING", "REQUEUED", "CONFIGURING", "RUNNING", "COMPLETING"), info
    marks["requeued"] = time.time() - t0
    first = open(log).read()
    m = re.search(r"preemption signal received: checkpointing at step (\d+)", first)
    assert m, diag()
    k = int(m.group(1))
    assert 5 <= k < ITERS
    # the checkpoint at the signal step is what `latest` names while the job waits to restart
    with open(os.path.join(run_dir, "checkpoints", "latest")) as f:
        assert f.read().strip() == f"iter_{k:07d}"
    with open(os.path.join(run_dir, "checkpoints", f"iter_{k:07d}", "trainer_state.json")) as f:
        assert json.load(f)["iteration"] == k

    # 3. it restarts, resumes and completes
    _wait(lambda: state() in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL"), 240,
          "the requeued job to finish", interval=0.5, on_fail=diag)
    marks["completed"] = time.time() - t0
    info = cluster.job(jobid)
    text = open(log).read()
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0" and info["Restarts"] == "1", diag()

    # the per-job log (one file for both runs: --open-mode=append) tells the story in order
    events = [f"[pretrain] job {jobid} restart 0 nodes 1 master ",
              "[pretrain] SIGUSR1: asking the trainer to checkpoint, then requeueing",
              f"preemption signal received: checkpointing at step {k} and exiting",
              f"saved checkpoint {run_dir}/checkpoints/iter_{k:07d}",
              f"[pretrain] trainer exited with 0 after the signal; requeueing job {jobid}",
              f"[pretrain] job {jobid} restart 1 nodes 1 master ",
              f"resumed from {run_dir}/checkpoints/iter_{k:07d} at step {k}",
              f"saved checkpoint {run_dir}/checkpoints/iter_{ITERS:07d}",
              "[pretrain] trainer exited with 0"]
    pos = 0
    for event in events:
        at = text.find(event, pos)
        assert at >= 0, f"missing (in order) {event!r}\n{diag()}"
        pos = at + len(event)
    # slurmctld: one requeue RPC, two allocations (the batch shell may exit before slurmstepd logs the requeue)
    ctld = open(cluster.log("slurmctld")).read()
    assert ctld.count(f"Requeuing JobId={jobid}") == 1, diag()
    assert len(re.findall(rf"sched: Allocate JobId={jobid} ", ctld)) == 2, diag()
    # torchrun ignored the signal and exited 0 with its rank: srun reported no task killed by a signal
    assert "User defined signal" not in text and not re.search(r"srun: error: .*task \d+:", text), diag()
    assert text.count("[pretrain] job ") == 2  # exactly one restart

    # metrics: every step once, the resumed run continued at k+1 with the exact sample count
    train = _train_steps(run_dir)
    assert [r["step"] for r in train] == list(range(1, ITERS + 1))
    assert [r["consumed_samples"] for r in train] == [GBS * s for s in range(1, ITERS + 1)]
    assert all(r["loss"] is not None and r["loss"] == r["loss"] for r in train)
    assert sum(r["loss"] for r in train[-20:]) < sum(r["loss"] for r in train[:20])
    ckpts = sorted(n for n in os.listdir(os.path.join(run_dir, "checkpoints")) if n.startswith("iter_"))
    assert ckpts == [f"iter_{k:07d}", f"iter_{ITERS:07d}"]
    with open(os.path.join(run_dir, "checkpoints", "latest")) as f:
        assert f.read().strip() == f"iter_{ITERS:07d}"
    print(f"[slurm test] {engine}: signal at step {k}; " + ", ".join(f"{n} {v:.0f}s" for n, v in marks.items()))


# ---- launch/encode.sh: the VQ encode as one srun step of one rank per GPU, then build over the merged output ----

ENCODE_HEADER_KEYS = ("requeue", "signal", "open-mode", "output", "nodes", "ntasks-per-node", "gpus-per-node",
                      "cpus-per-task", "time")


def test_encode_launcher_header_and_syntax():
    path = os.path.join(LAUNCH, "encode.sh")
    assert subprocess.run(["bash", "-n", path]).returncode == 0
    text, header = _header("encode.sh")
    for key in ENCODE_HEADER_KEYS:
        assert key in header, key
    assert header["signal"].startswith("B:USR1@") and header["open-mode"] == "append"
    assert header["ntasks-per-node"] == header["gpus-per-node"]  # one rank per GPU
    assert "srun " in text and "-m data_pipeline encode" in text and "build pairs" in text
    # no output directory: one line, exit 2, before any srun (runs outside slurm too)
    p = subprocess.run(["bash", path, "/nonexistent.tar"], capture_output=True, text=True, timeout=30,
                       env=dict(os.environ, LIQUID_REPO=REPO, PYTHON=sys.executable))
    assert p.returncode == 2 and p.stderr.strip() == "[encode] pass the output directory with -o (shared by every rank)"


def _rank_outputs(log_text):
    """The JSON each rank prints, from srun --label lines ("<task>: ...")."""
    per_task = {}
    for line in log_text.splitlines():
        m = re.match(r"^\s*(\d+): (.*)$", line)
        if m:
            per_task.setdefault(int(m.group(1)), []).append(m.group(2))
    out = {}
    for task, lines in per_task.items():
        text = "\n".join(lines)
        out[task] = json.loads(text[text.index("{"):text.rindex("}") + 1])
    return out


@pytest.mark.slurm
@pytest.mark.slow
def test_sbatch_encode_two_ranks_requeue_resume_and_build(cluster, tmp_path):
    from data_pipeline.build import build_pairs
    from data_pipeline.encode import EncodeConfig, run_encode
    from data_pipeline.preprocess import PreprocessConfig
    from data_pipeline.testing import image_bytes, make_word_tokenizer, write_jsonl_table, write_wds_tar

    words = [f"w{i}" for i in range(20)]
    tok = make_word_tokenizer(str(tmp_path / "tok"), words)
    inputs = tmp_path / "in"
    (inputs / "imgs").mkdir(parents=True)
    for t in range(5):
        write_wds_tar(str(inputs / f"{t:03d}.tar"),
                      [{"__key__": f"{t}{i}", "png": image_bytes(80, 64, 10 * t + i), "txt": f"w{t} w{i}".encode()}
                       for i in range(4)] + [{"__key__": f"{t}bad", "jpg": b"", "txt": b"w1"}])
    rows = []
    for i in range(6):
        (inputs / "imgs" / f"{i}.png").write_bytes(image_bytes(72, 72, 100 + i))
        rows.append({"image_path": f"imgs/{i}.png", "text": f"w{i} w{i + 1}"})
    write_jsonl_table(str(inputs / "table.jsonl"), rows)
    flags = ["--vq", "chameleon-vqgan-tiny", "--resolution", "64", "--device", "cpu", "--num-workers", "0",
             "--batch-size", "3", "--rows-per-shard", "4", "--no-progress"]

    def cfg(out, **kw):
        return EncodeConfig(inputs=[str(inputs)], output_dir=str(out), vq_tokenizer="chameleon-vqgan-tiny",
                            preprocess=PreprocessConfig(resolution=64), batch_size=3, rows_per_shard=4,
                            num_workers=0, device="cpu", progress=False, threads=1, **kw)

    ref = tmp_path / "ref"
    units_total = run_encode(cfg(ref))["summary"]["units_total"]
    assert units_total == 7  # 5 tars + 6 table rows / 4
    build_pairs(str(ref), tok, str(tmp_path / "ref_idx" / "pairs"), progress=False)
    out = tmp_path / "out"
    run_encode(cfg(out, max_units=2))  # an earlier run that stopped after two shards: the job resumes it

    submit = tmp_path / "submit"
    (submit / "logs").mkdir(parents=True)
    prefix = tmp_path / "idx" / "pairs"
    env = dict(cluster.env, LIQUID_REPO=REPO, PYTHON=sys.executable, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore",
               PYTHONPATH=REPO, TOKENIZER=tok, BUILD_PREFIX=str(prefix))
    sub = cluster.run(["sbatch", "--parsable", "--gpus-per-node=0", "--ntasks-per-node=2", "--cpus-per-task=1",
                       "--time=10", os.path.join(LAUNCH, "encode.sh"), str(inputs), "-o", str(out), *flags],
                      env=env, cwd=str(submit))
    jobid = sub.stdout.strip().split(";")[0]
    assert jobid.isdigit(), sub.stdout
    log = str(submit / "logs" / f"liquid-encode-{jobid}.out")

    def diag():
        return f"--- job log ---\n{_tail(log, 6000)}\n--- scontrol ---\n{cluster.job(jobid)}\n{cluster.logs()}"

    # the pre-time-limit signal (--signal=B:USR1@120) as soon as the batch shell runs: the job requeues itself
    first_line = f"[encode] job {jobid} restart 0 nodes 1 tasks 2 cpus/task 1 output {out}"
    _wait(lambda: os.path.exists(log) and first_line in open(log).read(), 120, "the batch shell to start",
          on_fail=diag)
    cluster.run(["scancel", "--signal=USR1", "--batch", jobid])
    _wait(lambda: cluster.job(jobid).get("Restarts") == "1", 90, "the job to be requeued", on_fail=diag)
    _wait(lambda: cluster.job(jobid).get("JobState") in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT",
                                                          "NODE_FAIL", "OUT_OF_MEMORY"),
          240, "the requeued encode job to finish", interval=0.5, on_fail=diag)
    info = cluster.job(jobid)
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0" and info["Restarts"] == "1", diag()
    text = open(log).read()
    assert f"[encode] SIGUSR1 before the time limit: requeueing job {jobid}" in text, diag()
    last = text[text.index(f"[encode] job {jobid} restart 1 nodes 1 tasks 2 cpus/task 1 output {out}"):]
    assert "[encode] ranks exited with 0" in last and f"build pairs {out} -> {prefix} exited with 0" in last, diag()

    # the restart: two ranks of one world; the two units done before the job are skipped, not redone (and so is
    # whatever the first run finished before the requeue), every other unit is encoded once
    runs = {task: r["this_run"] for task, r in _rank_outputs(last).items()}
    assert sorted(runs) == [0, 1], diag()
    assert {(r["rank"], r["world_size"]) for r in runs.values()} == {(0, 2), (1, 2)}
    skipped = sum(r["units_skipped"] for r in runs.values())
    assert skipped >= 2 and skipped + sum(r["units_done"] for r in runs.values()) == units_total
    assert all(r["threads"] == 1 for r in runs.values())  # --cpus-per-task=1 // (0 workers + 1)
    print(f"[slurm encode test] the restart skipped {skipped} of {units_total} units")
    # the merged output is the uninterrupted single-process output, byte for byte
    names = sorted(p.name for p in ref.iterdir() if p.name != "summary.json")
    assert sorted(p.name for p in out.iterdir() if p.name != "summary.json") == names
    for name in names:
        assert (out / name).read_bytes() == (ref / name).read_bytes(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] and summary["balanced"] and summary["rejected"] == {"empty_file": 5}
    # and build over it gave the dataset the reference gives
    for ext in (".bin", ".idx"):
        assert (prefix.parent / f"pairs{ext}").read_bytes() == (tmp_path / "ref_idx" / f"pairs{ext}").read_bytes()
    meta = json.loads((prefix.parent / "pairs.meta.json").read_text())
    assert meta["num_documents"] == summary["written"] == 26
