"""The mixed-task index: compiled blend and packer identical to the pure-Python reference on random streams; the
built index identical to the builder it replaced; several sources per task exact on every prefix; built once by
rank 0 while another rank waits over gloo and maps it; a kill -9 at any point of a build leaves nothing usable
and a rerun builds the same index; the ahead-of-time CLI."""
import glob
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from liquid_train.data import DataConfig, build_data_loader, build_datasets, reference
from liquid_train.data import index as index_module
from liquid_train.data.builder import index_plan
from liquid_train.data.mixture import Blend, exact_blending_indices
from liquid_train.data.packing import StreamPacker, build_pack_index
from liquid_train.data.task_datasets import release_pages
from liquid_train.data.testing import make_tiny_tokenizer, tiny_vocab, write_tiny_datasets
from liquid_train.vocab import TASK_I2T, TASK_T2I, TASK_TEXT

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEQ = 64


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    d = tmp_path_factory.mktemp("index")
    tok = make_tiny_tokenizer(str(d / "tok"))
    pairs, text = write_tiny_datasets(str(d / "a"), num_pairs=150, num_texts=100, seed=0)
    pairs_b, text_b = write_tiny_datasets(str(d / "b"), num_pairs=60, num_texts=40, seed=1, caption_range=(20, 40))
    return {"dir": d, "tok": tok, "tok_dir": str(d / "tok"), "vocab": tiny_vocab(tok), "pairs": pairs, "text": text,
            "pairs_b": pairs_b, "text_b": text_b}


# --- compiled == reference ---------------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(weights=st.lists(st.floats(0.01, 50.0), min_size=1, max_size=6), size=st.integers(1, 3000))
def test_blend_is_the_reference_and_megatrons_helper(weights, size):
    index, sample = exact_blending_indices(weights, size)
    want_index, want_sample = reference.exact_blending_indices(weights, size)
    np.testing.assert_array_equal(index, want_index)
    np.testing.assert_array_equal(sample, want_sample)
    assert index.dtype == want_index.dtype and sample.dtype == want_sample.dtype
    if len(weights) > 1:  # the stock algorithm is megatron's C++ helper, step for step
        from megatron.core.datasets import helpers
        from megatron.core.datasets.utils import normalize

        w = np.array(normalize(weights), dtype=np.float64)
        stock_index, stock_sample = np.zeros(size, np.int16), np.zeros(size, np.int64)
        helpers.build_blending_indices(stock_index, stock_sample, w, len(w), size, False)
        index, sample = exact_blending_indices(weights, size, "megatron")
        np.testing.assert_array_equal(index, stock_index)
        np.testing.assert_array_equal(sample, stock_sample)


@settings(max_examples=80, deadline=None)
@given(samples=st.lists(st.tuples(st.integers(1, 3 * SEQ), st.booleans()), min_size=1, max_size=400),
       seq=st.integers(1, SEQ), window=st.integers(1, 10), flush=st.booleans(), data=st.data())
def test_packer_is_the_reference_in_any_chunking(samples, seq, window, flush, data):
    cut = np.array([c for _, c in samples])
    f = np.array([n if c else min(n, seq) for n, c in samples])
    want = reference.build_pack_index(f, seq, window, flush=flush, splittable=cut)
    got = build_pack_index(f, seq, window, flush=flush, splittable=cut)
    for name in ("offsets", "sample", "start", "length"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)
        assert getattr(got, name).dtype == getattr(want, name).dtype
    # the streaming packer, fed in random chunks, emits the same rows (what the index builder does)
    bounds = sorted(set(data.draw(st.lists(st.integers(0, len(f)), max_size=6))) | {0, len(f)})
    packer = StreamPacker(seq, window, buffer_runs=1, tally_every=3, num_sources=2)
    source_of = (np.arange(len(f)) % 2).astype(np.int16)
    parts = [packer.feed(f[a:b], cut[a:b], source_of) for a, b in zip(bounds, bounds[1:])]
    if flush:
        parts.append(packer.flush(source_of))
    rows, sample, start, length = (np.concatenate(c) for c in zip(*parts))
    np.testing.assert_array_equal(np.concatenate([[0], np.cumsum(rows)]), want.offsets)
    np.testing.assert_array_equal(sample, want.sample)
    np.testing.assert_array_equal(length, want.length)
    # its tally: per block of 3 rows, samples begun per source and positions used (numpy oracle)
    begun, used = packer.tally()
    row_of_run = np.repeat(np.arange(len(want)), np.diff(want.offsets))
    for b in range(len(used)):
        runs = row_of_run < 3 * b
        assert used[b] == want.length[runs].sum()
        first = runs & (want.start == 0)
        np.testing.assert_array_equal(begun[b], np.bincount(source_of[want.sample[first]], minlength=2))


