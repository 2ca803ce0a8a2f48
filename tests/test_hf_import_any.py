"""Any legal Qwen2 / Llama / Gemma / Gemma 2 config imports as it is: hypothesis over randomised settings.

For each family a tiny HF model with drawn settings (hidden size, heads, kv heads, head_dim, theta, eps, tying,
sliding window and its layers, soft-caps, query_pre_attn_scalar, RoPE type and all its parameters, old or new
config spelling) is imported through the CLI without ``--size``. The megatron model's logits and the export's logits
must equal stock ``transformers``' on the original (fp32, <= 1e-4) at a length past every window and past the
original context, and the exported config.json must be the imported one with only ``vocab_size`` changed.
"""
import json
import os
import tempfile

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers_hf import FAMILY_OF_MODEL_TYPE as FAMILY
from helpers_hf import imported_logits, max_err, save_hf
from helpers_model import HF_CONFIGS
from tools.convert_checkpoint import main as convert

NUM_IMAGE_TOKENS = 16
TOL = 1e-4
EXAMPLES = settings(max_examples=6, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@st.composite
def rope_settings(draw):
    """(rope dict without theta, longest context the drawn parameters care about)."""
    kind = draw(st.sampled_from(["default", "linear", "llama3"]))
    if kind == "default":
        return {"rope_type": "default"}, 0
    if kind == "linear":
        return {"rope_type": "linear", "factor": draw(st.floats(1.5, 8.0))}, 0
    low = draw(st.floats(0.5, 2.0))
    original = draw(st.integers(8, 40))
    return {"rope_type": "llama3", "factor": draw(st.floats(2.0, 32.0)), "low_freq_factor": low,
            "high_freq_factor": low + draw(st.floats(0.5, 6.0)), "original_max_position_embeddings": original}, original


@st.composite
def hf_config(draw, model_type):
    """A legal config.json dict for ``model_type`` and the sequence length that exceeds all its windows/contexts."""
    heads = draw(st.sampled_from([2, 4]))
    layers = draw(st.integers(2, 3))
    max_pos = draw(st.integers(12, 32))
    cfg = dict(model_type=model_type, vocab_size=512, hidden_size=draw(st.sampled_from([32, 48, 64])),
               intermediate_size=draw(st.sampled_from([48, 80, 96])), num_hidden_layers=layers,
               num_attention_heads=heads, num_key_value_heads=draw(st.sampled_from([k for k in (1, 2, 4)
                                                                                    if heads % k == 0])),
               max_position_embeddings=max_pos, rms_norm_eps=10 ** draw(st.floats(-6.0, -1.0)),
               tie_word_embeddings=draw(st.booleans()))
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):  # the tiny tokenizers' ids
        if key in HF_CONFIGS[FAMILY[model_type]]:
            cfg[key] = HF_CONFIGS[FAMILY[model_type]][key]
    head_dim = draw(st.sampled_from([8, 12, 16]))
    if model_type == "qwen2" and draw(st.booleans()):
        cfg["hidden_size"] = heads * head_dim  # head_dim derived from hidden / heads
    else:
        cfg["head_dim"] = head_dim
    theta = draw(st.floats(100.0, 1e6))
    rope, original = draw(rope_settings())
    if draw(st.booleans()):  # transformers v4 spelling: rope_theta + rope_scaling (with "type" or "rope_type")
        cfg["rope_theta"] = theta
        if rope["rope_type"] != "default":
            legacy = dict(rope)
            if draw(st.booleans()):
                legacy["type"] = legacy.pop("rope_type")
            cfg["rope_scaling"] = legacy
    else:
        cfg["rope_parameters"] = {"rope_theta": theta, **rope}
    window = draw(st.integers(2, 12))
    if model_type == "qwen2":
        cfg.update(hidden_act="silu", use_sliding_window=draw(st.booleans()), sliding_window=window,
                   max_window_layers=draw(st.integers(0, layers)))
    if model_type == "llama":
        cfg.update(hidden_act="silu", attention_bias=False, mlp_bias=False)
    if model_type == "gemma":
        cfg["hidden_act"] = draw(st.sampled_from(["gelu", "gelu_pytorch_tanh"]))
    if model_type == "gemma2":
        cfg.update(hidden_activation="gelu_pytorch_tanh", sliding_window=window,
                   query_pre_attn_scalar=draw(st.integers(8, 64)),
                   attn_logit_softcapping=draw(st.one_of(st.none(), st.floats(5.0, 60.0))),
                   final_logit_softcapping=draw(st.one_of(st.none(), st.floats(5.0, 40.0))))
        if draw(st.booleans()):  # an explicit layer pattern (at least one sliding layer)
            types = draw(st.lists(st.sampled_from(["sliding_attention", "full_attention"]), min_size=layers,
                                  max_size=layers).filter(lambda t: "sliding_attention" in t))
            cfg["layer_types"] = types
    seq = max(max_pos, original, window) + draw(st.integers(4, 12))
    return cfg, seq


