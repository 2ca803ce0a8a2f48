"""encode: every input accounted for, codes equal the tokenizer on independently preprocessed images, rank split
without overlap, and a killed run resumed gives exactly the bytes of an uninterrupted run."""
import filecmp
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from data_pipeline.distributed import RankInfo, detect_rank
from data_pipeline.encode import EncodeConfig, run_encode
from data_pipeline.preprocess import PreprocessConfig, decode_image, preprocess_image
from data_pipeline.shards import finished_shards, iter_shard
from data_pipeline.testing import (image_bytes, write_jsonl_table, write_parquet_table, write_wds_tar)
from data_pipeline.vq import load_vq_tokenizer

RES = 64
REPO = Path(__file__).resolve().parents[1]


def _good(i, w=80, h=64, fmt="PNG"):
    return image_bytes(w, h, seed=i, fmt=fmt)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Inputs with a known number of rejections per reason."""
    d = tmp_path_factory.mktemp("inputs")
    samples = []
    for i in range(10):
        fmt, ext = [("JPEG", "jpg"), ("PNG", "png"), ("WEBP", "webp")][i % 3]
        samples.append({"__key__": f"{i:09d}", ext: _good(i, fmt=fmt), "txt": f"a picture number {i}".encode(),
                        "json": json.dumps({"url": f"http://x/{i}"}).encode()})
    samples.append({"__key__": "corrupt", "jpg": b"\xff\xd8garbage", "txt": b"broken"})           # corrupt_image
    samples.append({"__key__": "truncjpg", "jpg": _good(50, fmt="JPEG")[:200], "txt": b"cut"})     # corrupt_image
    samples.append({"__key__": "nocap", "png": _good(51), "txt": b"   "})                           # missing_caption
    samples.append({"__key__": "jsoncap", "png": _good(52), "json": json.dumps({"caption": "from json"}).encode()})
    samples.append({"__key__": "noimage", "txt": b"caption without image"})                         # missing_image
    samples.append({"__key__": "wide", "png": _good(53, 300, 100), "txt": b"too wide"})             # bad_aspect
    samples.append({"__key__": "tiny", "png": _good(54, 10, 10), "txt": b"too small"})              # too_small
    write_wds_tar(str(d / "part-00000.tar"), samples)
    # a truncated tar: 3 complete samples, then cut inside the 4th sample's image
    whole = write_wds_tar(str(d / "full.tar"), [{"__key__": f"t{i}", "png": _good(60 + i), "txt": f"t {i}".encode()}
                                                for i in range(4)])
    data = Path(whole).read_bytes()
    with tarfile.open(whole) as tf:
        cut = [m for m in tf.getmembers() if m.name == "t3.png"][0].offset_data + 100
    (d / "part-00001.tar").write_bytes(data[:cut])
    os.unlink(whole)
    (d / "imgs").mkdir()
    rows = []
    for i in range(9):
        (d / "imgs" / f"{i}.png").write_bytes(_good(100 + i, 64 + 8 * i, 70))
        rows.append({"image_path": f"imgs/{i}.png", "text": f"table row {i}"})
    rows.append({"image_path": "imgs/missing.png", "text": "gone"})                                 # missing_image
    rows.append({"image_path": "imgs/0.png", "text": ""})                                           # missing_caption
    rows.append({"text": "no path"})                                                                # corrupt_record
    write_jsonl_table(str(d / "table.jsonl"), rows)
    with open(d / "table.jsonl", "a") as f:
        f.write("{not json\n")                                                                      # corrupt_record
    write_parquet_table(str(d / "table2.parquet"),
                        [{"image_path": str(d / "imgs" / f"{i}.png"), "text": f"parquet {i}"} for i in range(5)]
                        + [{"image_path": str(d / "imgs" / "1.png"), "text": None}])              # missing_caption
    return d


def _cfg(inputs, out, **kw):
    base = dict(inputs=[str(inputs)], output_dir=str(out), vq_tokenizer="chameleon-vqgan-tiny",
                preprocess=PreprocessConfig(resolution=RES), batch_size=4, num_workers=0, rows_per_shard=5,
                device="cpu", progress=False, threads=1)
    base.update(kw)
    return EncodeConfig(**base)


EXPECTED_REJECTED = {"corrupt_image": 2, "missing_caption": 3, "missing_image": 2, "bad_aspect": 1, "too_small": 1,
                     "corrupt_record": 2, "truncated_tar": 1}
EXPECTED_WRITTEN = 11 + 3 + 9 + 5  # tar (10 + caption from json), truncated tar, jsonl, parquet


def _all_files(out):
    return sorted(p.name for p in Path(out).iterdir() if p.name != "summary.json")


def test_counts_add_up_and_codes_match_tokenizer(inputs, tmp_path):
    result = run_encode(_cfg(inputs, tmp_path / "out"))
    s = result["summary"]
    assert s["rejected"] == EXPECTED_REJECTED
    assert s["written"] == EXPECTED_WRITTEN
    assert s["read"] == EXPECTED_WRITTEN + sum(EXPECTED_REJECTED.values())
    assert s["balanced"] and s["complete"]
    on_disk = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert on_disk["read"] == s["read"] and on_disk["rejected"] == EXPECTED_REJECTED
    # units: 2 tars + jsonl 13 rows / 5 -> 3 units + parquet 6 rows / 5 -> 2 units
    assert s["units_total"] == 7 and len(finished_shards(str(tmp_path / "out"))) == 7

    tok = load_vq_tokenizer("chameleon-vqgan-tiny")
    cfg = PreprocessConfig(resolution=RES)
    samples = [x for shard in finished_shards(str(tmp_path / "out")) for x in iter_shard(shard)]
    assert len(samples) == EXPECTED_WRITTEN
    assert len({x["key"] for x in samples}) == len(samples)
    by_source = {x["meta"]["source"]: x for x in samples}
    assert by_source["part-00000.tar#jsoncap"]["caption"] == "from json"
    assert by_source["part-00000.tar#000000004"]["meta"]["url"] == "http://x/4"
    # oracle: decode + preprocess each source image independently, encode one at a time
    for src, raw in [("part-00000.tar#000000000", _good(0, fmt="JPEG")), ("part-00000.tar#000000002", _good(2, fmt="WEBP")),
                     ("table.jsonl:4", (inputs / "imgs" / "3.png").read_bytes()),  # 1-based line numbers
                     ("table2.parquet:5", (inputs / "imgs" / "4.png").read_bytes())]:
        arr, meta = preprocess_image(decode_image(raw, cfg), cfg)
        ref = tok.encode(torch.from_numpy(arr)[None].float() / 127.5 - 1)[0].numpy()
        got = by_source[src]
        assert got["codes"].dtype == np.int16 and got["codes"].shape == (8, 8)
        np.testing.assert_array_equal(got["codes"], ref)
        assert got["meta"]["orig_size"] == meta["orig_size"] and got["meta"]["crop_box"] == meta["crop_box"]
        assert got["meta"]["vq_tokenizer"] == "chameleon-vqgan-tiny"
    side = json.loads((tmp_path / "out" / "shard-000001.tar.json").read_text())
    assert side["rejected"] == {"truncated_tar": 1} and side["written"] == 3 and "part-00001.tar" in side["errors"][0]


def test_workers_and_rank_split_give_identical_shards(inputs, tmp_path):
    run_encode(_cfg(inputs, tmp_path / "single"))
    run_encode(_cfg(inputs, tmp_path / "workers", num_workers=2, batch_size=3))
    split = tmp_path / "split"
    r0 = run_encode(_cfg(inputs, split, rank=0, world_size=2))
    assert not r0["summary"]["complete"] and r0["run"]["units_done"] == 4
    r1 = run_encode(_cfg(inputs, split, rank=1, world_size=2))
    assert r1["run"]["units_done"] == 3 and r1["summary"]["complete"]
    names = _all_files(tmp_path / "single")
    # batch size differs for "workers": codes are per image, so shards must still be identical
    for other in ("workers", "split"):
        assert _all_files(tmp_path / other) == names
        match, mismatch, errors = filecmp.cmpfiles(tmp_path / "single", tmp_path / other, names, shallow=False)
        assert not mismatch and not errors, (other, mismatch, errors)


def test_detect_rank_from_env():
    assert detect_rank({}) == RankInfo(0, 1, 0)
    r = detect_rank({"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1"})
    assert (r.rank, r.world_size, r.local_rank) == (5, 8, 1)
    r = detect_rank({"SLURM_ARRAY_TASK_ID": "12", "SLURM_ARRAY_TASK_MIN": "10", "SLURM_ARRAY_TASK_COUNT": "4",
                     "SLURM_PROCID": "1", "SLURM_NTASKS": "2", "SLURM_LOCALID": "1"})
    assert (r.rank, r.world_size, r.local_rank) == (5, 8, 1)
    # every (array task, proc) pair maps to a distinct rank covering [0, world)
    ranks = {detect_rank({"SLURM_ARRAY_TASK_ID": str(a), "SLURM_ARRAY_TASK_COUNT": "3", "RANK": str(p),
                          "WORLD_SIZE": "4"}).rank for a in range(3) for p in range(4)}
    assert ranks == set(range(12))
    with pytest.raises(ValueError):
        detect_rank({"SLURM_ARRAY_TASK_ID": "9", "SLURM_ARRAY_TASK_COUNT": "3"})


class _Interrupting:
    """Wraps a tokenizer and raises after N batches: an interruption in the middle of a shard."""

    def __init__(self, tok, after):
        self.tok, self.after, self.name, self.identity = tok, after, tok.name, tok.identity

    def encode_uint8(self, x):
        self.after -= 1
        if self.after < 0:
            raise KeyboardInterrupt
        return self.tok.encode_uint8(x)


def test_interrupted_in_process_then_resumed_is_identical(inputs, tmp_path):
    run_encode(_cfg(inputs, tmp_path / "ref"))
    tok = load_vq_tokenizer("chameleon-vqgan-tiny")
    with pytest.raises(KeyboardInterrupt):
        run_encode(_cfg(inputs, tmp_path / "resumed"), tokenizer=_Interrupting(tok, after=5))
    done = finished_shards(str(tmp_path / "resumed"))
    assert 0 < len(done) < 7
    assert not list((tmp_path / "resumed").glob("*.partial"))  # aborted shard removed, nothing half-counted
    before = {p: os.stat(p).st_mtime_ns for p in done}
    r = run_encode(_cfg(inputs, tmp_path / "resumed"))
    assert r["run"]["units_skipped"] == len(done)
    assert {p: os.stat(p).st_mtime_ns for p in done} == before  # finished shards were not rewritten
    names = _all_files(tmp_path / "ref")
    assert _all_files(tmp_path / "resumed") == names
    _, mismatch, errors = filecmp.cmpfiles(tmp_path / "ref", tmp_path / "resumed", names, shallow=False)
    assert not mismatch and not errors


KILL_SCRIPT = """
import sys, time
from data_pipeline.encode import EncodeConfig, run_encode
from data_pipeline.preprocess import PreprocessConfig
from data_pipeline.vq import load_vq_tokenizer
tok = load_vq_tokenizer("chameleon-vqgan-tiny")
class Slow:
    name, identity = tok.name, tok.identity
    def encode_uint8(self, x):
        time.sleep(0.15)
        return tok.encode_uint8(x)
