"""Mixture: exact task ratio on every stream prefix (megatron BlendedDataset), epochs with new orders, validation
splits, configs."""
import glob

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from liquid_train.data import DataConfig, build_datasets, load_data_config
from liquid_train.data.mixture import MixtureStream
from liquid_train.data.task_datasets import LiquidTaskDataset, open_indexed_dataset, split_documents
from liquid_train.data.templates import LiquidTemplates
from liquid_train.data.testing import make_tiny_tokenizer, tiny_vocab, write_tiny_datasets
from liquid_train.vocab import TASK_I2T, TASK_T2I, TASK_TEXT


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    d = tmp_path_factory.mktemp("mix")
    tok = make_tiny_tokenizer(str(d / "tok"))
    pairs, text = write_tiny_datasets(str(d / "data"), num_pairs=120, num_texts=80)
    return {"tok": tok, "vocab": tiny_vocab(tok), "pairs": pairs, "text": text, "dir": d}


def _task_datasets(fx, size, seq_length=64, seed=3):
    templates = LiquidTemplates(fx["vocab"], fx["tok"], seq_length, seed)
    pairs = open_indexed_dataset(fx["pairs"], "pairs")
    text = open_indexed_dataset(fx["text"], "text")
    return [LiquidTaskDataset(TASK_TEXT, text, fx["text"], templates, (0, 80), size),
            LiquidTaskDataset(TASK_T2I, pairs, fx["pairs"], templates, (0, 120), size),
            LiquidTaskDataset(TASK_I2T, pairs, fx["pairs"], templates, (0, 120), size)]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(weights=st.lists(st.integers(1, 40), min_size=3, max_size=3), size=st.integers(50, 3000))
def test_every_prefix_is_within_one_sample_of_target(fixture, weights, size):
    stream = MixtureStream.in_memory(_task_datasets(fixture, size), [float(w) for w in weights], size)
    p = np.asarray(weights, dtype=np.float64) / sum(weights)
    onehot = np.eye(3, dtype=np.int64)[stream.tasks]
    counts = np.cumsum(onehot, axis=0)                       # counts on prefixes 1..size
    target = np.arange(1, size + 1)[:, None] * p[None, :]
    assert np.abs(counts - target).max() <= 1.0 + 1e-9
    # each task's sample indices are 0, 1, 2, ... in stream order (no sample skipped or repeated)
    for position in range(3):
        taken = stream.dataset_sample_index[stream.dataset_index == position]
        np.testing.assert_array_equal(taken, np.arange(len(taken)))


def test_exhausted_task_repeats_with_new_order(fixture):
    dataset = _task_datasets(fixture, 10 * 120)[1]
    units = dataset.permutations.units(np.arange(3 * 120)).reshape(3, 120)
    for epoch in units:
        assert sorted(epoch.tolist()) == list(range(120))     # each epoch visits every document once
    assert not np.array_equal(units[0], units[1]) and not np.array_equal(units[1], units[2])
    assert dataset.epochs(300) == pytest.approx(2.5)


def _sequences_read(dataset):
    """Indexed-dataset sequences a task dataset can read (first sequence of each pair)."""
    if dataset.task != TASK_TEXT:
        return dataset.unit_caption_seq
    return dataset.doc_seq if dataset.splittable else dataset.unit_seq


def test_validation_documents_are_held_out(fixture):
    cfg = DataConfig(pairs_path=fixture["pairs"], text_path=fixture["text"], seq_length=64, valid_fraction=0.1,
                     cache_dir=str(fixture["dir"] / "cache"))
    train, valid = build_datasets(cfg, 100, vocab=fixture["vocab"], tokenizer=fixture["tok"])
    assert split_documents(120, 0.1) == {"train": (0, 108), "valid": (108, 120)}
    for task_dataset in train.stream.task_datasets:
        seqs = _sequences_read(task_dataset)
        limit = 72 if task_dataset.task == TASK_TEXT else 2 * 108  # first sequence of the first valid document
        assert seqs.max() < limit
    assert set(valid) == {"text", "t2i", "i2t"}
    for name, dataset in valid.items():
        source = dataset.stream
        seqs = _sequences_read(source)
        assert seqs.min() >= (72 if source.task == TASK_TEXT else 2 * 108)
        # one epoch, every validation unit exactly once (a text window possibly in several runs)
        covered = np.bincount(dataset.index.sample, weights=dataset.index.length, minlength=source.num_units)
        np.testing.assert_array_equal(covered, source.footprints(np.arange(source.num_units)))
        assert all((dataset[k]["task_ids"][dataset[k]["task_ids"] >= 0] == source.task).all() for k in range(len(dataset)))


