"""The shortened quickstart end to end through the real data pipeline CLI, trainer and scaling tool.

The HF export + sampling stage needs ``tools/convert_checkpoint.py`` and ``tools/sample.py``; until the quickstart
drives them it exits 4 with a message naming that stage, and this test requires exactly that message (never a
silent pass)."""
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
    assert proc.returncode in (0, 4), log[-4000:]
    if proc.returncode == 4:
        assert "STAGE NOT AVAILABLE: " in log and ("sampling" in log or "export" in log), log[-4000:]
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
