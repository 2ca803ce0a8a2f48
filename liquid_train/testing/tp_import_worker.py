"""``python -m liquid_train.testing.tp_import_worker HF_DIR OUT_DIR`` under torchrun with 2 processes (gloo):
import an HF checkpoint at TP=2 (``hf_to_megatron``), save that dist checkpoint, and record each rank's loss and
local gradients on ``OUT_DIR/batch.pt`` for the parent test to compare with TP=1 (tests/test_parallel_model.py)."""
from __future__ import annotations

import os
import sys

import torch

from liquid_train.models.builder import build_gpt_model
from liquid_train.models.families import get_model_arch
from liquid_train.models.hf_conversion import hf_to_megatron, load_model_checkpoint
from liquid_train.parallel import destroy_parallel, initialize_parallel


def main(hf_dir: str, out_dir: str) -> None:
    initialize_parallel(tp=2, pp=1, seed=5)
    rank = torch.distributed.get_rank()
    ckpt = os.path.join(out_dir, "ckpt_tp2")
    vocab = hf_to_megatron(hf_dir, ckpt, "llama3.2", "tiny", tp=2, num_image_tokens=64)
    model = build_gpt_model(get_model_arch("llama3.2", "tiny"), vocab, "fp32")
    load_model_checkpoint(model, ckpt)
    batch = torch.load(os.path.join(out_dir, "batch.pt"))
    loss = model(batch["tokens"], batch["position_ids"], batch["attention_mask"], labels=batch["labels"])
    loss.mean().backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    torch.save({"loss": loss.detach(), "grads": grads}, os.path.join(out_dir, f"tp2_rank{rank}.pt"))
    destroy_parallel()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
