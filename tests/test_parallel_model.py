"""TP=2 (two gloo processes) gives the same loss and gradients as TP=1; a TP=2 dist checkpoint loads at TP=1."""
import os

import pytest
import torch

from helpers_model import save_tiny_hf
from liquid_train.models.builder import VocabRows, build_gpt_model
from liquid_train.models.families import get_model_arch
from liquid_train.models.hf_conversion import SafetensorsReader, load_hf_into_model, load_model_checkpoint
from liquid_train.models.vocab_extension import plan_vocab
from liquid_train.parallel import destroy_parallel, initialize_parallel
from liquid_train.testing.distributed import run_distributed


def _batch(b=2, s=16):
    gen = torch.Generator().manual_seed(7)
    tokens = torch.randint(10, 500, (b, s + 1), generator=gen)
    mask = torch.triu(torch.ones(s, s, dtype=torch.bool), 1)[None, None].repeat(b, 1, 1, 1)
    mask[:, :, 9:, :9] = True  # two packed samples
    return {"tokens": tokens[:, :-1], "labels": tokens[:, 1:], "position_ids": torch.arange(s).expand(b, s),
            "attention_mask": mask}


@pytest.mark.distributed
@pytest.mark.slow
def test_tp2_matches_tp1_and_checkpoint_reshards(tmp_path):
    hf_dir, out = str(tmp_path / "hf"), str(tmp_path)
    save_tiny_hf("llama3.2", hf_dir)
    batch = _batch()
    torch.save(batch, os.path.join(out, "batch.pt"))
    run_distributed("liquid_train.testing.tp_import_worker", [hf_dir, out], nproc=2, timeout=240)

    arch = get_model_arch("llama3.2", "tiny")
    vocab = plan_vocab(arch, 64)
    rows = VocabRows(vocab.vocab_size, vocab.padded_vocab_size(2))  # the padding the TP=2 checkpoint was made with
    initialize_parallel(1, 1, seed=5)
    try:
        ref = build_gpt_model(arch, rows, "fp32")
        load_hf_into_model(ref, SafetensorsReader(hf_dir), arch, vocab)
        loss = ref(batch["tokens"], batch["position_ids"], batch["attention_mask"], labels=batch["labels"])
        loss.mean().backward()
        full_grads = {n: (p, p.grad) for n, p in ref.named_parameters()}

        for rank in range(2):
            got = torch.load(os.path.join(out, f"tp2_rank{rank}.pt"))
            torch.testing.assert_close(got["loss"], loss.detach(), rtol=1e-5, atol=1e-6)
            assert set(got["grads"]) == set(full_grads)
            for name, grad in got["grads"].items():
                param, full = full_grads[name]
                # slice the TP=1 gradient the way rank `rank` holds the parameter
                want = _slice_for(full, name, rank)
                torch.testing.assert_close(grad, want, rtol=1e-4, atol=1e-6, msg=name)

        reloaded = build_gpt_model(arch, rows, "fp32").eval()
        load_model_checkpoint(reloaded, os.path.join(out, "ckpt_tp2"))
        ref.eval()
        with torch.no_grad():
            a = reloaded(batch["tokens"], batch["position_ids"], batch["attention_mask"])
            b = ref(batch["tokens"], batch["position_ids"], batch["attention_mask"])
        assert torch.equal(a, b)
    finally:
        destroy_parallel()


_TP_DIMS = {"linear_qkv": 0, "linear_fc1": 0, "linear_proj": 1, "linear_fc2": 1, "word_embeddings": 0,
            "output_layer": 0}


def _slice_for(full: torch.Tensor, name: str, rank: int, tp: int = 2) -> torch.Tensor:
    if "norm" in name:
        return full
    for key, dim in _TP_DIMS.items():
        if key in name:
            if key == "linear_fc1":
                gate, up = torch.chunk(full, 2, 0)
                return torch.cat([torch.chunk(gate, tp, 0)[rank], torch.chunk(up, tp, 0)[rank]], 0)
            return torch.chunk(full, tp, dim)[rank]
    return full
