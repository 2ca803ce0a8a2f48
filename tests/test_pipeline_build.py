"""build: indexed datasets read back equal to their inputs (oracles: raw tar/numpy reads and the word vocabulary);
inspect: stats and a PNG grid."""
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import zstandard
from PIL import Image

from data_pipeline.__main__ import main
from data_pipeline.encode import EncodeConfig, run_encode
from data_pipeline.preprocess import PreprocessConfig
from data_pipeline.testing import image_bytes, make_word_tokenizer, write_parquet_table, write_wds_tar

WORDS = "a red blue green circle square on the left right of image number big small".split()


def _caption(i):
    rng = np.random.default_rng(i)
    return " ".join(rng.choice(WORDS, size=1 + i % 7))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("build")
    tok_dir = make_word_tokenizer(str(d / "tok"), WORDS + [str(i) for i in range(50)])
    samples = [{"__key__": f"{i:05d}", "png": image_bytes(72, 64, i), "txt": _caption(i).encode()} for i in range(14)]
    samples.append({"__key__": "unknown", "png": image_bytes(64, 64, 99), "txt": b"zzz"})  # tokenizes to [UNK]
    write_wds_tar(str(d / "in0.tar"), samples[:8])
    write_wds_tar(str(d / "in1.tar"), samples[8:])
    run_encode(EncodeConfig(inputs=[str(d / "in0.tar"), str(d / "in1.tar")], output_dir=str(d / "shards"),
                            vq_tokenizer="chameleon-vqgan-tiny", preprocess=PreprocessConfig(resolution=64),
                            batch_size=4, num_workers=0, device="cpu", progress=False))
    return d, tok_dir


def _raw_shard_samples(shard_dir):
    """Independent reader: plain tarfile + numpy, in shard/member order."""
    out = []
    for shard in sorted(Path(shard_dir).glob("shard-*.tar")):
        with tarfile.open(shard) as tf:
            members = {m.name: tf.extractfile(m).read() for m in tf.getmembers()}
        keys = sorted({n.split(".", 1)[0] for n in members})
        for k in keys:
            out.append((members[f"{k}.txt"].decode(), np.load(io.BytesIO(members[f"{k}.codes.npy"]))))
    return out


def test_pairs_dataset_reads_back(setup):
    from megatron.core.datasets.indexed_dataset import IndexedDataset
    d, tok_dir = setup
    prefix = str(d / "ds" / "pairs")
    assert main(["build", "pairs", str(d / "shards"), "-t", tok_dir, "-o", prefix, "--no-progress"]) == 0
    vocab = json.loads((Path(tok_dir) / "tokenizer.json").read_text())["model"]["vocab"]
    expected = _raw_shard_samples(d / "shards")
    assert len(expected) == 15
    ds = IndexedDataset(prefix)
    assert ds.index.dtype == np.int32
    docs = ds.document_indices
    assert len(docs) - 1 == len(expected) and len(ds) == 2 * len(expected)
    for n, (caption, codes) in enumerate(expected):
        first, last = docs[n], docs[n + 1]
        assert last - first == 2  # exactly two sequences: caption, then image codes
        ids = ds[first]
        assert ids.tolist() == [vocab.get(w, vocab["[UNK]"]) for w in caption.split()]
        np.testing.assert_array_equal(ds[first + 1], codes.reshape(-1).astype(np.int32))
        assert ds[first + 1].min() >= 0 and ds[first + 1].max() < 512
    meta = json.loads(Path(prefix + ".meta.json").read_text())
    assert meta["kind"] == "pairs" and meta["num_documents"] == 15 and meta["codebook_size"] == 512
    assert meta["image_grid"] == [8, 8] and meta["vq_tokenizer"] == "chameleon-vqgan-tiny"
    assert meta["num_caption_tokens"] == sum(len(c.split()) for c, _ in expected)
    assert meta["num_image_tokens"] == 15 * 64
    assert meta["num_tokens"] == int(np.sum(ds.sequence_lengths))


