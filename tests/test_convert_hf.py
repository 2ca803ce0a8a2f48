"""HF import/export for every family against transformers (fp32): logits, reload, tokenizer round trip, bad inputs;
settings read as they are (or refused in one line), --size checked, special ids from config + tokenizer."""
import json
import os
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch

from helpers_hf import imported_logits, max_err, save_hf
from helpers_model import HF_CONFIGS, NUM_IMAGE_TOKENS, make_tokenizer, rel_err, save_tiny_hf
from liquid_train.models.builder import build_gpt_model
from liquid_train.models.families import FAMILIES as FAMILY_REGISTRY
from liquid_train.models.families import ModelArch, arch_from_dict, get_model_arch, registry_size_of
from liquid_train.models.hf_conversion import (ConversionError, IMAGE_SIDECAR, hf_config_dict, hf_to_megatron,
                                               import_arch, load_model_checkpoint, megatron_to_hf,
                                               read_model_sidecar)
from liquid_train.models.vocab_extension import plan_vocab
from liquid_train.parallel import destroy_parallel, initialize_parallel
from liquid_train.vocab import LiquidVocab
from tools.convert_checkpoint import main as convert

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FAMILIES = ["qwen2.5", "llama3.2", "gemma2", "gemma"]


@pytest.fixture
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


# ---------------------------------------------------------------------------------------------------------------
# any config as it is; --size checked; refusals; tokenizers; special ids; fixes
# ---------------------------------------------------------------------------------------------------------------
DROP = "<drop>"


def _cfg(family, **changes):
    """The tiny HF config of ``family`` (helpers_model.HF_CONFIGS) with ``changes``; DROP removes a key."""
    cfg = dict(HF_CONFIGS[family], **changes)
    return {k: v for k, v in cfg.items() if v != DROP}


def _write_config(directory, cfg):
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(cfg, f)
    return str(directory)


# The silently rewritten settings: each imports as it is without --size, and --size tiny refuses it.
REGISTRY_MISMATCHES = [
    ("qwen2.5", dict(rms_norm_eps=1e-2), "rms_norm_eps"),
    ("gemma2", dict(sliding_window=16), "sliding_window"),
    ("gemma2", dict(query_pre_attn_scalar=32), "query_pre_attn_scalar"),
    ("gemma2", dict(attn_logit_softcapping=10.0, final_logit_softcapping=20.0), "softcapping"),
    ("llama3.2", dict(rope_scaling=None), "rope_scaling.rope_type"),
]