def _round_trip(model_type: str, cfg: dict, seq: int, seed: int) -> None:
    from transformers import AutoModelForCausalLM

    with tempfile.TemporaryDirectory() as tmp:
        hf_dir, ckpt, out = (os.path.join(tmp, name) for name in ("hf", "ckpt", "export"))
        hf = save_hf(cfg, hf_dir, seed)
        assert convert(["hf-to-megatron", "--hf-dir", hf_dir, "--out", ckpt,
                        "--num-image-tokens", str(NUM_IMAGE_TOKENS)]) == 0
        tokens = torch.randint(10, 490, (2, seq), generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            ref = hf(tokens).logits
        arch, vocab, ours = imported_logits(ckpt, tokens, seed)
        kept = arch.tokenizer_vocab_size or 512  # Qwen's spare rows 500..511 now hold <boi>/<eoi>/<unconditional>
        assert max_err(ours[..., :kept], ref[..., :kept]) <= TOL, (cfg, seq)
        assert torch.isfinite(ours[..., : vocab.vocab_size]).all()

        assert convert(["megatron-to-hf", "--ckpt", ckpt, "--out", out]) == 0
        exported = AutoModelForCausalLM.from_pretrained(out, attn_implementation="eager").float().eval()
        with torch.no_grad():
            again = exported(tokens).logits
        assert again.shape[-1] == vocab.vocab_size
        assert max_err(again[..., :kept], ref[..., :kept]) <= TOL, (cfg, seq)

        with open(os.path.join(out, "config.json")) as f:
            written = json.load(f)
        assert set(written) == set(cfg)
        assert {k for k in cfg if written[k] != cfg[k]} == {"vocab_size"}
        assert written["vocab_size"] == vocab.vocab_size
        assert os.path.exists(os.path.join(out, "tokenizer.json"))


@EXAMPLES
@given(drawn=hf_config("qwen2"), seed=st.integers(0, 1000))
def test_any_qwen2(drawn, seed):
    _round_trip("qwen2", *drawn, seed)


@EXAMPLES
@given(drawn=hf_config("llama"), seed=st.integers(0, 1000))
def test_any_llama(drawn, seed):
    _round_trip("llama", *drawn, seed)


@EXAMPLES
@given(drawn=hf_config("gemma"), seed=st.integers(0, 1000))
def test_any_gemma(drawn, seed):
    _round_trip("gemma", *drawn, seed)


@EXAMPLES
@given(drawn=hf_config("gemma2"), seed=st.integers(0, 1000))
def test_any_gemma2(drawn, seed):
    _round_trip("gemma2", *drawn, seed)


@settings(max_examples=40, deadline=None, database=None)
@given(rope=rope_settings(), theta=st.floats(100.0, 1e6), head_dim=st.sampled_from([8, 12, 16, 64, 128]))
def test_inv_freq_is_transformers_bit_for_bit(rope, theta, head_dim):
    """The frequencies installed into megatron's rotary embedding are transformers', for every RoPE type."""
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    from liquid_train.models.families import ModelArch
    from liquid_train.models.rope import hf_inv_freq

    cfg = dict(vocab_size=512, hidden_size=2 * head_dim, intermediate_size=64, num_hidden_layers=1,
               num_attention_heads=2, head_dim=head_dim, max_position_embeddings=64,
               rope_parameters={"rope_theta": theta, **rope[0]})
    arch = ModelArch.from_hf_config({"model_type": "llama", **cfg})
    assert arch.rope_type == rope[0]["rope_type"]
    assert torch.equal(hf_inv_freq(arch), LlamaRotaryEmbedding(LlamaConfig(**cfg)).inv_freq)