def test_mix_by_tokens_balances_tokens(fixture):
    cfg = DataConfig(pairs_path=fixture["pairs"], text_path=fixture["text"], seq_length=64, mix_by="tokens",
                     mixture={"text": 1, "t2i": 1}, valid_fraction=0.0, cache_dir=str(fixture["dir"] / "cache"))
    train, _ = build_datasets(cfg, 400, vocab=fixture["vocab"], tokenizer=fixture["tok"])
    stream = train.stream
    n = len(stream)
    tokens = np.bincount(stream.tasks, weights=stream.footprints, minlength=3)
    assert tokens[TASK_I2T] == 0
    assert tokens[TASK_TEXT] / tokens[TASK_T2I] == pytest.approx(1.0, rel=0.1)
    samples = np.bincount(stream.tasks, minlength=3)
    assert samples[TASK_TEXT] != samples[TASK_T2I] and n == samples.sum()


def test_configs_load_with_their_ratios():
    expected = {"ratio_1_1_1": (1, 1, 1), "ratio_1_2_1": (1, 2, 1), "ratio_1_1_2": (1, 1, 2), "paper_mix": (30, 24, 6)}
    found = {p.split("/")[-1][:-5]: load_data_config(p) for p in glob.glob("configs/data/*.yaml")}
    assert set(expected) <= set(found)
    for name, ratio in expected.items():
        cfg = found[name]
        assert isinstance(cfg, DataConfig)
        assert tuple(cfg.mixture[k] for k in ("text", "t2i", "i2t")) == ratio
    cfg = load_data_config("configs/data/ratio_1_1_1.yaml", overrides=["seq_length=4096", "mixture.t2i=3"])
    assert cfg.seq_length == 4096 and cfg.mixture["t2i"] == 3


def test_yaml_mixture_replaces_default(tmp_path):
    path = tmp_path / "text_only.yaml"
    path.write_text("mixture: {text: 1}\nseq_length: 128\n")
    cfg = load_data_config(str(path))
    assert cfg.mixture == {"text": 1.0} and cfg.active_tasks == [TASK_TEXT]


@pytest.mark.parametrize("kwargs, message", [
    ({"mixture": {"text": 1, "video": 1}}, "unknown task"),
    ({"mixture": {"text": 0}}, "positive sum"),
    ({"mix_by": "bytes"}, "mix_by"),
    ({"cfg_drop_prob": 1.5}, "cfg_drop_prob"),
])
def test_bad_config_fields_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DataConfig(**kwargs)


def test_missing_dataset_and_bad_layout_are_clear(fixture, tmp_path):
    with pytest.raises(FileNotFoundError, match="pairs indexed dataset not found"):
        open_indexed_dataset(str(tmp_path / "nope"), "pairs")
    with pytest.raises(ValueError, match="needs exactly 2 per document"):
        open_indexed_dataset(fixture["text"], "pairs")
    cfg = DataConfig(text_path=fixture["text"], seq_length=64)
    with pytest.raises(ValueError, match="pairs_path is unset"):
        build_datasets(cfg, 10, vocab=fixture["vocab"], tokenizer=fixture["tok"])


def test_stock_megatron_index_can_miss_by_more_than_one_sample():
    """Why the exact blend is the default: megatron's helper aims at the previous prefix's target."""
    from megatron.core.datasets import helpers

    weights = np.array([1.0, 1.0, 7.0]) / 9.0
    index = np.zeros(2000, dtype=np.int16)
    helpers.build_blending_indices(index, np.zeros(2000, dtype=np.int64), weights, 3, 2000, False)
    counts = np.cumsum(np.eye(3)[index], axis=0)
    assert np.abs(counts - np.arange(1, 2001)[:, None] * weights).max() > 1.0