def test_text_dataset_reads_back_all_formats(setup, tmp_path):
    from megatron.core.datasets.indexed_dataset import IndexedDataset
    d, tok_dir = setup
    docs_jsonl = [_caption(i) for i in range(20)]
    jsonl = "\n".join(json.dumps({"text": t}) for t in docs_jsonl[:10] + ["", " "] + docs_jsonl[10:]) + "\n"
    (tmp_path / "a.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(jsonl.encode()))
    docs_parquet = [_caption(100 + i) for i in range(5)]
    write_parquet_table(str(tmp_path / "b.parquet"), [{"text": t} for t in docs_parquet])
    docs_txt = [_caption(200 + i) for i in range(4)]
    (tmp_path / "c.txt").write_text("\n\n".join(docs_txt) + "\n")
    prefix = str(tmp_path / "text")
    assert main(["build", "text", str(tmp_path / "a.jsonl.zst"), str(tmp_path / "b.parquet"), str(tmp_path / "c.txt"),
                 "-t", tok_dir, "-o", prefix, "--no-progress"]) == 0
    vocab = json.loads((Path(tok_dir) / "tokenizer.json").read_text())["model"]["vocab"]
    expected = docs_jsonl + docs_parquet + docs_txt  # files in sorted path order: a, b, c
    ds = IndexedDataset(prefix)
    assert len(ds.document_indices) - 1 == len(expected) == len(ds)
    for n, text in enumerate(expected):
        assert ds[n].tolist() == [vocab[w] for w in text.split()]
    meta = json.loads(Path(prefix + ".meta.json").read_text())
    assert meta["kind"] == "text" and meta["num_documents"] == len(expected)
    assert meta["skipped"]["empty_documents"] == 2
    assert meta["num_tokens"] == sum(len(t.split()) for t in expected)


def test_build_errors_name_the_problem(setup, tmp_path, capsys):
    d, tok_dir = setup
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"content": "x"}\n')

    def error(args):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        return err.strip()

    assert "bad.jsonl:1: no field 'text'; set --text-key" in error(
        ["build", "text", str(bad), "-t", tok_dir, "-o", str(tmp_path / "t"), "--no-progress"])
    assert "no finished VQ shards" in error(
        ["build", "pairs", str(tmp_path), "-t", tok_dir, "-o", str(tmp_path / "p"), "--no-progress"])
    assert "tokenizer directory not found" in error(
        ["build", "text", str(bad), "-t", str(tmp_path / "nope"), "-o", str(tmp_path / "t"), "--no-progress"])
    assert "text input " in error(
        ["build", "text", str(tmp_path / "missing.jsonl"), "-t", tok_dir, "-o", str(tmp_path / "t"), "--no-progress"])
    assert not list(tmp_path.glob("t*.bin")) and not list(tmp_path.glob("*.idx"))


def test_build_pairs_refuses_an_unfinished_encode(setup, tmp_path, capsys):
    d, tok_dir = setup
    partial = tmp_path / "partial"
    run_encode(EncodeConfig(inputs=[str(d / "in0.tar"), str(d / "in1.tar")], output_dir=str(partial),
                            vq_tokenizer="chameleon-vqgan-tiny", preprocess=PreprocessConfig(resolution=64),
                            num_workers=0, device="cpu", progress=False, threads=1, max_units=1))
    args = ["build", "pairs", str(partial), "-t", tok_dir, "-o", str(tmp_path / "p"), "--no-progress"]
    assert main(args) == 2
    assert "encode is unfinished (1 of 2 units have shards" in capsys.readouterr().err
    assert not (tmp_path / "p.bin").exists()
    assert main(args + ["--allow-incomplete"]) == 0
    assert json.loads(capsys.readouterr().out)["num_documents"] == 8


def test_inspect_shards_and_dataset(setup, capsys):
    d, tok_dir = setup
    prefix = str(d / "ds" / "pairs2")
    main(["build", "pairs", str(d / "shards"), "-t", tok_dir, "-o", prefix, "--no-progress"])
    capsys.readouterr()
    png = d / "grid.png"
    assert main(["inspect", str(d / "shards"), "-n", "6", "--out", str(png)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["shards"] == 2 and report["written"] == 15 and report["summary_complete"] is True
    assert Image.open(png).size[0] > 300
    assert main(["inspect", prefix, "-n", "3"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["documents"] == 15 and report["sequences"] == 30
    assert Path(report["grid_png"]).exists()
