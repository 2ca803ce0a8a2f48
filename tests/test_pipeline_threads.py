"""--threads: the default is cores // (workers + 1), and the count is set inside every decode worker and in the
encoder process (and restored for an in-process caller afterwards)."""
import os

import pytest
import torch

import data_pipeline.encode as encode_mod
from data_pipeline import threads
from data_pipeline.encode import EncodeConfig, run_encode
from data_pipeline.preprocess import PreprocessConfig
from data_pipeline.testing import image_bytes, write_wds_tar
from data_pipeline.vq import load_vq_tokenizer


@pytest.fixture
def cores(monkeypatch):
    def set_cores(n, quota=None):
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(n)))
        monkeypatch.setattr(threads, "_cgroup_quota_cores", lambda: quota)
    for key in ("SLURM_CPUS_PER_TASK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    return set_cores


def test_default_is_cores_over_workers_plus_one(cores):
    cores(16)
    assert [threads.default_threads(w) for w in (0, 1, 3, 7, 15, 40)] == [16, 8, 4, 2, 1, 1]
    assert threads.default_threads(1, {"SLURM_CPUS_PER_TASK": "8"}) == 4  # srun's share of the node
    assert threads.default_threads(1, {"LOCAL_WORLD_SIZE": "4"}) == 2     # torchrun processes share the cores
    cores(16, quota=6)                                                    # cgroup cpu.max of 6 CPUs
    assert threads.default_threads(1) == 3


class RecordingTokenizer:
    def __init__(self, tok, seen):
        self.tok, self.seen, self.name, self.identity = tok, seen, tok.name, tok.identity

    def encode_uint8(self, x):
        self.seen.append(torch.get_num_threads())
        return self.tok.encode_uint8(x)


@pytest.mark.parametrize("explicit", [None, 3])
def test_threads_set_in_workers_and_encoder(tmp_path, monkeypatch, cores, explicit):
    cores(6)  # default with 2 workers: 6 // 3 = 2 (torch's own default in a DataLoader worker is 1)
    for t in range(2):
        write_wds_tar(str(tmp_path / f"{t}.tar"), [{"__key__": f"{t}{i}", "png": image_bytes(64, 64, i),
                                                    "txt": b"c"} for i in range(3)])
    log = tmp_path / "worker_threads.txt"
    real_decode = encode_mod.decode_image

    def recording_decode(data, cfg):  # runs inside the (forked) DataLoader workers
        with open(log, "a") as f:
            f.write(f"{os.getpid()} {torch.get_num_threads()}\n")
        return real_decode(data, cfg)

    monkeypatch.setattr(encode_mod, "decode_image", recording_decode)
    seen = []
    before = torch.get_num_threads()
    tok = RecordingTokenizer(load_vq_tokenizer("chameleon-vqgan-tiny"), seen)
    result = run_encode(EncodeConfig(inputs=[str(tmp_path / "0.tar"), str(tmp_path / "1.tar")],
                                     output_dir=str(tmp_path / "out"), vq_tokenizer="chameleon-vqgan-tiny",
                                     preprocess=PreprocessConfig(resolution=64), num_workers=2, device="cpu",
                                     progress=False, threads=explicit), tokenizer=tok)
    want = explicit or 2
    records = [line.split() for line in log.read_text().splitlines()]
    assert len(records) == 6 and len({pid for pid, _ in records}) == 2  # two worker processes decoded
    assert all(pid != str(os.getpid()) for pid, _ in records)
    assert {int(n) for _, n in records} == {want}
    assert seen and set(seen) == {want}
    assert result["run"]["threads"] == want and result["run"]["workers"] == 2
    assert torch.get_num_threads() == before