@pytest.mark.parametrize("mode, mix_by, algorithm, mixture", [
    ("window", "samples", "exact", {"text": 1, "t2i": 2, "i2t": 1}),
    ("window", "tokens", "megatron", {"text": 30, "t2i": 24, "i2t": 6}),
    ("document", "samples", "exact", {"text": 30, "t2i": 24, "i2t": 6}),
    ("document", "tokens", "exact", {"text": 1, "t2i": 1}),
])
def test_built_index_is_the_one_todays_builder_made(fx, mode, mix_by, algorithm, mixture, tmp_path):
    """The whole training index (stream, footprints, packed rows, stream size) against the builder it replaced:
    megatron's BlendedDataset with the Python exact index, in-memory footprints, the Python packer."""
    cfg = DataConfig(pairs_path=fx["pairs"], text_path=fx["text"], seq_length=SEQ, mixture=mixture,
                     text_sample=mode, mix_by=mix_by, blend_algorithm=algorithm, cache_dir=str(tmp_path))
    train, _ = build_datasets(cfg, 900, vocab=fx["vocab"], tokenizer=fx["tok"])
    dataset_index, dataset_sample_index, footprints, index = reference.build_train_index(cfg, 900, fx["vocab"],
                                                                                          fx["tok"])
    stream = train.stream
    np.testing.assert_array_equal(stream.dataset_index, dataset_index)
    np.testing.assert_array_equal(stream.dataset_sample_index, dataset_sample_index)
    np.testing.assert_array_equal(stream.footprints, footprints)
    for name in ("offsets", "sample", "start", "length"):
        np.testing.assert_array_equal(getattr(train.index, name), getattr(index, name), err_msg=name)
    for dataset in stream.task_datasets:  # the compiled footprints of a range are the templates' footprints
        lo = dataset.num_units - 7
        np.testing.assert_array_equal(dataset.footprints_range(lo, lo + 300), dataset.footprints(np.arange(lo, lo + 300)))


# --- several sources per task ----------------------------------------------------------------------------------
def _within(counts_by_prefix, weights, bound):
    n = np.arange(1, len(counts_by_prefix) + 1)[:, None]
    return np.abs(counts_by_prefix - n * np.asarray(weights)[None, :] / np.sum(weights)).max() <= bound + 1e-9


@settings(max_examples=40, deadline=None)
@given(task_weights=st.lists(st.integers(1, 30), min_size=1, max_size=3),
       source_weights=st.lists(st.lists(st.integers(1, 20), min_size=1, max_size=4), min_size=3, max_size=3),
       size=st.integers(1, 4000))
def test_several_sources_are_exact_on_every_prefix(task_weights, source_weights, size):
    source_weights = source_weights[:len(task_weights)]
    source, sample = Blend(task_weights, source_weights).take(size)
    bounds = np.cumsum([0] + [len(s) for s in source_weights])
    task = np.searchsorted(bounds, source, side="right") - 1
    k = len(task_weights)
    bound = 1 - 1 / (2 * k - 2) if k > 1 else 0.0
    assert _within(np.cumsum(np.eye(k, dtype=np.int64)[task], axis=0), task_weights, bound)
    for t, weights in enumerate(source_weights):  # inside each task: exact on every prefix of its own sub-stream
        mine = source[task == t] - bounds[t]
        if len(mine) == 0:
            continue
        ks = len(weights)
        assert _within(np.cumsum(np.eye(ks, dtype=np.int64)[mine], axis=0), weights,
                       1 - 1 / (2 * ks - 2) if ks > 1 else 0.0)
    for s in range(bounds[-1]):  # each source's samples are 0, 1, 2, ... in stream order
        np.testing.assert_array_equal(sample[source == s], np.arange((source == s).sum()))


