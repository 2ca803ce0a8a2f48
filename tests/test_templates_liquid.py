"""Templates: token layout and loss masks of T2I / I2T / text against the raw indexed data (numpy oracle)."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from helpers_data import text_stream_oracle
from liquid_train.data.config import I2T_PROMPT, T2I_INSTRUCTIONS
from liquid_train.data.task_datasets import LiquidTaskDataset, open_indexed_dataset
from liquid_train.data.templates import LiquidTemplates
from liquid_train.data.testing import make_tiny_tokenizer, tiny_vocab, write_tiny_datasets
from liquid_train.vocab import TASK_I2T, TASK_T2I, TASK_TEXT

SEQ = 48


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    d = tmp_path_factory.mktemp("tpl")
    tok = make_tiny_tokenizer(str(d / "tok"))
    pairs, text = write_tiny_datasets(str(d / "data"), num_pairs=40, num_texts=30, caption_range=(1, 40),
                                      text_range=(1, 150))
    vocab = tiny_vocab(tok)
    templates = LiquidTemplates(vocab, tok, SEQ, seed=11, cfg_drop_prob=0.1)
    p_ds, t_ds = open_indexed_dataset(pairs, "pairs"), open_indexed_dataset(text, "text")
    return {"tok": tok, "vocab": vocab, "templates": templates, "pairs": p_ds, "text": t_ds,
            "t2i": LiquidTaskDataset(TASK_T2I, p_ds, pairs, templates, (0, 40), 10_000),
            "i2t": LiquidTaskDataset(TASK_I2T, p_ds, pairs, templates, (0, 40), 10_000),
            "txt": LiquidTaskDataset(TASK_TEXT, t_ds, text, templates, (0, 30), 10_000, text_sample="document"),
            "win": LiquidTaskDataset(TASK_TEXT, t_ds, text, templates, (0, 30), 10_000, text_chunk_length=40),
            "win_valid": LiquidTaskDataset(TASK_TEXT, t_ds, text, templates, (0, 30), 10_000, split="valid",
                                           shuffle=False, text_chunk_length=40)}


def _enc(tok, s):
    return tok(s, add_special_tokens=False)["input_ids"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(index=st.integers(0, 9_999))
def test_t2i_layout_and_loss_mask(fx, index):
    v, ds = fx["vocab"], fx["t2i"]
    sample = ds.sample(index)
    unit = int(ds.permutations.units(np.array([index]))[0])
    caption, codes = np.asarray(fx["pairs"][2 * unit]), np.asarray(fx["pairs"][2 * unit + 1])
    t = sample.tokens
    boi = int(np.nonzero(t == v.boi_id)[0][0])
    assert t[0] == v.bos_id and t[-2] == v.eoi_id and t[-1] == v.eos_id
    np.testing.assert_array_equal(t[boi + 1:-2], codes + v.image_token_offset)
    text = t[1:boi].tolist()
    if text == [v.uncond_id]:
        pass
    else:
        suffixes = [_enc(fx["tok"], s) for s in T2I_INSTRUCTIONS]
        match = [s for s in suffixes if text[len(text) - len(s):] == s]
        assert match, "text must end with one of the ten instructions"
        cap = text[:len(text) - len(match[-1])]
        assert cap == caption[:len(cap)].tolist() and len(cap) >= 1
        assert len(cap) == len(caption) or sample.footprint == SEQ  # truncated only when needed to fit
    expected = np.zeros(len(t), dtype=bool)
    expected[boi + 1:] = True
    np.testing.assert_array_equal(sample.target, expected)
    assert sample.footprint <= SEQ
    assert ds.footprints([index])[0] == sample.footprint
    np.testing.assert_array_equal(ds.sample(index).tokens, t)  # pure function of (seed, index)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(index=st.integers(0, 9_999))
def test_i2t_layout_and_loss_mask(fx, index):
    v, ds = fx["vocab"], fx["i2t"]
    sample = ds.sample(index)
    unit = int(ds.permutations.units(np.array([index]))[0])
    caption, codes = np.asarray(fx["pairs"][2 * unit]), np.asarray(fx["pairs"][2 * unit + 1])
    prompt = _enc(fx["tok"], I2T_PROMPT)
    head = [v.bos_id, v.boi_id, *(codes + v.image_token_offset).tolist(), v.eoi_id, *prompt]
    t = sample.tokens.tolist()
    assert t[:len(head)] == head and t[-1] == v.eos_id
    cap = t[len(head):-1]
    assert cap == caption[:len(cap)].tolist() and (len(cap) == len(caption) or sample.footprint == SEQ)
    expected = [False] * len(head) + [True] * (len(cap) + 1)
    assert sample.target.tolist() == expected
    assert ds.footprints([index])[0] == sample.footprint <= SEQ


def test_text_pieces_cover_documents_exactly(fx):
    v, ds = fx["vocab"], fx["txt"]
    rebuilt = {d: [] for d in range(30)}
    for index in range(ds.num_units):  # first epoch: every piece once
        sample = ds.sample(index)
        unit = int(ds.permutations.units(np.array([index]))[0])
        assert sample.tokens[0] == v.bos_id and sample.footprint <= SEQ
        assert not sample.target[0] and sample.target[1:].all()
        rebuilt[int(ds.unit_seq[unit])].append((int(ds.unit_offset[unit]), sample.tokens[1:].tolist()))
    for doc, pieces in rebuilt.items():
        stream = [tok for _, piece in sorted(pieces) for tok in piece]
        assert stream == np.asarray(fx["text"][doc]).tolist() + [v.eos_id]


def test_cfg_drop_rate_and_all_instructions_used(fx):
    idx = np.arange(20_000)
    dropped, which = fx["templates"].t2i_choices(idx)
    assert 0.09 < dropped.mean() < 0.11
    assert set(np.unique(which).tolist()) == set(range(10))
    none = LiquidTemplates(fx["vocab"], fx["tok"], SEQ, seed=11, cfg_drop_prob=0.0).t2i_choices(idx)[0]
    assert not none.any()
    other_seed = LiquidTemplates(fx["vocab"], fx["tok"], SEQ, seed=12, cfg_drop_prob=0.1).t2i_choices(idx)[0]
    assert (other_seed != dropped).any()


def test_image_too_large_for_seq_length_is_a_config_error(fx):
    with pytest.raises(ValueError, match="need seq_length >="):
        small = LiquidTemplates(fx["vocab"], fx["tok"], 20, seed=0)
        LiquidTaskDataset(TASK_T2I, fx["pairs"], "pairs", small, (0, 40), 10)


def test_text_windows_cut_the_shuffled_document_stream(fx):
    v, ds = fx["vocab"], fx["win"]
    docs = [fx["text"][d] for d in range(30)]
    orders = [ds.permutations(e) for e in range(3)]
    assert all(sorted(o.tolist()) == list(range(30)) for o in orders) and not np.array_equal(orders[0], orders[1])
    x, y, starts = text_stream_oracle(docs, orders, v.bos_id, v.eos_id)
    n = len(x) // 40
    runs = [ds.positions(i) for i in range(n)]
    assert all(len(r) == 40 and ds.footprints([i])[0] == 40 for i, r in enumerate(runs))
    np.testing.assert_array_equal(np.concatenate([r.inputs for r in runs]), x[:n * 40])
    np.testing.assert_array_equal(np.concatenate([r.labels for r in runs]), y[:n * 40])
    np.testing.assert_array_equal(np.concatenate([r.segment_starts for r in runs]), starts[:n * 40])
    assert all(r.loss_mask.all() and r.stream_span == (40 * i, 40 * i + 40) for i, r in enumerate(runs))
    assert ds.epochs(n) == pytest.approx(n * 40 / (len(x) / 3))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(index=st.integers(0, 5_000), start=st.integers(0, 39), length=st.integers(1, 40))
def test_a_window_slice_reads_the_same_positions(fx, index, start, length):
    ds = fx["win"]
    stop = min(40, start + length)
    whole, part = ds.positions(index), ds.positions(index, start, stop)
    np.testing.assert_array_equal(part.inputs, whole.inputs[start:stop])
    np.testing.assert_array_equal(part.labels, whole.labels[start:stop])
    np.testing.assert_array_equal(part.segment_starts, whole.segment_starts[start:stop])
    assert part.stream_span == (40 * index + start, 40 * index + stop)


def test_validation_windows_cover_one_epoch_in_order(fx):
    v, ds = fx["vocab"], fx["win_valid"]
    x, y, _ = text_stream_oracle([fx["text"][d] for d in range(30)], [np.arange(30)], v.bos_id, v.eos_id)
    feet = ds.footprints(np.arange(ds.num_units))
    assert feet.sum() == len(x) and (feet[:-1] == 40).all() and 1 <= feet[-1] <= 40
    np.testing.assert_array_equal(np.concatenate([ds.positions(i).inputs for i in range(ds.num_units)]), x)
    np.testing.assert_array_equal(np.concatenate([ds.positions(i).labels for i in range(ds.num_units)]), y)
