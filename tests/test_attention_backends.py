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


def _segments_alone(q, k, v, bounds, scale, window=None, softcap=None):
    """The oracle: every segment attended on its own, by hand (explicit softmax, K/V repeated per query head)."""
    outs = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        qs, ks, vs = (x[lo:hi].transpose(0, 1) for x in (q, k, v))  # [heads, n, d]
        repeat = qs.size(0) // ks.size(0)
        ks, vs = ks.repeat_interleave(repeat, 0), vs.repeat_interleave(repeat, 0)
        scores = qs @ ks.transpose(-1, -2) * scale
        if softcap is not None:
            scores = torch.tanh(scores / softcap) * softcap
        i = torch.arange(hi - lo)
        keep = i[None, :] <= i[:, None]
        if window is not None:
            keep = keep & (i[:, None] - i[None, :] < window)
        probs = scores.masked_fill(~keep, float("-inf")).softmax(-1)
        outs.append((probs @ vs).transpose(0, 1).reshape(hi - lo, -1))
    return torch.cat(outs)


@pytest.mark.parametrize("lengths", [[7, 19, 3, 11, 1], [5, 3, 8, 8, 2, 6], [7, 150, 3, 11], [200], [31]])
@pytest.mark.parametrize("softcap, window", [(None, None), (50.0, 4)])
def test_local_thd_equals_each_segment_alone(parallel, lengths, softcap, window):
    """The local backend attends the short segments of a packed stream in one call (chunks under a segment mask)
    and long ones alone; its outputs and q/k/v gradients equal each segment attended alone by hand, with and without
    Gemma 2's soft-cap and window."""
    from megatron.core.transformer import TransformerConfig

    from liquid_train.models.attention import CHUNKED_SEGMENT_MAX, LocalCoreAttention, thd_layout

    config = TransformerConfig(num_layers=1, hidden_size=32, num_attention_heads=4, num_query_groups=2,
                               kv_channels=8, use_cpu_initialization=True, attention_dropout=0.0)
    config.liquid_attn_logit_softcap = softcap
    config.liquid_sliding_window = window
    module = LocalCoreAttention(config, layer_number=1)
    total = sum(lengths)
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    params = PackedSeqParams(qkv_format="thd", cu_seqlens_q=cu, cu_seqlens_kv=cu, max_seqlen_q=max(lengths),
                             max_seqlen_kv=max(lengths))
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(total, n, 8, generator=g, dtype=torch.float64).float().requires_grad_()
               for n in (4, 2, 2))
    out = module(q, k, v, None, packed_seq_params=params)
    weights = torch.randn(out.shape, generator=g)
    (out * weights).sum().backward()
    grads = [x.grad.clone() for x in (q, k, v)]
    qo, ko, vo = (x.detach().clone().requires_grad_() for x in (q, k, v))
    ref = _segments_alone(qo, ko, vo, cu.tolist(), 8 ** -0.5, window, softcap)
    (ref * weights).sum().backward()
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    for got, want in zip(grads, (qo.grad, ko.grad, vo.grad)):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    layout = thd_layout(params, total, window, q.device)
    short = [n for n in lengths if n <= CHUNKED_SEGMENT_MAX]
    assert layout.size == (1 << (max(short) - 1).bit_length() if short else 0)
    assert [hi - lo for lo, hi in layout.alone] == [n for n in lengths if n > CHUNKED_SEGMENT_MAX]
    if lengths == [5, 3, 8, 8, 2, 6]:  # four rows of 8 laid end to end: one chunk each
        assert layout.chunks == 4
    if lengths == [200]:  # one long segment: attended alone, read back in stream order
        assert layout.chunks == 0 and layout.slot is None
    assert thd_layout(params, total, window, q.device) is layout  # built once per micro-batch
