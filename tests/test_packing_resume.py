"""Packing (never splits, masks/positions/cu_seqlens against numpy), resume equivalence, disjoint DP slices,
independence from loader workers, prefix stability of the pack index."""
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from liquid_train.data import DataConfig, build_data_loader, build_datasets, flat_packed_seq_params
from liquid_train.data.packing import build_pack_index
from liquid_train.data.testing import make_tiny_tokenizer, tiny_vocab, write_tiny_datasets
from liquid_train.vocab import TASK_PAD

SEQ = 64


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    d = tmp_path_factory.mktemp("pack")
    tok = make_tiny_tokenizer(str(d / "tok"))
    pairs, text = write_tiny_datasets(str(d / "data"), num_pairs=150, num_texts=100)
    vocab = tiny_vocab(tok)
    cfg = DataConfig(pairs_path=pairs, text_path=text, seq_length=SEQ, mixture={"text": 1, "t2i": 2, "i2t": 1},
                     cache_dir=str(d / "cache"))
    train, valid = build_datasets(cfg, 300, vocab=vocab, tokenizer=tok)
    return {"cfg": cfg, "train": train, "valid": valid, "vocab": vocab, "tok": tok}


@settings(max_examples=40, deadline=None)
@given(lengths=st.lists(st.integers(1, SEQ), min_size=1, max_size=300), window=st.integers(1, 10),
       flush=st.booleans())
def test_pack_index_never_splits_and_is_prefix_stable(lengths, window, flush):
    f = np.asarray(lengths)
    offsets, order = build_pack_index(f, SEQ, window, flush=flush)
    used = np.concatenate([order[offsets[k]:offsets[k + 1]] for k in range(len(offsets) - 1)] or [np.array([], int)])
    assert len(np.unique(used)) == len(used)  # no sample twice (a split sample would appear twice)
    for k in range(len(offsets) - 1):
        assert f[order[offsets[k]:offsets[k + 1]]].sum() <= SEQ
    if flush:
        assert sorted(used.tolist()) == list(range(len(f)))
    longer = np.concatenate([f, f[::-1]])
    o2, r2 = build_pack_index(longer, SEQ, window, flush=False)
    if not flush:
        n = len(offsets) - 1
        np.testing.assert_array_equal(o2[:n + 1], offsets)
        np.testing.assert_array_equal(r2[:offsets[-1]], order)


def _oracle_mask(segments):
    s = len(segments)
    m = np.ones((s, s), dtype=bool)
    for i in range(s):
        for j in range(i + 1):
            m[i, j] = segments[i] != segments[j]
    return m


def test_batch_fields_against_numpy(fx):
    train, vocab = fx["train"], fx["vocab"]
    batch = next(iter(build_data_loader(train, 7, 3)))
    assert batch["tokens"].shape == (3, SEQ) and batch["attention_mask"].shape == (3, 1, SEQ, SEQ)
    for row in range(3):
        k = 7 + row
        samples = [train.stream.sample(int(i)) for i in train.stream_indices(k)]
        tokens = np.concatenate([s.tokens[:-1] for s in samples])
        labels = np.concatenate([s.tokens[1:] for s in samples])
        mask = np.concatenate([s.target[1:] for s in samples]).astype(np.float32)
        pos = np.concatenate([np.arange(len(s.tokens) - 1) for s in samples])
        tasks = np.concatenate([np.full(len(s.tokens) - 1, s.task) for s in samples])
        n = len(tokens)
        assert n <= SEQ
        np.testing.assert_array_equal(batch["tokens"][row, :n].numpy(), tokens)
        np.testing.assert_array_equal(batch["labels"][row, :n].numpy(), labels)
        np.testing.assert_array_equal(batch["loss_mask"][row, :n].numpy(), mask)
        np.testing.assert_array_equal(batch["position_ids"][row, :n].numpy(), pos)
        np.testing.assert_array_equal(batch["task_ids"][row, :n].numpy(), tasks)
        assert (batch["loss_mask"][row, n:] == 0).all() and (batch["task_ids"][row, n:] == TASK_PAD).all()
        assert (batch["tokens"][row, n:] == vocab.pad_id).all()
        seg = batch["segment_ids"][row].numpy()
        np.testing.assert_array_equal(batch["attention_mask"][row, 0].numpy(), _oracle_mask(seg))
        bounds = np.concatenate([[0], np.cumsum([len(s.tokens) - 1 for s in samples])] + ([[SEQ]] if n < SEQ else []))
        cu = batch["cu_seqlens"][row].numpy()
        np.testing.assert_array_equal(cu[cu >= 0], bounds)
        assert int(batch["max_seqlen"][row]) == np.diff(bounds).max()
    flat, max_len = flat_packed_seq_params(batch)
    assert flat[-1] == 3 * SEQ and flat.dtype == torch.int32 and (torch.diff(flat) > 0).all()