def _sources_cfg(fx, cache, **kw):
    return DataConfig(sources={"text": [{"path": fx["text"], "weight": 3, "name": "big"},
                                        {"path": fx["text_b"], "weight": 1, "name": "small"}],
                               "t2i": [{"path": fx["pairs"], "weight": 2, "name": "a"},
                                       {"path": fx["pairs_b"], "weight": 1, "name": "b"}],
                               "i2t": [{"path": fx["pairs"], "weight": 1, "name": "a"}]},
                      mixture={"text": 30, "t2i": 24, "i2t": 6}, seq_length=SEQ, cache_dir=str(cache), **kw)


def test_sources_build_report_and_wrap(fx, tmp_path, caplog):
    cfg = _sources_cfg(fx, tmp_path)
    train, valid = build_datasets(cfg, 1500, vocab=fx["vocab"], tokenizer=fx["tok"])
    stream = train.stream
    names = [f"{d.task}:{d.name}" for d in stream.task_datasets]
    assert names == [f"{TASK_TEXT}:big", f"{TASK_TEXT}:small", f"{TASK_T2I}:a", f"{TASK_T2I}:b", f"{TASK_I2T}:a"]
    source = np.asarray(stream.dataset_index)
    task_of = stream.source_tasks[source]
    assert _within(np.cumsum(np.eye(3, dtype=np.int64)[task_of], axis=0), [30, 24, 6], 0.75)
    for task, ids, weights in ((TASK_TEXT, [0, 1], [3, 1]), (TASK_T2I, [2, 3], [2, 1])):
        mine = source[task_of == task] - ids[0]
        assert _within(np.cumsum(np.eye(2, dtype=np.int64)[mine], axis=0), weights, 0.5)
    # T2I and I2T read the same pairs file in independent orders
    t2i_a, i2t_a = stream.task_datasets[2], stream.task_datasets[4]
    assert t2i_a.indexed is i2t_a.indexed
    assert not np.array_equal(t2i_a.permutations(0), i2t_a.permutations(0))
    # the report: the old keys, plus samples and epochs per source; a source that wraps is logged
    with caplog.at_level(logging.INFO, logger="liquid_train.data.builder"):
        report = train.report(len(train))
    counts = train.source_counts(len(train))
    oracle = np.bincount(source[train.index.sample[train.index.start == 0]], minlength=5)
    np.testing.assert_array_equal(counts, oracle)  # checkpointed counts == a full scan
    assert report["samples/text"] == counts[0] + counts[1] and report["samples/t2i"] == counts[2] + counts[3]
    assert report["samples/text/big"] == counts[0] and report["samples/t2i/b"] == counts[3]
    assert report["samples/i2t/a"] == report["samples/i2t"] == counts[4]
    assert report["epochs/t2i/b"] == pytest.approx(counts[3] / stream.task_datasets[3].num_units)
    assert report["epochs/t2i"] == max(report["epochs/t2i/a"], report["epochs/t2i/b"])
    assert report["epochs/t2i/b"] > 1 and "data source t2i/b wrapped" in caplog.text
    assert 0.9 < report["packing_efficiency"] <= 1.0
    for k in range(0, len(train), 97):  # report at any point == a scan of the rows before it
        begun = train.index.sample[:train.index.offsets[k]][train.index.start[:train.index.offsets[k]] == 0]
        np.testing.assert_array_equal(train.source_counts(k), np.bincount(source[begun], minlength=5))
        if k:
            used = train.index.length[:train.index.offsets[k]].sum()
            assert train.packing_efficiency(0, k) == pytest.approx(used / (k * SEQ))
    # validation: per task, every held-out unit of all its sources exactly once
    assert set(valid) == {"text", "t2i", "i2t"}
    t2i = valid["t2i"]
    parts = t2i.stream.datasets
    assert [d.name for d in parts] == ["a", "b"] and len(t2i.stream) == sum(d.num_units for d in parts)
    covered = np.bincount(t2i.index.sample, weights=t2i.index.length, minlength=len(t2i.stream))
    np.testing.assert_array_equal(covered, np.concatenate([d.footprints(np.arange(d.num_units)) for d in parts]))
    sample = t2i.stream.sample(len(t2i.stream) - 1)
    want = parts[1].sample(parts[1].num_units - 1)
    np.testing.assert_array_equal(sample.tokens, want.tokens)


