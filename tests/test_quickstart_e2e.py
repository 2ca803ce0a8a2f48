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
    for run in ("s_1-1-1_seed0", "m_1-1-1_seed0"):
        lines = [json.loads(x) for x in open(out / "runs" / run / "metrics.jsonl")]
        train = [x for x in lines if x["kind"] == "train"]
        assert len(train) == 8 and all(math.isfinite(x["loss"]) for x in train)
        assert all(x["tokens/t2i"] > 0 and x["tokens/i2t"] > 0 and x["tokens/text"] > 0 for x in train)
        assert sorted(os.listdir(out / "runs" / run / "checkpoints")) == ["iter_0000004", "iter_0000008", "latest"]
    assert (out / "scaling" / "loss_vs_flops.png").exists()
    assert (out / "vq" / "vqgan.ckpt").exists() and (out / "vq" / "vqgan.yaml").exists()
    # HF export + sampling: both mixed runs exported (final and mid-run), sampled and scored; the CLI's grid written
    evaluation = json.load(open(out / "eval" / "accuracy.json"))
    accuracy = evaluation["accuracy"]
    attrs = {"kind", "colour", "position", "count", "background", "all"}
    assert set(accuracy) == {"s_1-1-1_seed0", "m_1-1-1_seed0"} and set(evaluation["ceiling"]) == attrs
    for run, acc in accuracy.items():
        assert (out / "exports" / run / "config.json").exists() and (out / "exports" / run / "liquid_vocab.json").exists()
        assert (out / "exports" / f"{run}_step4" / "config.json").exists()
        assert acc["num_scenes"] == 8 and set(acc["t2i"]) == {"cfg1", "cfg3", "cfg7"}
        for scores in (*acc["t2i"].values(), acc["i2t"]):
            assert set(scores) == attrs and all(0.0 <= v <= 1.0 for v in scores.values())
        assert (out / "eval" / run / "t2i.png").exists() and (out / "eval" / run / "i2t.png").exists()
    assert {(p["run"], p["step"]) for p in evaluation["points"]} == {
        (r, s) for r in accuracy for s in (4, 8)}  # accuracy-vs-loss: mid-run and final checkpoints
    assert (out / "pictures" / "t2i_m_1-1-1.png").exists() and (out / "pictures" / "t2i_accuracy_vs_val_loss.png").exists()
    results = (out / "results.md").read_text()
    assert "| validation loss falls with size" in results and "not measured" in results  # --short: 2 sizes only
    assert "1 seed per run" in results and "R² =" in results
    summary = json.load(open(out / "summary.json"))
    assert summary["evaluation"] == evaluation and len(summary["answers"]) == 4 and summary["seeds"] == 1
    # the console is for people: stage headers and tables, no library INFO lines (those are in the logs)
    assert "[8/8] report" in proc.stdout and "INFO" not in proc.stdout and "megatron" not in proc.stdout.lower()
    assert (out / "logs" / "train_s_1-1-1_seed0.log").stat().st_size > 0
