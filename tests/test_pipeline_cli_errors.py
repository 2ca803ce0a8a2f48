"""Bad input, output or settings: one line on stderr naming the file or flag and what to do, exit 2, no traceback,
and nothing created; and the messages of rejected records (1-based line numbers, empty vs missing ``image_path``,
zero-byte files)."""
import ctypes
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from data_pipeline.__main__ import main
from data_pipeline.encode import EncodeConfig, run_encode
from data_pipeline.preprocess import PreprocessConfig
from data_pipeline.testing import image_bytes, write_wds_tar

REPO = Path(__file__).resolve().parents[1]


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture
def tar(tmp_path):
    return write_wds_tar(str(tmp_path / "in.tar"), [{"__key__": "a", "png": image_bytes(64, 64, 0), "txt": b"x"}])


def encode_args(inputs, out, *extra):
    return ["encode", *map(str, inputs), "-o", str(out), "--vq", "chameleon-vqgan-tiny", "--resolution", "64",
            "--device", "cpu", "--num-workers", "0", "--threads", "1", "--no-progress", *extra]


def test_missing_input_creates_nothing(tmp_path, capsys):
    out = tmp_path / "out" / "nested"
    assert main(encode_args([tmp_path / "nope.tar"], out)) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith("liquid-data encode: input ") and "nope.tar: no such file or directory" in line
    assert not (tmp_path / "out").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(encode_args([empty], out)) == 2
    assert "no .tar, .jsonl or .parquet files found" in one_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


def test_output_that_is_a_file(tar, tmp_path, capsys):
    f = tmp_path / "a_file"
    f.write_text("x")
    assert main(encode_args([tar], f)) == 2
    assert f"-o {f}: is a file" in one_line(capsys.readouterr().err)
    assert main(encode_args([tar], f / "sub")) == 2
    assert f"cannot create it, {f} is a file" in one_line(capsys.readouterr().err)