def test_single_path_keys_are_one_source_each(fx, tmp_path):
    single = DataConfig(pairs_path=fx["pairs"], text_path=fx["text"], seq_length=SEQ, cache_dir=str(tmp_path))
    listed = DataConfig(sources={"text": [{"path": fx["text"]}], "t2i": [{"path": fx["pairs"], "weight": 5}],
                                 "i2t": [{"path": fx["pairs"]}]}, seq_length=SEQ, cache_dir=str(tmp_path))
    a, _ = build_datasets(single, 400, vocab=fx["vocab"], tokenizer=fx["tok"])
    b, _ = build_datasets(listed, 400, vocab=fx["vocab"], tokenizer=fx["tok"])
    assert a.reader.directory != b.reader.directory  # a source weight is part of the key
    for name in ("source", "source_sample", "footprint", "offsets", "sample", "start", "length"):
        np.testing.assert_array_equal(a.reader.array(name), b.reader.array(name), err_msg=name)


@pytest.mark.parametrize("kwargs, message", [
    ({"sources": {"video": [{"path": "x"}]}}, "unknown task"),
    ({"sources": {"t2i": [{"path": "x", "weight": 0}]}}, "weights must be > 0"),
    ({"sources": {"text": [{"path": "a/x"}, {"path": "b/x"}]}}, "give each a `name`"),
    ({"sources": {"t2i": [{"path": "x"}]}, "pairs_path": "y"}, "both give t2i data"),
])
def test_bad_sources_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DataConfig(**kwargs)


# --- built once, mapped everywhere -----------------------------------------------------------------------------
def test_index_is_published_complete_and_mapped_read_only(fx, tmp_path):
    cfg = _sources_cfg(fx, tmp_path)
    train, valid = build_datasets(cfg, 300, vocab=fx["vocab"], tokenizer=fx["tok"])
    assert train.index_built_here
    published = glob.glob(str(tmp_path / "index-*"))
    assert published == [train.reader.directory] and not glob.glob(str(tmp_path / ".index-*"))
    assert open(os.path.join(published[0], index_module.MARKER)).read().strip() in published[0]
    again, _ = build_datasets(cfg, 300, vocab=fx["vocab"], tokenizer=fx["tok"])
    assert not again.index_built_here
    for array in (again.index.offsets, again.index.sample, again.stream.dataset_index, again.stream.footprints):
        assert isinstance(array, np.memmap) and array.mode == "r" and not array.flags.writeable
    perm = again.stream.task_datasets[2].permutations(0)
    assert isinstance(perm, np.memmap)  # a rank computes no per-document table
    np.testing.assert_array_equal(perm, train.stream.task_datasets[2].permutations.compute(0))
    batches = [b["tokens"] for b, _ in zip(build_data_loader(again, 5, 2), range(3))]
    want = [b["tokens"] for b, _ in zip(build_data_loader(train, 5, 2), range(3))]
    for x, y in zip(batches, want):
        np.testing.assert_array_equal(x.numpy(), y.numpy())
    # other sizes, seeds or weights are other keys
    other, _ = build_datasets(_sources_cfg(fx, tmp_path, seed=7), 300, vocab=fx["vocab"], tokenizer=fx["tok"])
    assert other.reader.directory != train.reader.directory and other.index_built_here


def _rss_file_kib():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssFile"))


