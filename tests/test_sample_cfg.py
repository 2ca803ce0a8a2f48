"""CFG sampling on a tiny random HF Llama: only image ids drawn, KV cache == recompute, batched CFG == two passes."""
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from liquid_train.inference.sampling import SamplingConfig, generate_image_tokens
from liquid_train.vocab import default_test_vocab


def tiny_model(vocab):
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    return LlamaForCausalLM(cfg).eval()


def test_cfg_sampling_properties():
    vocab = default_test_vocab()
    model = tiny_model(vocab)
    cond = [[vocab.bos_id, 5, 6, 7, vocab.boi_id], [vocab.bos_id, 9, vocab.boi_id]]
    uncond = [vocab.bos_id, vocab.uncond_id, vocab.boi_id]
    sc = SamplingConfig(cfg_scale=3.0, temperature=1.0, top_k=0, top_p=1.0, seed=1)
    args = (model, cond, uncond, 6, vocab.image_token_offset, vocab.image_token_end, vocab.pad_id, sc)
    tok_c, log_c = generate_image_tokens(*args, use_cache=True, return_logits=True)
    tok_n, log_n = generate_image_tokens(*args, use_cache=False, return_logits=True)
    assert bool(vocab.is_image_id(tok_c).all())
    assert torch.equal(tok_c, tok_n)
    assert torch.allclose(log_c, log_n, atol=1e-4)
    # first-step CFG from two separate unpadded passes per prompt
    for i, prompt in enumerate(cond):
        lc = model(input_ids=torch.tensor([prompt])).logits[0, -1]
        lu = model(input_ids=torch.tensor([uncond])).logits[0, -1]
        ref = (lu + 3.0 * (lc - lu))[vocab.image_token_offset:vocab.image_token_end]
        assert torch.allclose(log_c[i, 0, vocab.image_token_offset:vocab.image_token_end], ref, atol=1e-4)
