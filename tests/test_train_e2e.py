"""End to end on the real components: ``liquid-train`` CLI, a tiny model family from ``liquid_train.models`` and
the mixed-task data of ``liquid_train.data`` (indexed datasets written in the real on-disk format).

Checks: the loss falls; per-task losses and counts are present; the per-task sample counts follow the configured
mixture (oracle: the mixture weights); a task with weight 0 has no tokens; validation per task; config.yaml.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_tiny_model_loss_falls_on_mixed_data_with_per_task_metrics(tmp_path):
    from liquid_train.data.testing import make_tiny_tokenizer, tiny_vocab, write_tiny_datasets

    tok_dir = str(tmp_path / "tok")
    tokenizer = make_tiny_tokenizer(tok_dir)
    vocab = tiny_vocab(tokenizer, num_image_tokens=512)  # the codebook of the sampling VQ (chameleon-vqgan-tiny)
    vocab.save(str(tmp_path))
    pairs, text = write_tiny_datasets(str(tmp_path / "data"), num_pairs=300, num_texts=200, text_range=(20, 150),
                                      num_image_tokens=512)
    run_dir = str(tmp_path / "run")
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="2")
    cmd = [sys.executable, "-m", "liquid_train.cli", "--config", os.path.join(REPO, "configs/runs/tiny_cpu.yaml"),
           f"run_dir={run_dir}", f"model.vocab={tmp_path}", f"data.vocab={tmp_path}", f"data.tokenizer={tok_dir}",
           f"data.pairs_path={pairs}", f"data.text_path={text}", "data.mixture={text: 1, t2i: 2, i2t: 0}",
           "train.iters=30", "train.eval_interval=15", "checkpoint.save_interval=15", "logging.progress=false",
           "data.cfg_drop_prob=0.0", "sampling.interval=30", "sampling.vq_tokenizer=chameleon-vqgan-tiny",
           "sampling.image_tokens=16", "sampling.prompts=[w1 w2,w3]"]
    out = subprocess.run(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         timeout=400)
    assert out.returncode == 0, out.stdout[-5000:]
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        recs = [json.loads(line) for line in f]
    train = [r for r in recs if r["kind"] == "train"]
    valid = [r for r in recs if r["kind"] == "valid"]
    assert [r["step"] for r in train] == list(range(1, 31))
    first, last = sum(r["loss"] for r in train[:5]) / 5, sum(r["loss"] for r in train[-5:]) / 5
    assert last < first - 0.5, (first, last)
    # per-task metrics: text and t2i present, i2t (weight 0) absent
    assert all(r["tokens/i2t"] == 0 and r["loss/i2t"] is None for r in train)
    assert all(r["loss/t2i"] is not None and r["tokens/t2i"] > 0 for r in train)
    assert sum(r["tokens/text"] for r in train) > 0
    # t2i loss tokens: the 16 codes + <eoi> + eos of each T2I sample
    assert all(r["tokens/t2i"] == 18 * r["samples/t2i"] for r in train)
    # the mixture: t2i:text samples = 2:1, a text sample being a window of seq_length (128) text positions, all of
    # them loss tokens. Exact on every prefix of the sample stream upstream; the packer's window (8 open sequences)
    # reorders samples across sequence boundaries, so a prefix of packed sequences is within a few %.
    n_text = sum(r["tokens/text"] for r in train) / 128
    n_t2i = sum(r["samples/t2i"] for r in train)
    assert n_text > 50 and abs(n_t2i - 2 * n_text) <= 0.05 * (n_t2i + n_text), (n_text, n_t2i)
    # loss is the token-weighted mean of the task losses
    for r in train:
        mixed = (r["loss/text"] * r["tokens/text"] + r["loss/t2i"] * r["tokens/t2i"]) / (r["tokens/text"] + r["tokens/t2i"])
        assert abs(mixed - r["loss"]) < 1e-5 * r["loss"]
    assert 0 <= train[-1]["image_top1"] <= 1 and train[-1]["grad_norm"] > 0
    assert [v["step"] for v in valid] == [15, 30]
    # the data stream's own report: packing efficiency, samples and epochs per task of the sequences consumed
    data = [r for r in recs if r["kind"] == "data"]
    assert [d["step"] for d in data] == [15, 30]
    assert 0.5 < data[-1]["packing_efficiency"] <= 1.0 and "samples/i2t" not in data[-1]  # i2t has weight 0
    assert data[-1]["samples/t2i"] > data[0]["samples/t2i"] > 0
    assert data[-1]["epochs/t2i"] == pytest.approx(data[-1]["samples/t2i"] / 285)  # 300 pairs, 5% held out
    assert valid[-1]["val_loss/t2i"] is not None and valid[-1]["val_loss/i2t"] is None
    assert valid[-1]["val_loss"] < valid[0]["val_loss"] + 0.5
    assert train[-1]["consumed_tokens"] == 30 * 8 * 128 and train[-1]["flops"] > 0
    with open(os.path.join(run_dir, "config.yaml")) as f:
        text_cfg = f.read()
    assert "family: qwen2.5" in text_cfg
    with open(os.path.join(run_dir, "run_info.json")) as f:
        info = json.load(f)
    assert info["num_params"] > 0 and info["model"]["attention_backend"] == "local"
    ck = os.path.join(run_dir, "checkpoints", "iter_0000030")
    for sidecar in ("liquid_vocab.json", "liquid_model.json", "trainer_state.json"):
        assert os.path.exists(os.path.join(ck, sidecar)), sidecar
    assert os.path.isdir(os.path.join(run_dir, "tensorboard"))
    from PIL import Image

    from liquid_train.inference.grid import image_grid

    grid = Image.open(os.path.join(run_dir, "samples", "t2i_step0000030.png"))
    # two prompts, 4x4 codes decoded at 8x upsampling (32 px), tiled with their captions
    assert grid.size == image_grid(np.zeros((2, 32, 32, 3), np.uint8), ["w1 w2", "w3"]).size