def _without_dac_override():
    """Root writes anywhere through CAP_DAC_OVERRIDE: drop it from the bounding set so the child (still root) meets
    the permission bits like any user. prctl(PR_CAPBSET_DROP=24, CAP_DAC_OVERRIDE=1)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(24, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP, CAP_DAC_OVERRIDE)")


def test_unwritable_output_is_found_before_the_vq_loads(tmp_path):
    """--vq names a tokenizer without weights, so a check after the VQ load would report the weights instead."""
    root = tmp_path
    src = write_wds_tar(str(root / "in.tar"), [{"__key__": "a", "png": image_bytes(64, 64, 0), "txt": b"x"}])
    ro = root / "readonly"
    ro.mkdir()
    os.chmod(ro, 0o555)
    try:
        cmd = [sys.executable, "-m", "data_pipeline", "encode", src, "-o", str(ro), "--vq", "chameleon-vqgan",
               "--device", "cpu", "--no-progress"]
        env = {**os.environ, "PYTHONPATH": str(REPO), "HOME": str(root), "OMP_NUM_THREADS": "1"}
        kw = {"preexec_fn": _without_dac_override} if os.geteuid() == 0 else {}
        p = subprocess.run(cmd, env=env, cwd=str(REPO), capture_output=True, text=True, timeout=120, **kw)
        assert p.returncode == 2, p.stderr
        assert f"-o {ro}: is not writable" in one_line(p.stderr)
        p = subprocess.run(cmd[:6] + [str(ro / "new")] + cmd[7:], env=env, cwd=str(REPO), capture_output=True,
                           text=True, timeout=120, **kw)
        assert p.returncode == 2 and f"cannot be created in {ro} (not writable)" in one_line(p.stderr)
        assert os.listdir(ro) == []
    finally:
        os.chmod(ro, 0o755)


def test_missing_vq_weights_name_where_to_put_them(tar, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("LIQUID_CHAMELEON_VQGAN_DIR", raising=False)
    out = tmp_path / "out"
    args = encode_args([tar], out)
    args[args.index("chameleon-vqgan-tiny")] = "chameleon-vqgan"
    assert main(args) == 2
    line = one_line(capsys.readouterr().err)
    assert "no weights found" in line and "$LIQUID_CHAMELEON_VQGAN_DIR" in line and "vqgan.ckpt" in line
    assert "~/.cache/liquid/chameleon-vqgan" in line
    assert not out.exists()
    args[args.index("chameleon-vqgan")] = str(tmp_path / "no_such_vq")
    assert main(args) == 2
    assert "neither a registered name" in one_line(capsys.readouterr().err)
    assert not out.exists()


def test_cli_process_prints_one_line_and_exits_2(tmp_path):
    p = subprocess.run([sys.executable, "-m", "data_pipeline", *encode_args([tmp_path / "missing"], tmp_path / "o")],
                       env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and one_line(p.stderr).endswith("no such file or directory (expected a .tar, .jsonl, "
                                                              ".parquet, dir or glob)")
    assert p.stdout == "" and not (tmp_path / "o").exists()


def test_bad_numbers_are_one_line_errors(tar, tmp_path, capsys):
    for flag, value in (("--threads", "0"), ("--batch-size", "0"), ("--resolution", "-1")):
        assert main(encode_args([tar], tmp_path / "o", flag, value)) == 2
        assert f"{flag} must be >= " in one_line(capsys.readouterr().err)
    assert main(encode_args([tar], tmp_path / "o", "--rank", "3", "--world-size", "2")) == 2
    assert "--rank and --world-size" in one_line(capsys.readouterr().err)
    assert not (tmp_path / "o").exists()


def test_rejection_messages_name_the_line_and_the_problem(tmp_path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "ok.png").write_bytes(image_bytes(64, 64, 1))
    (tmp_path / "imgs" / "zero.png").write_bytes(b"")
    lines = [
        json.dumps({"image_path": "imgs/ok.png", "text": "fine"}),      # line 1
        "",                                                              # line 2: blank
        json.dumps({"image_path": "", "text": "empty path"}),           # line 3
        "   ",                                                           # line 4: blank
        json.dumps({"text": "no path"}),                                 # line 5
        json.dumps({"image_path": 5, "text": "number"}),                 # line 6
        json.dumps({"image_path": "imgs/zero.png", "text": "zero"}),    # line 7
        "{broken",                                                       # line 8
    ]
    (tmp_path / "t.jsonl").write_text("\n".join(lines) + "\n")
    write_wds_tar(str(tmp_path / "z.tar"), [{"__key__": "k", "jpg": b"", "txt": b"zero member"},
                                            {"__key__": "n", "jpg": b"not an image", "txt": b"junk"}])
    out = tmp_path / "out"
    s = run_encode(EncodeConfig(inputs=[str(tmp_path / "t.jsonl"), str(tmp_path / "z.tar")], output_dir=str(out),
                                vq_tokenizer="chameleon-vqgan-tiny", preprocess=PreprocessConfig(resolution=64),
                                num_workers=0, device="cpu", progress=False, threads=1))["summary"]
    assert s["rejected"] == {"corrupt_record": 4, "empty_file": 2, "corrupt_image": 1} and s["written"] == 1
    errors = json.loads((out / "shard-000000.tar.json").read_text())["errors"]
    assert errors == [
        "t.jsonl:3: corrupt_record: 'image_path' is empty",
        "t.jsonl:5: corrupt_record: no 'image_path' field",
        "t.jsonl:6: corrupt_record: 'image_path' is int, not a path",
        f"t.jsonl:7: empty_file: {tmp_path / 'imgs' / 'zero.png'}: 0 bytes",
        errors[4],
    ]
    assert errors[4].startswith("t.jsonl:8: corrupt_record: bad JSON")
    tar_errors = json.loads((out / "shard-000001.tar.json").read_text())["errors"]
    assert tar_errors[0] == "z.tar#k: empty_file: 0 bytes"
    assert tar_errors[1].startswith("z.tar#n: corrupt_image: UnidentifiedImageError")
