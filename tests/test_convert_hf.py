"""HF import/export for every family against transformers (fp32): logits, reload, tokenizer round trip, bad inputs."""
import json
import os

import numpy as np
import pytest
import torch

from helpers_model import NUM_IMAGE_TOKENS, rel_err, save_tiny_hf
from liquid_train.models.builder import build_gpt_model
from liquid_train.models.hf_conversion import (ConversionError, IMAGE_SIDECAR, hf_to_megatron,
                                               load_model_checkpoint, megatron_to_hf, read_model_sidecar)
from liquid_train.parallel import destroy_parallel, initialize_parallel

FAMILIES = ["qwen2.5", "llama3.2", "gemma2", "gemma"]


@pytest.fixture(scope="module")
def parallel():
    initialize_parallel(1, 1, seed=3)
    yield
    destroy_parallel()


def _megatron_logits(model, tokens):
    s = tokens.size(1)
    mask = torch.triu(torch.ones(s, s, dtype=torch.bool), 1)[None, None].expand(tokens.size(0), 1, s, s)
    with torch.no_grad():
        return model(tokens, torch.arange(s).expand_as(tokens), mask)


@pytest.mark.parametrize("family", FAMILIES)
def test_import_export_matches_transformers(parallel, family, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf_dir, ckpt, out = str(tmp_path / "hf"), str(tmp_path / "ckpt"), str(tmp_path / "export")
    hf = save_tiny_hf(family, hf_dir)
    vocab = hf_to_megatron(hf_dir, ckpt, family, "tiny", num_image_tokens=NUM_IMAGE_TOKENS)
    arch, vocab2 = read_model_sidecar(ckpt)
    assert vocab2 == vocab and vocab.image_token_offset == 512 and vocab.vocab_size == 512 + NUM_IMAGE_TOKENS

    model = build_gpt_model(arch, vocab, "fp32").eval()
    load_model_checkpoint(model, ckpt)
    gen = torch.Generator().manual_seed(1)
    text = torch.randint(10, 490, (2, 24), generator=gen)  # seq 24 > Gemma 2 tiny window 4: sliding window matters
    ours = _megatron_logits(model, text)
    with torch.no_grad():
        ref = hf(text).logits
    # Qwen's spare rows past its tokenizer (here 500..511) are re-initialised for <boi>/<eoi>/<unconditional>.
    kept = arch.tokenizer_vocab_size or 512
    assert rel_err(ours[..., :kept], ref[..., :kept]) < 1e-4
    # image rows start at the mean of text rows: finite, real logits
    assert torch.isfinite(ours[..., : vocab.vocab_size]).all()
    assert torch.isinf(ours[..., vocab.vocab_size:]).all()

    megatron_to_hf(ckpt, out)
    reloaded = AutoModelForCausalLM.from_pretrained(out, attn_implementation="eager").float().eval()
    assert reloaded.config.vocab_size == vocab.vocab_size
    mixed = text.clone()
    mixed[:, 5:15] = torch.tensor(vocab.codes_to_ids(np.arange(10)))
    mixed[:, 4], mixed[:, 15] = vocab.boi_id, vocab.eoi_id
    with torch.no_grad():
        again = reloaded(mixed).logits
    assert rel_err(_megatron_logits(model, mixed)[..., : vocab.vocab_size], again) < 1e-4

    side = json.load(open(os.path.join(out, IMAGE_SIDECAR)))
    assert side["image_token_offset"] == vocab.image_token_offset and side["codebook_size"] == NUM_IMAGE_TOKENS
    tok = AutoTokenizer.from_pretrained(out)
    prompt = f"{vocab.boi_token}{vocab.eoi_token}{vocab.uncond_token}"
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    assert ids == [vocab.boi_id, vocab.eoi_id, vocab.uncond_id]
    assert tok.decode(ids).replace(" ", "") == prompt
    assert tok.convert_tokens_to_ids("t11") == 11
    codes = np.arange(NUM_IMAGE_TOKENS)
    assert np.array_equal(vocab.ids_to_codes(vocab.codes_to_ids(codes)), codes)


def test_bad_inputs_give_one_clear_error(parallel, tmp_path):
    hf_dir = str(tmp_path / "hf")
    save_tiny_hf("llama3.2", hf_dir)
    with pytest.raises(ConversionError, match="model_type 'llama'.*llama3.2"):
        hf_to_megatron(hf_dir, str(tmp_path / "c1"), "qwen2.5", "tiny")
    with pytest.raises(ValueError, match="does not divide num_attention_heads"):
        hf_to_megatron(hf_dir, str(tmp_path / "c2"), "llama3.2", "tiny", tp=3)
    # partial safetensors: a tensor missing
    from safetensors.torch import load_file, save_file

    path = os.path.join(hf_dir, "model.safetensors")
    tensors = load_file(path)
    tensors.pop("model.layers.1.mlp.up_proj.weight")
    save_file(tensors, path, metadata={"format": "pt"})
    with pytest.raises(ConversionError, match="up_proj.weight.*missing"):
        hf_to_megatron(hf_dir, str(tmp_path / "c3"), "llama3.2", "tiny")
    # truncated file
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    with pytest.raises(ConversionError, match="unreadable safetensors"):
        hf_to_megatron(hf_dir, str(tmp_path / "c4"), "llama3.2", "tiny")
    os.remove(path)
    with pytest.raises(ConversionError, match="no model.safetensors"):
        hf_to_megatron(hf_dir, str(tmp_path / "c5"), "llama3.2", "tiny")
