"""The shortened quickstart end to end through the real data pipeline CLI, trainer, scaling tool, HF converter and
sampler: every stage must run (exit 0) and leave its outputs."""
import json
import math
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_short_quickstart_end_to_end(tmp_path):
    out = tmp_path / "qs"
    proc = subprocess.run([sys.executable, "-m", "liquid_train.quickstart", "--out", str(out), "--short"],
                          cwd=REPO, capture_output=True, text=True, timeout=1500,
                          env=dict(os.environ, WANDB_MODE="disabled"))
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    summary = json.load(open(out / "shards" / "summary.json"))
    assert summary["written"] == 300 and summary["read"] == summary["written"] + sum(
        summary["rejected"].values() if isinstance(summary["rejected"], dict) else [summary["rejected"]])
    for prefix in ("pairs", "text"):
        assert (out / "data" / f"{prefix}.bin").exists() and (out / "data" / f"{prefix}.idx").exists()
    for run in ("s_1-1-1", "m_1-1-1"):
        lines = [json.loads(x) for x in open(out / "runs" / run / "metrics.jsonl")]
        train = [x for x in lines if x["kind"] == "train"]
        assert len(train) == 6 and all(math.isfinite(x["loss"]) for x in train)
        assert all(x["tokens/t2i"] > 0 and x["tokens/i2t"] > 0 and x["tokens/text"] > 0 for x in train)
    assert (out / "scaling" / "loss_vs_flops.png").exists()
    assert (out / "vq" / "vqgan.ckpt").exists() and (out / "vq" / "vqgan.yaml").exists()
    # HF export + sampling: both mixed runs exported, sampled and scored; the CLI's T2I grid written
    accuracy = json.load(open(out / "eval" / "accuracy.json"))
    assert set(accuracy) == {"s_1-1-1", "m_1-1-1", "vq_ceiling"}
    assert set(accuracy["vq_ceiling"]["t2i"]) == {"kind", "colour", "position", "count", "background", "all"}
    for run, acc in accuracy.items():
        if run == "vq_ceiling":
            continue
        assert (out / "exports" / run / "config.json").exists() and (out / "exports" / run / "liquid_vocab.json").exists()
        assert acc["num_scenes"] == 8
        for task in ("t2i", "i2t"):
            assert set(acc[task]) == {"kind", "colour", "position", "count", "background", "all"}
            assert all(0.0 <= v <= 1.0 for v in acc[task].values())
        assert (out / "eval" / run / "t2i.png").exists() and (out / "eval" / run / "i2t.png").exists()
    assert (out / "pictures" / "t2i_m_1-1-1.png").exists()
    results = (out / "results.md").read_text()
    assert "| validation loss falls with size" in results and "not measured" in results  # --short: 2 sizes only
    summary = json.load(open(out / "summary.json"))
    assert summary["accuracy"] == accuracy and len(summary["answers"]) == 4
