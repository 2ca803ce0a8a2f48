"""``build text`` reads the paper's corpus formats as they come: ``.jsonl``, SlimPajama ``.jsonl.zst``, DCLM
``.json.zst`` (JSON lines, here written as several zstd frames as ``pzstd`` does), StarCoder ``.parquet`` (text in
``content``), each with a configurable text field; streamed, never a whole file in memory."""
import json
import tracemalloc
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from data_pipeline.__main__ import main
from data_pipeline.testing import make_word_tokenizer
from data_pipeline.text_sources import iter_text_documents

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()


def doc(i: int, n: int = None) -> str:
    rng = np.random.default_rng(i)
    return " ".join(rng.choice(WORDS, size=n or 1 + i % 9))


def jsonl(docs, key):
    return "".join(json.dumps({key: t, "meta": {"i": i}}) + "\n" for i, t in enumerate(docs)).encode()


def zst_frames(data: bytes, frames: int) -> bytes:
    """Several independent zstd frames back to back (pzstd / ``cat a.zst b.zst``)."""
    step = -(-len(data) // frames)
    return b"".join(zstandard.ZstdCompressor(level=3).compress(data[i:i + step]) for i in range(0, len(data), step))


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return make_word_tokenizer(str(tmp_path_factory.mktemp("tok")), WORDS)


def test_each_format_reads_back(tok, tmp_path, capsys):
    from megatron.core.datasets.indexed_dataset import IndexedDataset
    docs = {name: [doc(100 * k + i) for i in range(12)] for k, name in enumerate("abcd")}
    (tmp_path / "a.jsonl").write_bytes(jsonl(docs["a"], "body"))
    (tmp_path / "b.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(jsonl(docs["b"], "body")))
    (tmp_path / "c.json.zst").write_bytes(zst_frames(jsonl(docs["c"], "body"), frames=3))
    pq.write_table(pa.table({"body": docs["d"], "size": list(range(12))}), tmp_path / "d.parquet", row_group_size=5)
    vocab = json.loads((Path(tok) / "tokenizer.json").read_text())["model"]["vocab"]
    for name, files in [("all", [str(tmp_path)]), ("each", [str(p) for p in sorted(tmp_path.iterdir())])]:
        prefix = str(tmp_path / "out" / name)
        assert main(["build", "text", *files, "-t", tok, "-o", prefix, "--text-key", "body", "--no-progress"]) == 0
        meta = json.loads(capsys.readouterr().out)
        expected = docs["a"] + docs["b"] + docs["c"] + docs["d"]  # sorted file order
        ds = IndexedDataset(prefix)
        assert len(ds) == meta["num_documents"] == 48
        for n, text in enumerate(expected):
            assert ds[n].tolist() == [vocab[w] for w in text.split()], (name, n)
        assert [Path(s).name for s in meta["sources"]] == ["a.jsonl", "b.jsonl.zst", "c.json.zst", "d.parquet"]
        (tmp_path / "out").rename(tmp_path / f"done_{name}")  # keep the outputs out of the next directory scan


def test_wrong_text_field_is_one_line(tok, tmp_path, capsys):
    pq.write_table(pa.table({"content": ["x"]}), tmp_path / "s.parquet")
    assert main(["build", "text", str(tmp_path / "s.parquet"), "-t", tok, "-o", str(tmp_path / "o"),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("no column 'text' (columns: ['content']); set --text-key") and "\n" not in err
    (tmp_path / "x.json.zst").write_bytes(zstandard.ZstdCompressor().compress(b'{"text": "a"}\n[1, 2]\n'))
    assert main(["build", "text", str(tmp_path / "x.json.zst"), "-t", tok, "-o", str(tmp_path / "o"),
                 "--no-progress"]) == 2
    assert "x.json.zst:2: no field 'text'" in capsys.readouterr().err


def test_streaming_never_holds_a_whole_file(tmp_path):
    """~14 MB of text per file; the reader's peak memory stays a small fraction of it (Python allocations via
    tracemalloc for zstd, Arrow's pool for parquet), and a zstd file yields documents before its broken tail."""
    docs = [doc(i, n=200) for i in range(12000)]  # ~1.3 KB each
    raw = jsonl(docs, "text")
    assert len(raw) > 12_000_000
    path = tmp_path / "big.jsonl.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(raw))
    tracemalloc.start()
    n = sum(1 for _ in iter_text_documents(str(path)))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert n == len(docs) and peak < len(raw) / 8, peak

    pq.write_table(pa.table({"content": docs}), tmp_path / "big.parquet", row_group_size=1000)
    pool = pa.default_memory_pool()
    base = pool.max_memory()
    n = 0
    for _ in iter_text_documents(str(tmp_path / "big.parquet"), text_key="content"):
        n += 1
    assert n == len(docs) and pool.max_memory() - base < len(raw) / 4, pool.max_memory() - base

    broken = tmp_path / "broken.jsonl.zst"
    broken.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2] + b"\x00garbage")
    got = []
    with pytest.raises(Exception, match=r"broken.jsonl.zst"):
        for t in iter_text_documents(str(broken)):
            got.append(t)
    assert len(got) > 1000  # documents came out while the file was still being read