def test_release_pages_touches_only_read_only_file_mappings(tmp_path):
    data = np.arange(10_000, dtype=np.int64)
    release_pages(data)  # anonymous, writeable: left alone
    assert data.sum() == 10_000 * 9_999 // 2
    path = str(tmp_path / "big.npy")
    np.save(path, np.arange(8 << 20, dtype=np.int64))  # 64 MiB
    mapped = np.load(path, mmap_mode="r")
    assert int(mapped.sum()) == (8 << 20) * ((8 << 20) - 1) // 2
    before = _rss_file_kib()
    release_pages(mapped)
    assert _rss_file_kib() < before - 32 * 1024  # the pages left this process
    assert int(mapped[-1]) == (8 << 20) - 1 and int(mapped.sum()) == (8 << 20) * ((8 << 20) - 1) // 2


def _gloo_worker(rank, world, init_file, cfg_kwargs, tok_dir, out_dir):
    torch.set_num_threads(1)
    import torch.distributed as dist
    from transformers import AutoTokenizer

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        tok = AutoTokenizer.from_pretrained(tok_dir)
        cfg = DataConfig(**cfg_kwargs)
        plan, _ = index_plan(cfg, 500, tiny_vocab(tok), tok)
        existed = index_module.load(plan) is not None
        train, valid = build_datasets(cfg, 500, vocab=tiny_vocab(tok), tokenizer=tok)
        arrays = {name: train.reader.array(name) for name in ("source", "offsets", "sample", "length")}
        result = {"rank": rank, "existed_before": existed, "built_here": train.index_built_here,
                  "mapped": all(isinstance(a, np.memmap) and a.mode == "r" for a in arrays.values()),
                  "digest": {k: int(np.asarray(v, dtype=np.int64).sum()) for k, v in arrays.items()},
                  "rows": len(train), "directory": train.reader.directory,
                  "tokens": train[len(train) - 1]["tokens"].tolist()}
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
            json.dump(result, f)
    finally:
        dist.destroy_process_group()


def test_two_ranks_over_gloo_one_builds_the_other_maps(fx, tmp_path):
    import torch.multiprocessing as mp

    cfg_kwargs = dict(sources={"text": [{"path": fx["text"]}], "t2i": [{"path": fx["pairs"]}],
                               "i2t": [{"path": fx["pairs_b"]}]}, seq_length=SEQ, cache_dir=str(tmp_path / "c"))
    mp.spawn(_gloo_worker, args=(2, str(tmp_path / "pg"), cfg_kwargs, fx["tok_dir"], str(tmp_path)), nprocs=2,
             join=True)
    r0, r1 = (json.load(open(tmp_path / f"rank{r}.json")) for r in (0, 1))
    assert not r0["existed_before"] and r0["built_here"] and not r1["built_here"]
    assert r0["mapped"] and r1["mapped"] and r0["directory"] == r1["directory"]
    assert r0["digest"] == r1["digest"] and r0["rows"] == r1["rows"] >= 500 and r0["tokens"] == r1["tokens"]
    assert len(glob.glob(str(tmp_path / "c" / "index-*"))) == 1


# --- kill -9 in the middle of a build --------------------------------------------------------------------------
_KILL_CHILD = textwrap.dedent("""
    import sys, time
    from liquid_train.data import DataConfig, index
    from liquid_train.data.builder import index_plan
    from liquid_train.data.testing import tiny_vocab
    from transformers import AutoTokenizer

    written, stop_after = [0], int(sys.argv[4])

    def announce(fn):  # count the files the build writes; after the chosen one, wait to be killed
        def wrapped(*args, **kwargs):
            out = fn(*args, **kwargs)
            written[0] += 1
            if written[0] == stop_after:
                print("wrote", written[0], flush=True)
                time.sleep(600)
            return out
        return wrapped

    index._save = announce(index._save)
    index._NpyWriter.close = announce(index._NpyWriter.close)
    index.atomic_write_text = announce(index.atomic_write_text)
    tok = AutoTokenizer.from_pretrained(sys.argv[1])
    cfg = DataConfig(**eval(sys.argv[2]))
    plan, _ = index_plan(cfg, int(sys.argv[3]), tiny_vocab(tok), tok)
    index.build(plan, progress=lambda line: None)
    print("done", flush=True)
""")


