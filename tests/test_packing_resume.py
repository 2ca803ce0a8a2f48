"""Packing (never splits an image sample, text windows tile the stream, masks/positions/cu_seqlens against numpy), resume equivalence, disjoint DP slices,
independence from loader workers, prefix stability of the pack index."""
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from liquid_train.data import DataConfig, build_data_loader, build_datasets
from liquid_train.data.packing import build_pack_index
from helpers_data import expected_row, text_stream_oracle
from liquid_train.data.testing import make_tiny_tokenizer, tiny_vocab, write_tiny_datasets
from liquid_train.vocab import TASK_PAD, TASK_TEXT

SEQ = 64


@pytest.fixture(scope="module", params=["window", "document"])
def fx(tmp_path_factory, request):
    d = tmp_path_factory.mktemp("pack")
    tok = make_tiny_tokenizer(str(d / "tok"))
    pairs, text = write_tiny_datasets(str(d / "data"), num_pairs=150, num_texts=100)
    vocab = tiny_vocab(tok)
    cfg = DataConfig(pairs_path=pairs, text_path=text, seq_length=SEQ, mixture={"text": 1, "t2i": 2, "i2t": 1},
                     text_sample=request.param, cache_dir=str(d / "cache"))
    train, valid = build_datasets(cfg, 300, vocab=vocab, tokenizer=tok)
    return {"cfg": cfg, "train": train, "valid": valid, "vocab": vocab, "tok": tok}


def _runs_by_sample(index):
    rows = np.repeat(np.arange(len(index)), np.diff(index.offsets))
    out = {}
    for row, i, start, length in zip(rows, index.sample, index.start, index.length):
        out.setdefault(int(i), []).append((int(row), int(start), int(length)))
    return out


@settings(max_examples=60, deadline=None)
@given(samples=st.lists(st.tuples(st.integers(1, 3 * SEQ), st.booleans()), min_size=1, max_size=300),
       window=st.integers(1, 10), flush=st.booleans())
def test_pack_index_splits_only_text_and_is_prefix_stable(samples, window, flush):
    f = np.asarray([min(n, SEQ) if not cut else n for n, cut in samples])
    cut = np.asarray([c for _, c in samples])
    index = build_pack_index(f, SEQ, window, flush=flush, splittable=cut)
    row_sums = np.add.reduceat(index.length, index.offsets[:-1]) if len(index) else np.array([])
    assert (row_sums <= SEQ).all() and (index.length >= 1).all()
    if cut.all():  # a pure token stream fills every emitted row (but the flushed last one)
        assert (row_sums[:len(row_sums) - flush] == SEQ).all()
    for i, runs in _runs_by_sample(index).items():
        if not cut[i]:
            assert runs == [(runs[0][0], 0, f[i])]  # a whole sample: one run, never split
        else:  # the runs of a text window tile a prefix of it, in row order
            assert [r[1] for r in runs] == np.cumsum([0] + [r[2] for r in runs[:-1]]).tolist()
            assert [r[0] for r in runs] == sorted(r[0] for r in runs)
            assert sum(r[2] for r in runs) <= f[i]
    if flush:
        covered = np.bincount(index.sample, weights=index.length, minlength=len(f))
        np.testing.assert_array_equal(covered, f)
    longer = build_pack_index(np.concatenate([f, f[::-1]]), SEQ, window, flush=False,
                              splittable=np.concatenate([cut, cut[::-1]]))
    if not flush:
        n, r = len(index), int(index.offsets[-1])
        np.testing.assert_array_equal(longer.offsets[:n + 1], index.offsets)
        for name in ("sample", "start", "length"):
            np.testing.assert_array_equal(getattr(longer, name)[:r], getattr(index, name))