@pytest.mark.parametrize("family,changes,key", REGISTRY_MISMATCHES)
def test_settings_honoured_and_size_checked(family, changes, key, tmp_path, capsys):
    hf_dir, ckpt = str(tmp_path / "hf"), str(tmp_path / "ckpt")
    hf = save_hf(_cfg(family, **changes), hf_dir)
    capsys.readouterr()
    assert convert(["hf-to-megatron", "--hf-dir", hf_dir, "--out", ckpt, "--size", "tiny"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and key in err[0] and "leave --size out" in err[0] and hf_dir in err[0]
    assert convert(["hf-to-megatron", "--hf-dir", hf_dir, "--out", ckpt, "--num-image-tokens", "16"]) == 0
    tokens = torch.randint(10, 490, (2, 40), generator=torch.Generator().manual_seed(0))  # past window 16
    arch, vocab, ours = imported_logits(ckpt, tokens)
    assert arch.size == "custom"
    with torch.no_grad():
        ref = hf(tokens).logits
    kept = arch.tokenizer_vocab_size or 512
    assert max_err(ours[..., :kept], ref[..., :kept]) <= 1e-4


def test_registry_size_is_found_and_given_size_accepted(tmp_path):
    hf_dir = str(tmp_path / "hf")
    save_hf(_cfg("llama3.2"), hf_dir)
    assert import_arch(hf_dir).size == "tiny"
    assert import_arch(hf_dir, "llama", "tiny").size == "tiny"
    with pytest.raises(ConversionError, match="num_hidden_layers: 2 but llama3.2 1b has 16"):
        import_arch(hf_dir, size="1b")
    with pytest.raises(ConversionError, match="--size 7b: unknown size '7b' for family 'llama3.2'"):
        import_arch(hf_dir, size="7b")


# v4-era config.json files of registry models (as published): read as the registry's sizes.
PUBLISHED = {
    "0.5b": {"architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
             "eos_token_id": 151643, "hidden_act": "silu", "hidden_size": 896, "initializer_range": 0.02,
             "intermediate_size": 4864, "max_position_embeddings": 32768, "max_window_layers": 24,
             "model_type": "qwen2", "num_attention_heads": 14, "num_hidden_layers": 24, "num_key_value_heads": 2,
             "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "sliding_window": 32768, "tie_word_embeddings": True,
             "torch_dtype": "bfloat16", "use_cache": True, "use_sliding_window": False, "vocab_size": 151936},
    "1b": {"architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
           "bos_token_id": 128000, "eos_token_id": 128001, "head_dim": 64, "hidden_act": "silu", "hidden_size": 2048,
           "intermediate_size": 8192, "max_position_embeddings": 131072, "mlp_bias": False, "model_type": "llama",
           "num_attention_heads": 32, "num_hidden_layers": 16, "num_key_value_heads": 8, "pretraining_tp": 1,
           "rms_norm_eps": 1e-05, "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                                                   "original_max_position_embeddings": 8192, "rope_type": "llama3"},
           "rope_theta": 500000.0, "tie_word_embeddings": True, "torch_dtype": "bfloat16", "vocab_size": 128256},
    "2b": {"architectures": ["Gemma2ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
           "attn_logit_softcapping": 50.0, "bos_token_id": 2, "cache_implementation": "hybrid", "eos_token_id": 1,
           "final_logit_softcapping": 30.0, "head_dim": 256, "hidden_act": "gelu_pytorch_tanh",
           "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 2304, "intermediate_size": 9216,
           "max_position_embeddings": 8192, "model_type": "gemma2", "num_attention_heads": 8, "num_hidden_layers": 26,
           "num_key_value_heads": 4, "pad_token_id": 0, "query_pre_attn_scalar": 256, "rms_norm_eps": 1e-06,
           "rope_theta": 10000.0, "sliding_window": 4096, "torch_dtype": "float32", "vocab_size": 256000},
    "7b": {"architectures": ["GemmaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
           "bos_token_id": 2, "eos_token_id": 1, "head_dim": 256, "hidden_act": "gelu", "hidden_size": 3072,
           "intermediate_size": 24576, "max_position_embeddings": 8192, "model_type": "gemma",
           "num_attention_heads": 16, "num_hidden_layers": 28, "num_key_value_heads": 16, "pad_token_id": 0,
           "rms_norm_eps": 1e-06, "rope_scaling": None, "rope_theta": 10000.0, "torch_dtype": "bfloat16",
           "vocab_size": 256000},
}


@pytest.mark.parametrize("size", sorted(PUBLISHED))
def test_published_configs_are_the_registry_sizes(size, tmp_path):
    assert import_arch(_write_config(tmp_path, PUBLISHED[size]), size=size).size == size
    assert registry_size_of(ModelArch.from_hf_config(PUBLISHED[size])) == size


@pytest.mark.parametrize("family,size", [(f, s) for f, sizes in FAMILY_REGISTRY.items() for s in sizes])
def test_generated_config_reads_back_to_the_same_model(family, size):
    """Checkpoints without a recorded config.json export a generated one; read back (as written and after
    transformers' own normalisation) it is the same forward pass."""
    from transformers import AutoConfig

    arch = get_model_arch(family, size)
    vocab = plan_vocab(arch, 64)
    want = replace(arch, vocab_size=vocab.vocab_size).math()
    cfg = hf_config_dict(arch, vocab)
    assert ModelArch.from_hf_config(cfg).math() == want
    normalised = AutoConfig.for_model(**cfg).to_dict()
    assert ModelArch.from_hf_config(normalised).math() == want


REFUSED = [
    ("llama3.2", dict(rope_scaling={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64}),
     "'yarn' is not supported"),
    ("llama3.2", dict(rope_scaling={"type": "dynamic", "factor": 2.0}), "'dynamic' is not supported"),
    ("llama3.2", dict(rope_scaling=None, partial_rotary_factor=0.5), "partial_rotary_factor"),
    ("llama3.2", dict(rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 4.0,
                                    "high_freq_factor": 1.0}), "high_freq_factor"),
    ("llama3.2", dict(attention_bias=True), "attention_bias"),
    ("llama3.2", dict(mlp_bias=True), "mlp_bias"),
    ("llama3.2", dict(hidden_act="gelu"), "hidden_act: 'gelu' is not supported"),
    ("gemma2", dict(hidden_activation="relu"), "hidden_activation"),
    ("gemma", dict(attention_bias=True), "attention_bias"),
    ("gemma", dict(use_bidirectional_attention=True), "use_bidirectional_attention"),
    ("gemma2", dict(rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 1e4},
                                     "sliding_attention": {"rope_type": "default", "rope_theta": 1e6}}),
     "per-layer-type RoPE"),
    ("gemma2", dict(sliding_window=None), "sliding_window is null"),
    ("qwen2.5", dict(layer_types=["sliding_attention", "full_attention"]), "use_sliding_window is false"),
    ("qwen2.5", dict(layer_types=["full_attention"]), "layer_types: must list 2 entries"),
    ("qwen2.5", dict(num_key_value_heads=3), "does not divide"),
    ("qwen2.5", dict(attention_dropout=0.1), "attention_dropout"),
    ("qwen2.5", dict(quantization_config={"quant_method": "gptq"}), "quantization_config"),
    ("qwen2.5", dict(auto_map={"AutoModelForCausalLM": "modeling_x.X"}), "auto_map"),
    ("qwen2.5", dict(hidden_size=DROP), "hidden_size: missing"),
    ("qwen2.5", dict(model_type="mistral"), "model_type 'mistral' is not supported"),
]


@pytest.mark.parametrize("family,changes,message", REFUSED)
def test_unreproducible_settings_refused_in_one_line(family, changes, message, tmp_path, capsys):
    hf_dir = _write_config(tmp_path / "hf", _cfg(family, **changes))
    assert convert(["hf-to-megatron", "--hf-dir", hf_dir, "--out", str(tmp_path / "ckpt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and os.path.join(hf_dir, "config.json") in err[0], err


def test_cli_refusal_is_exit_2_without_traceback(tmp_path):
    hf_dir = _write_config(tmp_path / "hf", _cfg("llama3.2", rope_scaling={"rope_type": "longrope",
                                                                          "short_factor": [1.0], "long_factor": [1.0]}))
    proc = subprocess.run([sys.executable, os.path.join(REPO, "tools", "convert_checkpoint.py"), "hf-to-megatron",
                           "--hf-dir", hf_dir, "--out", str(tmp_path / "ckpt")], capture_output=True, text=True,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "'longrope' is not supported" in lines[0] and "Traceback" not in proc.stderr


def test_corrupt_config_and_shards_are_named(tmp_path, capsys):
    hf_dir = str(tmp_path / "hf")
    model = save_hf(_cfg("qwen2.5"), hf_dir)
    cfg_path = os.path.join(hf_dir, "config.json")
    good = open(cfg_path).read()
    with open(cfg_path, "w") as f:
        f.write(good[: len(good) // 2])
    assert convert(["hf-to-megatron", "--hf-dir", hf_dir, "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert f"{cfg_path}: not valid JSON" in err
    with open(cfg_path, "w") as f:
        f.write(good)
    # sharded checkpoint: corrupt index, missing shard, truncated shard; each named with its path
    os.remove(os.path.join(hf_dir, "model.safetensors"))
    model.save_pretrained(hf_dir, safe_serialization=True, max_shard_size="100KB")
    with open(cfg_path, "w") as f:
        f.write(good)
    index = os.path.join(hf_dir, "model.safetensors.index.json")
    shards = sorted(set(json.load(open(index))["weight_map"].values()))
    assert len(shards) > 1
    intact = open(index).read()
    with open(index, "w") as f:
        f.write(intact[:-10])
    assert convert(["hf-to-megatron", "--hf-dir", hf_dir, "--out", str(tmp_path / "c")]) == 2
    assert f"{index}: unreadable safetensors index" in capsys.readouterr().err
    with open(index, "w") as f:
        f.write(intact)
    last = os.path.join(hf_dir, shards[-1])
    data = open(last, "rb").read()
    os.remove(last)
    assert convert(["hf-to-megatron", "--hf-dir", hf_dir, "--out", str(tmp_path / "c")]) == 2
    assert f"are missing: {last}" in capsys.readouterr().err
    with open(last, "wb") as f:
        f.write(data[: len(data) - 100])
    assert convert(["hf-to-megatron", "--hf-dir", hf_dir, "--out", str(tmp_path / "c")]) == 2
    assert f"{last}: unreadable safetensors file" in capsys.readouterr().err
    with open(last, "wb") as f:
        f.write(data)
    assert convert(["hf-to-megatron", "--hf-dir", hf_dir, "--out", str(tmp_path / "c"), "--num-image-tokens",
                    "16"]) == 0


def test_tokenizer_absent_given_or_disagreeing(tmp_path, capsys):
    hf_dir, tok_dir = str(tmp_path / "hf"), str(tmp_path / "tok")
    save_hf(_cfg("llama3.2"), hf_dir, tokenizer=False)
    # absent: one line says so; ids from config.json (pad: none anywhere -> eos, said too)
    assert convert(["hf-to-megatron", "--hf-dir", hf_dir, "--out", str(tmp_path / "c1"), "--num-image-tokens",
                    "16"]) == 0
    out = capsys.readouterr().out
    assert sum("no tokenizer in" in line for line in out.splitlines()) == 1
    assert "no pad token" in out
    assert not os.path.exists(tmp_path / "c1" / "tokenizer")
    vocab = LiquidVocab.load(str(tmp_path / "c1"))
    assert (vocab.bos_id, vocab.eos_id, vocab.pad_id) == (256, 257, 257)
    # given with --tokenizer: checked, extended, saved, exported
    make_tokenizer("llama3.2").save_pretrained(tok_dir)
    assert convert(["hf-to-megatron", "--hf-dir", hf_dir, "--out", str(tmp_path / "c2"), "--tokenizer", tok_dir,
                    "--num-image-tokens", "16"]) == 0
    assert "no tokenizer" not in capsys.readouterr().out
    assert convert(["megatron-to-hf", "--ckpt", str(tmp_path / "c2"), "--out", str(tmp_path / "e2")]) == 0
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tmp_path / "e2"))
    assert tok.convert_tokens_to_ids("<|reserved_special_token_0|>") == LiquidVocab.load(str(tmp_path / "e2")).boi_id
    # a tokenizer whose <|endoftext|> sits at 0 while config.json says 497: refused, both named
    qwen_dir = str(tmp_path / "qwen")
    save_hf(_cfg("qwen2.5"), qwen_dir, tokenizer=False)
    _wordlevel({"<|endoftext|>": 0}, 500, eos_token="<|endoftext|>").save_pretrained(tok_dir + "_q")
    capsys.readouterr()
    assert convert(["hf-to-megatron", "--hf-dir", qwen_dir, "--out", str(tmp_path / "c3"), "--tokenizer",
                    tok_dir + "_q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "eos_token_id=497" in err[0] and "'<|endoftext|>' at id 0" in err[0]


def test_special_ids_from_tokenizer_when_config_has_none(tmp_path, capsys):
    hf_dir = str(tmp_path / "hf")
    save_hf(_cfg("qwen2.5", bos_token_id=None, eos_token_id=None), hf_dir)
    assert convert(["hf-to-megatron", "--hf-dir", hf_dir, "--out", str(tmp_path / "c"), "--num-image-tokens",
                    "16"]) == 0
    vocab = LiquidVocab.load(str(tmp_path / "c"))
    assert (vocab.bos_id, vocab.eos_id, vocab.pad_id) == (497, 497, 497)
    assert (vocab.boi_id, vocab.eoi_id, vocab.uncond_id) == (500, 501, 502)  # after the tokenizer's 500 tokens
    assert "no bos token" in capsys.readouterr().out


@pytest.mark.parametrize("family", FAMILIES)
def test_no_image_tokens(family, tmp_path):
    from transformers import AutoModelForCausalLM

    hf_dir, ckpt, out = str(tmp_path / "hf"), str(tmp_path / "ckpt"), str(tmp_path / "export")
    hf = save_hf(_cfg(family), hf_dir)
    assert convert(["hf-to-megatron", "--hf-dir", hf_dir, "--out", ckpt, "--num-image-tokens", "0"]) == 0
    tokens = torch.randint(10, 490, (1, 12), generator=torch.Generator().manual_seed(0))
    arch, vocab, ours = imported_logits(ckpt, tokens)
    assert vocab.num_image_tokens == 0 and vocab.vocab_size == 512
    assert convert(["megatron-to-hf", "--ckpt", ckpt, "--out", out]) == 0
    exported = AutoModelForCausalLM.from_pretrained(out, attn_implementation="eager").float().eval()
    with torch.no_grad():
        ref, again = hf(tokens).logits, exported(tokens).logits
    kept = arch.tokenizer_vocab_size or 512
    assert max_err(ours[..., :kept], ref[..., :kept]) <= 1e-4 and max_err(again[..., :kept], ref[..., :kept]) <= 1e-4


def test_packed_thd_sequences_use_the_exact_llama3_rope(parallel, tmp_path):
    """Packed (THD, cu_seqlens) segments past the original context equal transformers run on each segment alone."""
    from megatron.core.packed_seq_params import PackedSeqParams

    hf_dir, ckpt = str(tmp_path / "hf"), str(tmp_path / "ckpt")
    rope = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 0.7, "high_freq_factor": 3.0,
            "original_max_position_embeddings": 16}
    hf = save_hf(_cfg("llama3.2", rope_scaling=rope), hf_dir)
    vocab = hf_to_megatron(hf_dir, ckpt, num_image_tokens=16)
    arch, _ = read_model_sidecar(ckpt)
    assert (arch.rope_low_freq_factor, arch.rope_original_max_position) == (0.7, 16)
    model = build_gpt_model(arch, vocab, "fp32").eval()
    load_model_checkpoint(model, ckpt)
    a, b = 40, 27
    tokens = torch.randint(10, 490, (1, a + b), generator=torch.Generator().manual_seed(2))
    cu = torch.tensor([0, a, a + b], dtype=torch.int32)
    packed = PackedSeqParams(qkv_format="thd", cu_seqlens_q=cu, cu_seqlens_kv=cu, max_seqlen_q=a, max_seqlen_kv=a)
    positions = torch.cat([torch.arange(a), torch.arange(b)])[None]
    with torch.no_grad():
        ours = model(tokens, positions, None, packed_seq_params=packed)[0, :, :512]
        ref = torch.cat([hf(tokens[:, :a]).logits[0], hf(tokens[:, a:]).logits[0]])
    assert max_err(ours, ref) <= 1e-4


def _wordlevel(specials, length, **named):
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    ids = {i: t for t, i in specials.items()}
    vocab = {ids.get(i, f"t{i}"): i for i in range(length)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="t3"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens([AddedToken(s, special=True) for s in specials])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="t3", **named)


def test_export_dtype_follows_the_imported_config(tmp_path):
    """Shards take the imported config's dtype; --dtype overrides it and is the one other key that changes."""
    from safetensors import safe_open

    hf_dir, ckpt = str(tmp_path / "hf"), str(tmp_path / "ckpt")
    cfg = _cfg("gemma2", torch_dtype="bfloat16")
    save_hf(cfg, hf_dir)
    assert convert(["hf-to-megatron", "--hf-dir", hf_dir, "--out", ckpt, "--num-image-tokens", "16"]) == 0
    for flag, want in ((None, "bfloat16"), ("fp32", "float32")):
        out = str(tmp_path / f"export_{flag}")
        assert convert(["megatron-to-hf", "--ckpt", ckpt, "--out", out] + (["--dtype", flag] if flag else [])) == 0
        written = json.load(open(os.path.join(out, "config.json")))
        changed = {k for k in cfg if written[k] != cfg[k]}
        assert set(written) == set(cfg) and changed == ({"vocab_size"} if flag is None else {"vocab_size",
                                                                                              "torch_dtype"})
        assert written["torch_dtype"] == want
        shard = json.load(open(os.path.join(out, "model.safetensors.index.json")))["weight_map"]["model.norm.weight"]
        with safe_open(os.path.join(out, shard), "pt") as f:
            assert str(f.get_tensor("model.norm.weight").dtype) == f"torch.{want}"
    arch, _ = read_model_sidecar(ckpt)
    assert arch_from_dict(json.loads(json.dumps(arch.to_dict()))) == arch  # the sidecar's plain dict rebuilds it


def test_export_always_carries_a_tokenizer_or_refuses(tmp_path, capsys):
    hf_dir, tok_dir = str(tmp_path / "hf"), str(tmp_path / "tok")
    save_hf(_cfg("llama3.2"), hf_dir, tokenizer=False)
    assert convert(["hf-to-megatron", "--hf-dir", hf_dir, "--out", str(tmp_path / "c"), "--num-image-tokens",
                    "16"]) == 0
    capsys.readouterr()
    assert convert(["megatron-to-hf", "--ckpt", str(tmp_path / "c"), "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no tokenizer in the checkpoint or recorded for it; pass --tokenizer-dir" in err[0], err
    assert not os.path.exists(tmp_path / "e")  # refused before anything is written
    make_tokenizer("llama3.2").save_pretrained(tok_dir)
    assert convert(["megatron-to-hf", "--ckpt", str(tmp_path / "c"), "--out", str(tmp_path / "e"),
                    "--tokenizer-dir", tok_dir]) == 0
    assert os.path.exists(tmp_path / "e" / "tokenizer.json")
    # a run's checkpoint names its data.tokenizer: used by default, and named when it has gone
    side = json.loads((tmp_path / "c" / "liquid_model.json").read_text())
    (tmp_path / "c" / "liquid_model.json").write_text(json.dumps({**side, "tokenizer_source": tok_dir}))
    assert convert(["megatron-to-hf", "--ckpt", str(tmp_path / "c"), "--out", str(tmp_path / "e2")]) == 0
    (tmp_path / "c" / "liquid_model.json").write_text(json.dumps({**side, "tokenizer_source": str(tmp_path / "gone")}))
    capsys.readouterr()
    assert convert(["megatron-to-hf", "--ckpt", str(tmp_path / "c"), "--out", str(tmp_path / "e3")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{tmp_path / 'gone'} (data.tokenizer) has no tokenizer files" in err[0], err


def test_image_rows_follow_the_vq_tokenizer(tmp_path, capsys):
    hf_dir = str(tmp_path / "hf")
    save_hf(_cfg("qwen2.5"), hf_dir)
    assert convert(["hf-to-megatron", "--hf-dir", hf_dir, "--out", str(tmp_path / "c"), "--vq-tokenizer",
                    "chameleon-vqgan-tiny"]) == 0
    vocab = LiquidVocab.load(str(tmp_path / "c"))
    assert vocab.num_image_tokens == 512 and vocab.vq_tokenizer == "chameleon-vqgan-tiny"
    capsys.readouterr()
    assert convert(["hf-to-megatron", "--hf-dir", hf_dir, "--out", str(tmp_path / "d"), "--vq-tokenizer",
                    "chameleon-vqgan-tiny", "--num-image-tokens", "16"]) == 2
    assert "--num-image-tokens 16 but --vq-tokenizer chameleon-vqgan-tiny has 512 codes" in capsys.readouterr().err
    assert convert(["hf-to-megatron", "--hf-dir", hf_dir, "--out", str(tmp_path / "d"), "--vq-tokenizer",
                    str(tmp_path / "novq")]) == 2
    assert "--vq-tokenizer" in capsys.readouterr().err
