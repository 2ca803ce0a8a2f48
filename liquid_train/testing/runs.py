"""A tiny but real training set-up: word-level tokenizer, ``liquid_vocab.json`` and ``pairs``/``text`` indexed
datasets (megatron's format, :mod:`liquid_train.data.testing`), plus the run-config overrides that train one of the
project's families on them in seconds on a CPU. Trainer tests, parallel-equivalence tests and benchmarks all use
this, so what they exercise is the production build path and the production data path."""
from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from typing import List

from liquid_train.data.testing import make_tiny_tokenizer, tiny_vocab, write_tiny_datasets

SEQ_LENGTH = 32


@dataclass(frozen=True)
class TinyRunData:
    root: str

    @property
    def tokenizer(self) -> str:
        return os.path.join(self.root, "tokenizer")

    @property
    def vocab(self) -> str:
        return os.path.join(self.root, "liquid_vocab.json")

    @property
    def pairs(self) -> str:
        return os.path.join(self.root, "data", "pairs")

    @property
    def text(self) -> str:
        return os.path.join(self.root, "data", "text")


def ensure_tiny_run_data(directory: str, seed: int = 0, num_image_tokens: int = 64) -> TinyRunData:
    """Write the data set-up into ``directory`` unless it is there. Deterministic; written into a private
    directory and renamed into place, so several processes (torchrun ranks) may call this at once.
    ``num_image_tokens=512`` matches the ``chameleon-vqgan-tiny`` codebook (runs that draw T2I samples)."""
    data = TinyRunData(os.path.abspath(directory))
    if os.path.exists(data.vocab):
        return data
    tmp = f"{data.root}.tmp-{uuid.uuid4().hex[:8]}"
    staged = TinyRunData(tmp)
    tokenizer = make_tiny_tokenizer(staged.tokenizer)
    tiny_vocab(tokenizer, num_image_tokens).save(staged.root)
    write_tiny_datasets(os.path.join(tmp, "data"), num_pairs=200, num_texts=150, text_range=(5, 120), seed=seed,
                        num_image_tokens=num_image_tokens)
    try:
        os.rename(tmp, data.root)
    except OSError:  # another process won the race with identical content
        shutil.rmtree(tmp, ignore_errors=True)
    return data


def tiny_run_overrides(data: TinyRunData, family: str = "qwen2.5", iters: int = 20) -> List[str]:
    """Run-config overrides: the family's tiny size on the data above, fp32, 4 sequences of 32 per step."""
    return [
        f"model.family={family}", "model.size=tiny", f"model.vocab={data.vocab}", "model.precision=fp32",
        f"data.vocab={data.vocab}", f"data.tokenizer={data.tokenizer}", f"data.pairs_path={data.pairs}",
        f"data.text_path={data.text}", f"data.seq_length={SEQ_LENGTH}", "data.valid_fraction=0.1",
        f"train.iters={iters}", "train.global_batch_size=4", "train.micro_batch_size=2", "train.eval_iters=1",
        "optimizer.lr=3e-3", "optimizer.clip_grad=1.0", "optimizer.z_loss_weight=1e-4", "schedule.style=cosine",
        "schedule.warmup_steps=2", "logging.wandb_mode=disabled", "logging.tensorboard=false",
        "logging.progress=false",
    ]


def wait_for_step(proc, run_dir: str, step: int, timeout: float = 240) -> None:
    """Block until the run in ``run_dir`` (started as ``proc``) has logged train step ``step`` in its metrics.jsonl;
    a run that exits first, or a timeout, fails the calling test with the run's output. The kill -9 tests use it to
    kill at a known point."""
    path = os.path.join(run_dir, "metrics.jsonl")
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"run exited early ({proc.returncode}):\n{proc.stdout.read()[-3000:]}")
        if os.path.exists(path):
            with open(path) as f:
                steps = [json.loads(line)["step"] for line in f if line.strip().endswith("}")]
            if steps and max(steps) >= step:
                return
        time.sleep(0.05)
    raise AssertionError(f"step {step} not reached in {timeout}s")