def _stream(fx, consumed, mbs, dp_rank=0, dp_size=1, steps=4, workers=0):
    loader = build_data_loader(fx["train"], consumed, mbs, dp_rank, dp_size, num_workers=workers)
    out = []
    for step, batch in enumerate(loader):
        if step == steps:
            break
        out.append(batch["tokens"])
    return out


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(consumed=st.integers(0, 200), mbs=st.integers(1, 4))
def test_resume_at_any_point_continues_identically(fx, consumed, mbs):
    full = torch.cat(_stream(fx, 0, mbs, steps=(consumed + 6 * mbs) // mbs + 1))
    resumed = torch.cat(_stream(fx, consumed, mbs, steps=5))
    np.testing.assert_array_equal(resumed.numpy(), full[consumed:consumed + len(resumed)].numpy())
    # rebuilding everything from the config (cached pack index) gives the same stream
    again, _ = build_datasets(fx["cfg"], 300, vocab=fx["vocab"], tokenizer=fx["tok"])
    np.testing.assert_array_equal(again.order, fx["train"].order)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(dp_size=st.integers(1, 4), mbs=st.integers(1, 3), consumed=st.integers(0, 50))
def test_dp_ranks_read_disjoint_slices_covering_the_global_batch(fx, dp_size, mbs, consumed):
    from liquid_train.data.sampler import PretrainingBatchSampler

    total = len(fx["train"])
    per_rank = [list(PretrainingBatchSampler(total, consumed, mbs, r, dp_size)) for r in range(dp_size)]
    for step in range(len(per_rank[0])):
        indices = [i for r in range(dp_size) for i in per_rank[r][step]]
        start = consumed + step * mbs * dp_size
        assert indices == list(range(start, start + mbs * dp_size))  # disjoint, in order, nothing skipped
    # the tensors each rank gets are the single-rank stream's slices
    single = torch.cat(_stream(fx, consumed, mbs * dp_size, steps=2))
    for r in range(dp_size):
        mine = _stream(fx, consumed, mbs, r, dp_size, steps=2)
        for step, t in enumerate(mine):
            lo = step * mbs * dp_size + r * mbs
            np.testing.assert_array_equal(t.numpy(), single[lo:lo + mbs].numpy())


def test_loader_workers_do_not_change_the_stream(fx):
    a = torch.cat(_stream(fx, 5, 2, steps=6, workers=0))
    b = torch.cat(_stream(fx, 5, 2, steps=6, workers=2))
    np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_packed_prefix_keeps_the_ratio_and_reports(fx):
    train = fx["train"]
    report = train.report(300)
    counts = train.task_counts(300)
    total = counts.sum()
    np.testing.assert_allclose(counts / total, [0.25, 0.5, 0.25], atol=train.config.pack_window / total + 0.01)
    assert report["packing_efficiency"] > 0.7
    assert report["epochs/t2i"] == pytest.approx(counts[1] / train.units_per_task[1])
