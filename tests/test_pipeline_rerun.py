"""Reruns check themselves: an output records its settings, a rerun with other settings stops with one line naming
the setting and the file (before the VQ loads, before anything is written), ``--force`` starts a new output next
to it (and resumes that one when rerun), and ``summary.json`` describes what is on disk."""
import json
import os
from pathlib import Path

import pytest

from data_pipeline.__main__ import main
from data_pipeline.settings import SETTINGS_FILE, forced_output_dir, settings_hash
from data_pipeline.shards import finished_shards
from data_pipeline.testing import image_bytes, write_wds_tar
from data_pipeline.vq import save_vqgan
from data_pipeline.vq.registry import weights_identity
from data_pipeline.vq_train import build_tiny_model


@pytest.fixture
def tars(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    for t in range(2):
        write_wds_tar(str(d / f"{t}.tar"), [{"__key__": f"{t}{i}", "png": image_bytes(80, 64, 10 * t + i),
                                             "txt": f"picture {t} {i}".encode()} for i in range(3)])
    return d


def encode(inputs, out, *extra, vq="chameleon-vqgan-tiny"):
    return main(["encode", *map(str, inputs), "-o", str(out), "--vq", vq, "--resolution", "64", "--device", "cpu",
                 "--num-workers", "0", "--threads", "1", "--no-progress", *extra])


def snapshot(out: Path):
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(out.iterdir())}


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_settings_recorded_and_summary_describes_disk(tars, tmp_path, capsys):
    out = tmp_path / "out"
    assert encode([tars], out) == 0
    settings = json.loads((out / SETTINGS_FILE).read_text())
    assert settings["resolution"] == 64 and settings["pad_to_square"] is False and settings["min_side"] == 16
    assert settings["max_aspect_ratio"] == 2.0 and settings["jpeg_draft"] is False and settings["dtype"] == "float32"
    assert settings["vq_tokenizer"] == "chameleon-vqgan-tiny" and settings["units_total"] == 2
    assert settings["vq_identity"] == weights_identity(build_tiny_model_seeded())
    assert settings["inputs"] == sorted(str(p) for p in tars.glob("*.tar"))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"] == settings and summary["settings_hash"] == settings_hash(settings)
    for shard in finished_shards(str(out)):
        assert json.loads(Path(shard + ".json").read_text())["settings_hash"] == settings_hash(settings)


def build_tiny_model_seeded():
    from data_pipeline.vq.registry import build_vq_module
    return build_vq_module("chameleon-vqgan-tiny")


@pytest.mark.parametrize("flags,setting,flag", [
    (["--resolution", "32", "--pad-to-square"], "resolution", "--resolution"),
    (["--pad-to-square"], "pad_to_square", "--pad-to-square"),
    (["--min-side", "40"], "min_side", "--min-side"),
    (["--max-aspect-ratio", "3"], "max_aspect_ratio", "--max-aspect-ratio"),
    (["--rows-per-shard", "7"], "rows_per_shard", "--rows-per-shard"),
])
def test_rerun_with_other_settings_stops_naming_setting_and_file(tars, tmp_path, capsys, flags, setting, flag):
    out = tmp_path / "out"
    assert encode([tars], out) == 0
    before = snapshot(out)
    capsys.readouterr()
    # --vq names a tokenizer without weights: the settings are checked before any VQ is loaded
    args = ["encode", str(tars), "-o", str(out), "--vq", "chameleon-vqgan", "--device", "cpu", "--num-workers", "0",
            "--no-progress", "--resolution", "64", *flags]
    assert main(args) == 2
    line = one_line(capsys.readouterr().err)
    assert f"{out / SETTINGS_FILE}: {setting} was" in line and flag in line and "--force" in line, line
    assert snapshot(out) == before  # nothing rewritten, summary included


def test_inputs_and_vq_weights_are_settings(tars, tmp_path, capsys):
    out = tmp_path / "out"
    assert encode([tars], out) == 0
    write_wds_tar(str(tars / "2.tar"), [{"__key__": "x", "png": image_bytes(64, 64, 99), "txt": b"new"}])
    capsys.readouterr()
    assert encode([tars], out) == 2
    line = one_line(capsys.readouterr().err)
    assert "inputs was 2 files for this output, now 3" in line and "added " + str(tars / "2.tar") in line
    os.unlink(tars / "2.tar")
    # the same checkpoint directory, other weights: caught by the weights' hash, not the name
    vq_dir = tmp_path / "vq"
    save_vqgan(build_tiny_model(seed=1), vq_dir)
    out2 = tmp_path / "out2"
    assert encode([tars], out2, vq=str(vq_dir)) == 0
    save_vqgan(build_tiny_model(seed=2), vq_dir)
    capsys.readouterr()
    assert encode([tars], out2, vq=str(vq_dir)) == 2
    line = one_line(capsys.readouterr().err)
    assert f"{out2 / SETTINGS_FILE}: vq_identity was" in line and "--vq (its weights)" in line


def test_force_starts_a_new_output_and_resumes_it(tars, tmp_path, capsys):
    out = tmp_path / "out"
    assert encode([tars], out) == 0
    before = snapshot(out)
    capsys.readouterr()
    assert encode([tars], out, "--pad-to-square", "--force") == 0
    cap = capsys.readouterr()
    new = Path(json.loads(cap.out[cap.out.index("{"):])["output_dir"])
    assert new.parent == out.parent and new.name.startswith("out-") and new != out
    assert "pad_to_square" in cap.err and str(new) in cap.err
    assert snapshot(out) == before  # the old output is untouched
    settings = json.loads((new / SETTINGS_FILE).read_text())
    assert settings["pad_to_square"] is True and str(new) == forced_output_dir(str(out), settings)
    summary = json.loads((new / "summary.json").read_text())
    assert summary["complete"] and summary["settings"]["pad_to_square"] is True and summary["written"] == 6
    # the same forced command again: resumes the new output (nothing to do), creates no third directory
    made = snapshot(new)
    assert encode([tars], out, "--pad-to-square", "--force") == 0
    cap = capsys.readouterr()
    assert json.loads(cap.out[cap.out.index("{"):])["this_run"]["units_skipped"] == 2
    assert {k: v for k, v in snapshot(new).items() if k != "summary.json"} == \
        {k: v for k, v in made.items() if k != "summary.json"}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["in", "out", new.name])
    # the new output is never read back as input when the inputs directory holds it
    assert encode([tmp_path], tmp_path / "in" / "out3") == 0


def test_output_without_recorded_settings_is_refused(tars, tmp_path, capsys):
    out = tmp_path / "old"
    out.mkdir()
    (out / "shard-000000.tar").write_bytes(b"")
    (out / "shard-000000.tar.json").write_text("{}")
    assert encode([tars], out) == 2
    line = one_line(capsys.readouterr().err)
    assert "holds shards but no encode_settings.json" in line and "--force" in line