def _arrays(directory):
    return {os.path.basename(p)[:-4]: np.load(p) for p in sorted(glob.glob(os.path.join(directory, "*.npy")))}


def test_kill_9_anywhere_in_a_build_then_a_rerun_builds_the_same_index(fx, tmp_path):
    cfg_kwargs = dict(sources={"text": [{"path": fx["text"]}, {"path": fx["text_b"], "name": "b"}],
                               "t2i": [{"path": fx["pairs"]}], "i2t": [{"path": fx["pairs"]}]},
                      seq_length=SEQ, cache_dir=str(tmp_path / "cache"))
    clean_cfg = DataConfig(**{**cfg_kwargs, "cache_dir": str(tmp_path / "clean")})
    clean, _ = build_datasets(clean_cfg, 400, vocab=fx["vocab"], tokenizer=fx["tok"])
    num_files = len(os.listdir(clean.reader.directory))
    cfg = DataConfig(**cfg_kwargs)
    plan, _ = index_plan(cfg, 400, fx["vocab"], fx["tok"])
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1",
               PYTHONWARNINGS="ignore")
    # files written before the kill: the first, half, all but the marker, all (killed before the rename)
    for kill_after in (1, num_files // 2, num_files - 1, num_files):
        child = subprocess.Popen([sys.executable, "-c", _KILL_CHILD, fx["tok_dir"], repr(cfg_kwargs), "400",
                                  str(kill_after)], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                 text=True)
        assert child.stdout.readline().split() == ["wrote", str(kill_after)]
        child.send_signal(signal.SIGKILL)
        child.wait()
        assert index_module.load(plan) is None, kill_after  # nothing that looks usable
        assert not glob.glob(str(tmp_path / "cache" / "index-*"))
        assert glob.glob(str(tmp_path / "cache" / f".index-{plan.key}.tmp.*"))  # its leftovers, unpublished
    rerun, _ = build_datasets(cfg, 400, vocab=fx["vocab"], tokenizer=fx["tok"])
    assert rerun.index_built_here and not glob.glob(str(tmp_path / "cache" / ".index-*"))  # dead builds removed
    want, got = _arrays(clean.reader.directory), _arrays(rerun.reader.directory)
    assert want.keys() == got.keys()
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


# --- ahead of time ----------------------------------------------------------------------------------------------
def test_cli_builds_ahead_of_time_for_a_run_config(fx, tmp_path):
    fx["vocab"].save(str(tmp_path))
    overrides = [f"run_dir={tmp_path / 'run'}", f"data.pairs_path={fx['pairs']}", f"data.text_path={fx['text']}",
                 f"data.tokenizer={fx['tok_dir']}", f"model.vocab={tmp_path}", f"data.cache_dir={tmp_path / 'c'}",
                 "data.seq_length=64", "train.iters=20", "train.global_batch_size=8"]
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1",
               PYTHONWARNINGS="ignore")
    cmd = [sys.executable, "-m", "liquid_train.data", "index", "--config", "configs/runs/tiny_cpu.yaml", *overrides]
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    directory = out.stdout.strip().splitlines()[-1]
    assert os.path.exists(os.path.join(directory, index_module.MARKER))
    # the trainer's call (train.iters x global_batch_size sequences, the model's vocabulary) finds it
    cfg = DataConfig(pairs_path=fx["pairs"], text_path=fx["text"], tokenizer=fx["tok_dir"], seq_length=64,
                     valid_fraction=0.05, cache_dir=str(tmp_path / "c"))
    train, _ = build_datasets(cfg, 20 * 8, vocab=fx["vocab"])
    assert not train.index_built_here and train.reader.directory == directory
    again = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "up to date" in again.stdout
    bad = subprocess.run(cmd + ["data.mixture.text=-1"], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "mixture" in bad.stderr
