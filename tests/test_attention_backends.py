"""The attention backends agree on packed THD micro-batches (megatron's PackedSeqParams): FlexAttention (block mask
for documents / causality / window, score_mod soft-cap) equals the exact local path, model against model with the
same weights, for Gemma 2 (soft-caps, window 4 shorter than the samples) and a family without either.
FlexAttention has no CPU backward, so on CPU this is forward only; the GPU suite compares gradients."""
import pytest
import torch
from megatron.core.packed_seq_params import PackedSeqParams

from liquid_train.models.attention import document_ids, window_for_layer
from liquid_train.models.builder import build_model
from liquid_train.models.families import get_model_arch
from liquid_train.parallel import destroy_parallel, initialize_parallel
from liquid_train.vocab import default_test_vocab


@pytest.fixture(scope="module")
def parallel():
    initialize_parallel(1, 1, seed=2)
    yield
    destroy_parallel()


def _packed(lengths, vocab_size, seed=0):
    g = torch.Generator().manual_seed(seed)
    total = sum(lengths)
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    params = PackedSeqParams(qkv_format="thd", cu_seqlens_q=cu, cu_seqlens_kv=cu, max_seqlen_q=max(lengths),
                             max_seqlen_kv=max(lengths))
    return torch.randint(0, vocab_size, (1, total), generator=g), params


@pytest.mark.parametrize("family", ["gemma2", "qwen2.5"])
def test_flex_equals_local_on_packed_sequences(parallel, family):
    arch = get_model_arch(family, "tiny")
    vocab = default_test_vocab(base_vocab_size=512, num_image_tokens=64)
    local = build_model(arch, vocab, attention_backend="local")().eval()
    flex = build_model(arch, vocab, attention_backend="flex", training=False)().eval()
    flex.load_state_dict(local.state_dict())
    tokens, params = _packed([7, 19, 3, 11], vocab.vocab_size)
    pos = torch.zeros_like(tokens)
    with torch.no_grad():
        a = local(tokens, pos, None, packed_seq_params=params)[..., :vocab.vocab_size]
        b = flex(tokens, pos, None, packed_seq_params=params)[..., :vocab.vocab_size]
    assert float((a - b).abs().max()) <= 1e-4 * float(a.abs().max())


def test_window_layers_and_document_ids():
    class C:
        liquid_sliding_window = 4
        liquid_window_layers = 2

    assert [window_for_layer(C, n) for n in (1, 2, 3, 4)] == [4, None, 4, None]
    C.liquid_window_layers = (1,)
    assert [window_for_layer(C, n) for n in (1, 2)] == [None, 4]
    cu = torch.tensor([0, 2, 5, 6], dtype=torch.int32)
    assert document_ids(cu, 6).tolist() == [0, 0, 1, 1, 1, 2]


def test_local_backend_never_attends_across_segments(parallel):
    """Perturbing one segment's tokens leaves every other segment's logits bit-identical."""
    arch = get_model_arch("gemma2", "tiny")
    vocab = default_test_vocab(base_vocab_size=512, num_image_tokens=64)
    model = build_model(arch, vocab)().eval()
    tokens, params = _packed([9, 9, 9], vocab.vocab_size, seed=1)
    other = tokens.clone()
    other[0, 9:18] = (other[0, 9:18] + 1) % vocab.vocab_size
    with torch.no_grad():
        a = model(tokens, torch.zeros_like(tokens), None, packed_seq_params=params)
        b = model(other, torch.zeros_like(other), None, packed_seq_params=params)
    assert torch.equal(a[:, :9], b[:, :9]) and torch.equal(a[:, 18:], b[:, 18:])
    assert not torch.equal(a[:, 9:18], b[:, 9:18])