run_encode(EncodeConfig(inputs=[sys.argv[1]], output_dir=sys.argv[2], vq_tokenizer="chameleon-vqgan-tiny",
           preprocess=PreprocessConfig(resolution=64), batch_size=2, num_workers=int(sys.argv[3]), rows_per_shard=5,
           device="cpu", progress=False, threads=1), tokenizer=Slow())
"""


@pytest.mark.parametrize("workers", [0, 2])
def test_sigkilled_encode_resumed_by_cli_is_identical(inputs, tmp_path, workers):
    run_encode(_cfg(inputs, tmp_path / "ref"))
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(inputs), str(out), str(workers)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    try:
        while time.time() < deadline:
            if len(finished_shards(str(out))) >= 2 and list(out.glob("*.partial")):
                break
            assert proc.poll() is None, "encode finished before it could be killed"
            time.sleep(0.02)
        else:
            pytest.fail("encode did not reach the middle of a shard in time")
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert list(out.glob("*.partial")), "the kill happened mid-shard"
    assert len(finished_shards(str(out))) < 7
    from data_pipeline.__main__ import main
    rc = main(["encode", str(inputs), "-o", str(out), "--vq", "chameleon-vqgan-tiny", "--resolution", "64",
               "--batch-size", "4", "--num-workers", str(workers), "--rows-per-shard", "5", "--device", "cpu",
               "--no-progress"])
    assert rc == 0
    assert not list(out.glob("*.partial"))
    names = _all_files(tmp_path / "ref")
    assert _all_files(out) == names
    _, mismatch, errors = filecmp.cmpfiles(tmp_path / "ref", out, names, shallow=False)
    assert not mismatch and not errors
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] and summary["balanced"] and summary["rejected"] == EXPECTED_REJECTED


def test_output_inside_input_dir_is_not_read_back(tmp_path):
    write_wds_tar(str(tmp_path / "in.tar"), [{"__key__": f"{i}", "png": _good(i), "txt": b"c"} for i in range(3)])
    first = run_encode(_cfg(tmp_path, tmp_path / "out"))
    second = run_encode(_cfg(tmp_path, tmp_path / "out"))
    assert first["summary"]["units_total"] == second["summary"]["units_total"] == 1
    assert second["run"]["units_skipped"] == 1 and second["summary"]["written"] == 3


@pytest.mark.distributed
def test_two_concurrent_rank_processes_cover_all_units_once(inputs, tmp_path):
    """Two real processes with torchrun-style env write into one directory at the same time."""
    run_encode(_cfg(inputs, tmp_path / "ref"))
    out = tmp_path / "two"
    args = [sys.executable, "-m", "data_pipeline", "encode", str(inputs), "-o", str(out), "--vq",
            "chameleon-vqgan-tiny", "--resolution", "64", "--batch-size", "4", "--num-workers", "0",
            "--rows-per-shard", "5", "--device", "cpu", "--no-progress"]
    procs = []
    for rank in range(2):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank),
               "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        procs.append(subprocess.Popen(args, env=env, cwd=str(REPO), stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    runs = [json.loads(o[0].decode()[o[0].decode().index("{"):])["this_run"] for o in outs]
    assert sorted(r["rank"] for r in runs) == [0, 1] and sum(r["units_done"] for r in runs) == 7
    names = _all_files(tmp_path / "ref")
    assert _all_files(out) == names
    _, mismatch, errors = filecmp.cmpfiles(tmp_path / "ref", out, names, shallow=False)
    assert not mismatch and not errors
    assert json.loads((out / "summary.json").read_text())["complete"]


def test_shards_are_readable_by_webdataset(inputs, tmp_path):
    import webdataset as wds
    run_encode(_cfg(inputs, tmp_path / "out"))
    shard = str(tmp_path / "out" / "shard-000000.tar")
    samples = list(wds.WebDataset(shard, shardshuffle=False).decode())
    assert len(samples) == 11
    assert samples[0]["codes.npy"].dtype == np.int16 and samples[0]["codes.npy"].shape == (8, 8)
    assert samples[0]["txt"] == "a picture number 0" and samples[0]["json"]["source"].endswith("#000000000")


def test_unreadable_tar_is_counted_once(tmp_path):
    (tmp_path / "garbage.tar").write_bytes(b"this is not a tar archive" * 40)
    write_wds_tar(str(tmp_path / "ok.tar"), [{"__key__": "a", "png": _good(1), "txt": b"fine"}])
    s = run_encode(_cfg(tmp_path, tmp_path / "out"))["summary"]
    assert s["rejected"] == {"truncated_tar": 1} and s["written"] == 1 and s["read"] == 2 and s["complete"]
