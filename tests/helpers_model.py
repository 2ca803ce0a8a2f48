"""Tiny random Hugging Face models and tokenizers, built in the real on-disk formats, for model-core tests.

The configs below are written out literally (not derived from our registry) so that transformers is an independent
oracle for the architecture math.
"""
from __future__ import annotations

import torch

NUM_IMAGE_TOKENS = 64

HF_CONFIGS = {
    "qwen2.5": dict(model_type="qwen2", vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024, rms_norm_eps=1e-6,
                    rope_theta=1_000_000.0, tie_word_embeddings=True, hidden_act="silu", use_sliding_window=False,
                    bos_token_id=497, eos_token_id=497),
    "llama3.2": dict(model_type="llama", vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=1024,
                     rms_norm_eps=1e-5, tie_word_embeddings=True, hidden_act="silu",
                     rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                                   "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
                     rope_theta=500_000.0, bos_token_id=256, eos_token_id=257),
    "gemma2": dict(model_type="gemma2", vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=1024,
                   rms_norm_eps=1e-6, rope_theta=10000.0, query_pre_attn_scalar=24, sliding_window=4,
                   attn_logit_softcapping=50.0, final_logit_softcapping=30.0, hidden_activation="gelu_pytorch_tanh",
                   tie_word_embeddings=True, bos_token_id=2, eos_token_id=1, pad_token_id=0),
    "gemma": dict(model_type="gemma", vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=1024,
                  rms_norm_eps=1e-6, rope_theta=10000.0, hidden_activation="gelu_pytorch_tanh",
                  tie_word_embeddings=True, bos_token_id=2, eos_token_id=1, pad_token_id=0),
}

# Family special tokens the tiny tokenizers carry at the same relative places as the real ones.
SPECIALS = {
    "qwen2.5": ({497: "<|endoftext|>"}, 500, dict(eos_token="<|endoftext|>", pad_token="<|endoftext|>")),
    "llama3.2": ({256: "<|begin_of_text|>", 257: "<|end_of_text|>", 258: "<|reserved_special_token_0|>",
                  259: "<|reserved_special_token_1|>", 260: "<|finetune_right_pad_id|>",
                  261: "<|reserved_special_token_2|>"}, 512,
                 dict(bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>")),
    "gemma2": ({0: "<pad>", 1: "<eos>", 2: "<bos>", 3: "<unk>", 7: "<unused0>", 8: "<unused1>", 9: "<unused2>"}, 512,
               dict(bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>")),
}
SPECIALS["gemma"] = SPECIALS["gemma2"]


def make_tokenizer(family: str):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials, length, named = SPECIALS[family]
    vocab = {specials.get(i, f"t{i}"): i for i in range(length)}
    named = dict(named)
    unk = named.pop("unk_token", "t3")
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=unk))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    from tokenizers import AddedToken

    tok.add_special_tokens([AddedToken(s, special=True) for s in specials.values()])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token=unk, **named)


def make_hf_model(family: str, seed: int = 0):
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = dict(HF_CONFIGS[family])
    model_type = cfg.pop("model_type")
    config = AutoConfig.for_model(model_type, **cfg)
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager").float().eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # random everything, norms included, so a wrong mapping cannot hide
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(torch.rand(p.shape, generator=gen) - 0.5 if family.startswith("gemma")
                        else 0.5 + torch.rand(p.shape, generator=gen))
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.08)
    return model


def save_tiny_hf(family: str, directory: str, seed: int = 0):
    model = make_hf_model(family, seed)
    model.save_pretrained(directory, safe_serialization=True)
    make_tokenizer(family).save_pretrained(directory)
    return model


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())
