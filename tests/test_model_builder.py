"""Builder smoke tests on CPU: every family builds, runs forward/backward, honours the block-diagonal mask."""
import pytest
import torch

from liquid_train.accounting import count_params
from liquid_train.models.builder import build_model, check_divisibility
from liquid_train.models.families import FAMILIES, get_model_arch
from liquid_train.parallel import destroy_parallel, initialize_parallel
from liquid_train.vocab import default_test_vocab


@pytest.fixture(scope="module")
def parallel():
    initialize_parallel(1, 1, seed=1)
    yield
    destroy_parallel()


def _causal(b, s):
    return torch.triu(torch.ones(s, s, dtype=torch.bool), 1)[None, None].expand(b, 1, s, s).clone()


@pytest.mark.parametrize("family", ["qwen2.5", "llama3.2", "gemma2", "gemma"])
def test_forward_backward_and_block_mask(parallel, family):
    arch = get_model_arch(family, "tiny")
    vocab = default_test_vocab(base_vocab_size=512, num_image_tokens=64)
    model = build_model(arch, vocab)()
    b, s = 2, 16
    tokens = torch.randint(0, vocab.vocab_size, (b, s))
    pos = torch.arange(s).expand(b, s)
    loss = model(tokens, pos, _causal(b, s), labels=tokens)
    assert loss.shape == (b, s) and torch.isfinite(loss).all()
    loss.mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0

    model.eval()
    with torch.no_grad():
        # Two packed samples of 8 tokens == each sample run alone (block-diagonal mask; RoPE is relative).
        mask = _causal(1, s)
        mask[:, :, 8:, :8] = True
        packed = model(tokens[:1], pos[:1], mask)
        alone = model(tokens[:1, 8:], pos[:1, :8], _causal(1, 8))
        assert torch.allclose(packed[:, 8:], alone, atol=1e-4, rtol=1e-4)
        full = model(tokens[:1], pos[:1], _causal(1, s))
        assert not torch.allclose(full[:, 8:], alone, atol=1e-3)
        # TP padding rows never get probability mass.
        assert packed.shape[-1] == vocab.padded_vocab_size(1)
        assert torch.isinf(packed[..., vocab.vocab_size:]).all()
        assert torch.isfinite(packed[..., : vocab.vocab_size]).all()


def test_registry_real_sizes():
    qwen7 = get_model_arch("qwen2.5", "7b")
    assert (qwen7.hidden_size, qwen7.num_layers, qwen7.num_query_groups, qwen7.vocab_size) == (3584, 28, 4, 152064)
    assert get_model_arch("gemma2", "27b").query_pre_attn_scalar == 144.0
    assert get_model_arch("llama3.2", "1b").rope_scaling_factor == 32.0
    for fam, sizes in FAMILIES.items():
        assert "tiny" in sizes
    # Non-embedding parameter counts match the published figures (Qwen2.5-7B: 6.53B, 0.5B: 0.36B).
    assert abs(count_params(get_model_arch("qwen2.5", "7b")).non_embedding / 1e9 - 6.53) < 0.02
    assert abs(count_params(get_model_arch("qwen2.5", "0.5b")).non_embedding / 1e9 - 0.36) < 0.01
    with pytest.raises(KeyError, match="known"):
        get_model_arch("qwen2.5", "13b")


def test_tp_not_dividing_heads_is_one_clear_error():
    with pytest.raises(ValueError, match="num_attention_heads=14"):
        check_divisibility(get_model_arch("qwen2.5", "0.5b"), tp=4)


def test_training_sampler_adapter_is_pad_invariant(parallel):
    """`MegatronCausalLM` (the training-progress T2I sampler's view of the megatron model): a left-padded batch of
    prompts gives each row the logits of that prompt run alone, and the shared CFG sampler draws image ids only."""
    from liquid_train.inference.sampling import CachedDecoder, SamplingConfig, generate_image_tokens
    from liquid_train.training.sampling import MegatronCausalLM

    vocab = default_test_vocab(base_vocab_size=512, num_image_tokens=64)
    model = build_model(get_model_arch("qwen2.5", "tiny"), vocab)().eval()
    lm = MegatronCausalLM(model)
    prompts = [[vocab.bos_id, 5, 6, 7, 8, vocab.boi_id], [vocab.bos_id, 9, vocab.boi_id]]
    batched = CachedDecoder(lm, prompts, vocab.pad_id, use_cache=False).logits()
    for row, prompt in enumerate(prompts):
        s = len(prompt)
        alone = model(torch.tensor([prompt]), torch.arange(s)[None], _causal(1, s))[0, -1].float()
        assert torch.allclose(batched[row], alone, atol=1e-4, rtol=1e-4)
    uncond = [vocab.bos_id, vocab.uncond_id, vocab.boi_id]
    tokens = generate_image_tokens(lm, prompts, uncond, 5, vocab.image_token_offset, vocab.image_token_end,
                                   vocab.pad_id, SamplingConfig(cfg_scale=3.0, temperature=0.0), use_cache=False)
    assert tokens.shape == (2, 5) and bool(vocab.is_image_id(tokens).all())