def _text_oracle(train):
    """The text stream over every epoch the training stream reaches (None in document mode)."""
    text = train.task_datasets[TASK_TEXT]
    if not text.splittable:
        return None
    docs = [text.indexed[int(seq)] for seq in text.doc_seq]
    end = int(train.stream.dataset_sample_index[train.stream.tasks == TASK_TEXT].max() + 1) * text.window
    orders = [text.permutations(e) for e in range(end // text.epoch_positions + 1)]
    return text_stream_oracle(docs, orders, text.templates.vocab.bos_id, text.templates.vocab.eos_id)


def test_batch_fields_against_numpy(fx):
    """Every field against the numpy oracle, and the micro-batch's PackedSeqParams: the rows end to end as one THD
    stream whose cu_seqlens are exactly the oracle's segment boundaries (padding its own last segment)."""
    train, vocab = fx["train"], fx["vocab"]
    oracle = _text_oracle(train)
    batch = next(iter(build_data_loader(train, 7, 3)))
    assert batch["tokens"].shape == (3, SEQ) and "attention_mask" not in batch
    bounds = [0]
    for row in range(3):
        want = expected_row(train, 7 + row, oracle)
        n = len(want["tokens"])
        assert n <= SEQ
        for key in ("tokens", "labels", "loss_mask", "position_ids", "task_ids", "segment_ids"):
            np.testing.assert_array_equal(batch[key][row, :n].numpy(), want[key], err_msg=key)
        assert (batch["loss_mask"][row, n:] == 0).all() and (batch["task_ids"][row, n:] == TASK_PAD).all()
        assert (batch["tokens"][row, n:] == vocab.pad_id).all()
        starts = np.flatnonzero(np.diff(want["segment_ids"], prepend=-1))
        row_bounds = list(starts[1:]) + [n] + ([SEQ] if n < SEQ else [])
        bounds += [row * SEQ + int(b) for b in row_bounds]
        # position ids restart exactly at the segment starts
        np.testing.assert_array_equal(np.flatnonzero(batch["position_ids"][row, :n].numpy() == 0), starts)
    params = batch["packed_seq_params"]
    assert params.qkv_format == "thd" and params.cu_seqlens_q is params.cu_seqlens_kv
    assert params.cu_seqlens_q.dtype == torch.int32 and params.cu_seqlens_q.tolist() == bounds
    assert params.max_seqlen_q == params.max_seqlen_kv == int(np.diff(bounds).max())
    assert isinstance(params.max_seqlen_q, int)  # a host int: TE needs no device sync for it


def test_every_packed_row_matches_its_runs(fx):
    """All rows (not just one batch): contents from the oracles, and in window mode the text runs of the whole
    prefix are the text stream itself, each position exactly once."""
    train = fx["train"]
    oracle = _text_oracle(train)
    for k in range(len(train)):
        item, want = train[k], expected_row(train, k, oracle)
        n = len(want["tokens"])
        for key in ("tokens", "labels", "position_ids", "segment_ids"):
            np.testing.assert_array_equal(item[key][:n].numpy(), want[key], err_msg=f"row {k} {key}")
    if oracle is not None:
        idx, stream = train.index, train.stream
        text = stream.tasks[idx.sample] == TASK_TEXT
        window = train.task_datasets[TASK_TEXT].window
        begin = stream.dataset_sample_index[idx.sample[text]] * window + idx.start[text]
        covered = np.zeros(int((begin + idx.length[text]).max()), dtype=np.int64)
        for b, length in zip(begin, idx.length[text]):
            covered[b:b + length] += 1
        assert covered.max() == 1  # no text position twice
        assert (covered[:int(begin.min())] == 0).all() and begin.min() == 0


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
    for name, array in fx["train"].index.arrays().items():
        np.testing.assert_array_equal(getattr(again.index, name), array)


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
    assert report["epochs/t2i"] == pytest.approx(counts[1] / train.task_datasets[1].num_units)
    assert report["epochs/text"] == pytest.approx(train.task_datasets[0].epochs(counts[0]))


def test_text_windows_fill_the_gaps_next_to_images(tmp_path):
    """Images longer than half a sequence never share one; in window mode the text after them fills the rest (the
    >= 98% useful-token target on the paper mix), in document mode a gap keeps whatever the next document leaves."""
    tok = make_tiny_tokenizer(str(tmp_path / "tok"))
    pairs, text = write_tiny_datasets(str(tmp_path / "data"), num_pairs=200, num_texts=200, image_grid=(6, 6))
    vocab = tiny_vocab(tok)
    results = {}
    for mode in ("window", "document"):
        cfg = DataConfig(pairs_path=pairs, text_path=text, seq_length=SEQ, mixture={"text": 30, "t2i": 24, "i2t": 6},
                         text_sample=mode, cache_dir=str(tmp_path / "cache"))
        train, _ = build_datasets(cfg, 400, vocab=vocab, tokenizer=tok)
        images = train.stream_footprints[train.stream_tasks != TASK_TEXT]
        assert images.min() > SEQ // 2
        counts = train.task_counts(400)
        np.testing.assert_allclose(counts / counts.sum(), [0.5, 0.4, 0.1], atol=cfg.pack_window / counts.sum() + 0.01)
        results[mode] = train.packing_efficiency(0, 400)
    assert results["window"] >= 0.98
    assert results["document"] < results["window"] - 0.05
