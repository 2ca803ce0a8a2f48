"""Mixed-task data benchmarks: the loader (tokens/s, packing efficiency) and, with ``--samples N``, the mixed-task
index at scale (build time, peak memory, memory per rank after mapping).

    python benchmarks/mixture.py [--sequences 1000] [--micro-batch 4] [--mix 30,24,6] [--modes window,document]
    python benchmarks/mixture.py --samples 60000000 [--baseline-samples 1000000] [--ranks 2]

``--samples N`` (Liquid-7B scale at N = 60M: 30M text windows, 24M T2I, 6M I2T) writes synthetic indexed datasets
of the paper's shape (index files only; the token files are sparse, nothing reads tokens): three text sources
(15M/12M/3M documents, log-normal lengths, mean ~2200 tokens, weights 15:12:3) and two pair sets (20M and 10M
pairs, 1024 codes, captions of 8-80 tokens) that T2I and I2T share, weights 2:1. Then, each in a fresh process
(the kernels' compilation, once per machine, is timed first with an empty numba cache): the build (`build_datasets`, index missing), its wall time and
peak RSS; ``--ranks`` processes that map the built index (`build_datasets`, index present) and their RSS; and
today's path (`liquid_train.data.reference.build_train_index`: every rank blends, packs and holds the whole stream
in pure Python) on ``--baseline-samples`` samples of the same mix, over data of the same shape scaled down by the
same factor, extrapolated linearly to N.

Data: synthetic `pairs` (32x32 = 1024 codes, captions of 8-80 tokens) and `text` (log-normal document lengths, median
~1300 tokens, mean ~2200 like DCLM-scale documents) written in the real indexed format, seq_length 2048. For each
``text_sample`` mode the script builds the packed stream once and prints:

- tokens/s of one loader process (``num_workers=0``, one torch thread) with and without the dense ``[b,1,s,s]``
  mask (the trainer builds that mask on its device from ``segment_ids``; TE's THD path needs only ``cu_seqlens``),
  against the target of 10x the ~90k tokens/s an 8xH100 node consumes at 7B;
- the useful-token fraction of the packed rows, and of pad-to-longest micro-batches of the same stream samples in
  stream order (one sample a row, the public code's layout), and the bound no packer can beat on that stream
  (two image samples never share a sequence).
"""
import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
from megatron.core.datasets.indexed_dataset import _INDEX_HEADER, DType
from transformers import AutoTokenizer

from liquid_train.data import DataConfig, build_data_loader, build_datasets, reference
from liquid_train.data.builder import index_plan
from liquid_train.data.index import build, load
from liquid_train.data.mixture import exact_blending_indices
from liquid_train.data.packing import build_pack_index
from liquid_train.data.testing import make_tiny_tokenizer, tiny_vocab, write_indexed
from liquid_train.vocab import TASK_TEXT, default_test_vocab

NODE_TOKENS_PER_S = 90_000  # 8xH100 at 7B (docs/benchmarks.md); the target is 10x this
TARGET = 10 * NODE_TOKENS_PER_S


def write_data(directory: str, text_log_mean: float):
    rng = np.random.default_rng(0)
    tok = make_tiny_tokenizer(os.path.join(directory, "tok"), extra_words=1000)
    words = np.arange(4, len(tok))
    pairs = [[rng.choice(words, rng.integers(8, 81)), rng.integers(0, 8192, 1024)] for _ in range(3000)]
    texts = [[rng.choice(words, int(min(20000, max(5, rng.lognormal(text_log_mean, 1.0)))))] for _ in range(3000)]
    pp = write_indexed(os.path.join(directory, "pairs"), pairs, "pairs")
    tp = write_indexed(os.path.join(directory, "text"), texts, "text")
    vocab = default_test_vocab(base_vocab_size=len(tok), num_image_tokens=8192, bos_id=1, eos_id=2, pad_id=0)
    return tok, vocab, pp, tp


def loader_tokens_per_s(train, micro_batch: int, repeats: int = 1) -> float:
    """Tokens/s of the loader (THD micro-batches with PackedSeqParams, as the trainer consumes them)."""
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        n_tokens = 0
        for batch in build_data_loader(train, 0, micro_batch, num_workers=0):
            n_tokens += batch["tokens"].numel()
        best = max(best, n_tokens / (time.perf_counter() - t0))
    return best


def efficiencies(train, micro_batch: int, seq_length: int):
    """(packed, pad-to-longest, bound) useful-token fractions over the samples the packed rows hold."""
    idx = train.index
    used = np.unique(idx.sample)
    lengths = train.stream_footprints[used]
    tasks = train.stream_tasks[used]
    padded = sum(len(c) * c.max() for c in np.array_split(lengths, np.arange(micro_batch, len(lengths), micro_batch)))
    images = tasks != TASK_TEXT
    n_images = int(images.sum()) if images.any() and lengths[images].min() > seq_length // 2 else 0
    bound = lengths.sum() / (max(n_images, -(-lengths.sum() // seq_length)) * seq_length)
    return train.packing_efficiency(), lengths.sum() / padded, min(1.0, bound)


# --- the index at scale (--samples N) ----------------------------------------------------------------------------
TEXT_SOURCES = (("dclm", 15, 15), ("slimpajama", 12, 12), ("starcoder", 3, 3))  # name, M documents, weight
PAIR_SOURCES = (("pairs_a", 20, 2), ("pairs_b", 10, 1))  # name, M pairs, weight (T2I and I2T alike)
MIX = {"text": 30, "t2i": 24, "i2t": 6}


def write_synthetic_idx(prefix: str, sequence_lengths: np.ndarray, per_document: int) -> None:
    """A megatron ``.idx`` (int32 tokens) written directly, and a sparse ``.bin`` of the matching size."""
    n = len(sequence_lengths)
    with open(prefix + ".idx", "wb") as f:
        f.write(_INDEX_HEADER)
        f.write(struct.pack("<Q", 1))
        f.write(struct.pack("<B", DType.code_from_dtype(np.int32)))
        f.write(struct.pack("<Q", n))
        f.write(struct.pack("<Q", n // per_document + 1))
        f.write(sequence_lengths.astype(np.int32).tobytes())
        carry = 0
        for lo in range(0, n, 1 << 22):
            chunk = sequence_lengths[lo:lo + (1 << 22)].astype(np.int64) * 4
            pointers = carry + np.cumsum(chunk) - chunk
            carry = int(pointers[-1] + chunk[-1])
            f.write(pointers.tobytes())
        f.write((np.arange(n // per_document + 1, dtype=np.int64) * per_document).tobytes())
    with open(prefix + ".bin", "wb") as f:
        f.truncate(int(sequence_lengths.sum(dtype=np.int64)) * 4)


def write_scale_data(directory: str, scale: float) -> dict:
    rng = np.random.default_rng(0)
    tok_dir = os.path.join(directory, "tok")
    make_tiny_tokenizer(tok_dir, extra_words=1000)
    paths = {"text": [], "pairs": []}
    for name, millions, weight in TEXT_SOURCES:
        n = max(1000, int(millions * 1e6 * scale))
        lengths = np.clip(rng.lognormal(7.2, 1.0, n), 5, 20000).astype(np.int32)
        write_synthetic_idx(os.path.join(directory, name), lengths, 1)
        paths["text"].append({"path": os.path.join(directory, name), "weight": weight, "docs": n,
                              "positions": int(lengths.sum(dtype=np.int64)) + n})
    for name, millions, weight in PAIR_SOURCES:
        n = max(1000, int(millions * 1e6 * scale))
        lengths = np.empty(2 * n, dtype=np.int32)
        lengths[0::2] = rng.integers(8, 81, n)
        lengths[1::2] = 1024
        write_synthetic_idx(os.path.join(directory, name), lengths, 2)
        paths["pairs"].append({"path": os.path.join(directory, name), "weight": weight, "docs": n})
    return {"tok": tok_dir, "paths": paths}


def scale_config(data: dict, cache_dir: str, one_source: bool = False) -> DataConfig:
    text = [{"path": p["path"], "weight": p["weight"]} for p in data["paths"]["text"]]
    pairs = [{"path": p["path"], "weight": p["weight"]} for p in data["paths"]["pairs"]]
    if one_source:  # today's path takes one dataset per task
        return DataConfig(text_path=text[0]["path"], pairs_path=pairs[0]["path"], mixture=dict(MIX),
                          seq_length=2048, tokenizer=data["tok"], cache_dir=cache_dir)
    return DataConfig(sources={"text": text, "t2i": pairs, "i2t": pairs}, mixture=dict(MIX), seq_length=2048,
                      tokenizer=data["tok"], cache_dir=cache_dir)


def sequences_for(samples: int) -> int:
    """Packed sequences whose stream is about ``samples`` long (the builder sizes the stream from the mean
    footprint: text windows 2048, image samples ~1080 positions at this mix)."""
    mean_footprint = (30 * 2048 + 24 * 1080 + 6 * 1080) / 60
    return max(1, int((samples - 64) * 0.95 * mean_footprint / 2048))


def _rss_mib() -> dict:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS", "RssAnon", "RssFile", "VmHWM")):
                key, value = line.split(":")
                out[key] = int(value.split()[0]) / 1024
    return out


def _phase(args) -> None:
    """One measured step in a fresh process; prints one JSON line."""
    torch.set_num_threads(1)

    with open(args.phase_data) as f:
        data = json.load(f)

    tok = AutoTokenizer.from_pretrained(data["tok"])
    vocab = tiny_vocab(tok, num_image_tokens=8192)

    with open("/proc/self/clear_refs", "w") as f:  # reset VmHWM: the peak below is this step's, not the imports'
        f.write("5")
    before = _rss_mib()
    t0 = time.perf_counter()
    if args.phase == "compile":  # numba compiles (or loads) the kernels once per process

        exact_blending_indices([1.0, 2.0], 10)
        build_pack_index(np.array([3, 5, 9]), 8, 2, splittable=np.array([True, False, True]))
        result = {}
    elif args.phase == "baseline":
        cfg = scale_config(data, args.phase_cache, one_source=True)
        di, _, footprints, index = reference.build_train_index(cfg, sequences_for(args.phase_samples), vocab, tok)
        result = {"samples": len(di), "sequences": len(index)}
    else:  # build (index missing) or map (index present): what a rank runs before step 1
        cfg = scale_config(data, args.phase_cache)
        num = sequences_for(args.phase_samples)
        if args.phase == "build":
            plan, _ = index_plan(cfg, num, vocab, tok)
            assert load(plan) is None
            build(plan, progress=lambda line: print(line, file=sys.stderr, flush=True))
        train, valid = build_datasets(cfg, num, vocab=vocab, tokenizer=tok)
        result = {"sequences": len(train), "samples": len(train.stream), "built_here": train.index_built_here,
                  "report": {k: v for k, v in train.report(len(train)).items() if k.startswith("samples/")}}
        if args.phase == "map":
            result["mapped_rss"] = _rss_mib()
            batch = next(iter(build_data_loader(train, len(train) // 2, 4)))
            result["batch_tokens"] = int(batch["tokens"].numel())
    after = _rss_mib()
    result.update(seconds=time.perf_counter() - t0, rss_before=before, rss_after=after, peak_rss_mib=after["VmHWM"])
    print("RESULT " + json.dumps(result), flush=True)


def _run_phase(phase: str, data_file: str, cache: str, samples: int, env: dict) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--phase", phase, "--phase-data", data_file,
           "--phase-cache", cache, "--phase-samples", str(samples)]
    out = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(next(line for line in out.stdout.splitlines() if line.startswith("RESULT "))[7:])


def scale_benchmark(args) -> None:
    d = tempfile.mkdtemp(prefix="mixindex-", dir=args.workdir)
    try:
        t0 = time.perf_counter()
        data = write_scale_data(d, args.samples / 60e6)
        data_file = os.path.join(d, "data.json")
        with open(data_file, "w") as f:
            json.dump(data, f)
        print(f"synthetic data for {args.samples:,} samples written in {time.perf_counter() - t0:.0f} s: text "
              f"{'/'.join(str(p['docs']) for p in data['paths']['text'])} documents, pairs "
              f"{'/'.join(str(p['docs']) for p in data['paths']['pairs'])}", flush=True)
        env = dict(os.environ, OMP_NUM_THREADS="1", NUMBA_CACHE_DIR=os.path.join(d, "numba"),
                   PYTHONWARNINGS="ignore")
        compile_ = _run_phase("compile", data_file, os.path.join(d, "cache"), 0, env)  # empty numba cache
        build = _run_phase("build", data_file, os.path.join(d, "cache"), args.samples, env)
        ranks = [_run_phase("map", data_file, os.path.join(d, "cache"), args.samples, env)
                 for _ in range(args.ranks)]
        # today's path on the same mix over data scaled down with N (documents too: its probes read every one)
        base_dir = os.path.join(d, "baseline")
        os.makedirs(base_dir)
        base_file = os.path.join(base_dir, "data.json")
        with open(base_file, "w") as f:
            json.dump(write_scale_data(base_dir, args.baseline_samples / 60e6), f)
        base = _run_phase("baseline", base_file, os.path.join(base_dir, "cache"), args.baseline_samples, env)
        mib = lambda r: r["peak_rss_mib"] - r["rss_before"]["VmRSS"]  # noqa: E731
        held = lambda r: r["rss_after"]["VmRSS"] - r["rss_before"]["VmRSS"]  # noqa: E731  (the stream it keeps)
        scale = build["samples"] / base["samples"]
        base_s, base_mib, base_peak = base["seconds"] * scale, held(base) * scale, mib(base) * scale
        per_rank = max(r["mapped_rss"]["VmRSS"] - r["rss_before"]["VmRSS"] for r in ranks)
        print(f"machine: {os.cpu_count()}-core CPU, load average {os.getloadavg()[0]:.1f} at the end, 1 torch "
              f"thread a process; compiling the kernels (once per machine, then cached): {compile_['seconds']:.1f} s")
        print(f"stream: {build['samples']:,} samples -> {build['sequences']:,} packed sequences; "
              + ", ".join(f"{k[8:]} {v:,}" for k, v in build["report"].items() if k.count("/") == 1))
        print("| | samples | wall s | peak RSS MiB (process) | peak RSS MiB over imports | RSS MiB per rank "
              "after mapping, over imports (anon/file) |")
        print("|---|---|---|---|---|---|")
        print(f"| index build (rank 0 or the CLI) | {build['samples']:,} | {build['seconds']:.1f} | "
              f"{build['peak_rss_mib']:.0f} | {mib(build):.0f} | |")
        for i, r in enumerate(ranks):
            after, before = r["mapped_rss"], r["rss_before"]
            print(f"| rank {i + 1} maps it | {r['samples']:,} | {r['seconds']:.2f} | {r['peak_rss_mib']:.0f} | "
                  f"{mib(r):.0f} | {after['VmRSS'] - before['VmRSS']:.1f} "
                  f"({after['RssAnon'] - before['RssAnon']:.1f}/{after['RssFile'] - before['RssFile']:.1f}) |")
        print(f"| today's path (every rank), measured | {base['samples']:,} | {base['seconds']:.1f} | "
              f"{base['peak_rss_mib']:.0f} | {mib(base):.0f} | {held(base):.0f} held after the build |")
        print(f"| today's path, extrapolated x{scale:.0f} | {build['samples']:,} | {base_s:,.0f} | | "
              f"{base_peak:,.0f} | {base_mib:,.0f} held |")
        print(f"ratios at {build['samples']:,} samples: the build is {base_s / build['seconds']:.0f}x faster than "
              f"today's per-rank build; a rank holds {base_mib / max(1.0, per_rank):,.0f}x less")
        print(f"targets: build <= 60 s: {'met' if build['seconds'] <= 60 else 'NOT met'} "
              f"({build['seconds'] + compile_['seconds']:.1f} s with the one-time compile); peak <= 2 GiB: "
              f"{'met' if build['peak_rss_mib'] <= 2048 else 'NOT met'} (whole process); <= 100 MiB per rank "
              f"after mapping: {'met' if per_rank <= 100 else 'NOT met'}")
    finally:
        shutil.rmtree(d, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sequences", type=int, default=1000)
    ap.add_argument("--micro-batch", type=int, default=4)
    ap.add_argument("--seq-length", type=int, default=2048)
    ap.add_argument("--pack-window", type=int, default=8)
    ap.add_argument("--text-chunk", type=int, default=None, help="DataConfig.text_chunk_length")
    ap.add_argument("--mix", default="30,24,6", help="text,t2i,i2t sample weights")
    ap.add_argument("--modes", default="window,document", help="DataConfig.text_sample values to compare")
    ap.add_argument("--text-log-mean", type=float, default=7.2, help="log-normal mu of text document lengths")
    ap.add_argument("--samples", type=int, default=None, help="benchmark the mixed-task index at this many samples")
    ap.add_argument("--baseline-samples", type=int, default=1_000_000, help="today's path is measured at this N")
    ap.add_argument("--ranks", type=int, default=2, help="processes that map the built index")
    ap.add_argument("--workdir", default=None, help="where the synthetic data and the index go (needs ~6 GB at 60M)")
    ap.add_argument("--phase", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--phase-data", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--phase-cache", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--phase-samples", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.phase:
        return _phase(args)
    if args.samples:
        return scale_benchmark(args)
    d = tempfile.mkdtemp(prefix="mixbench-")
    tok, vocab, pp, tp = write_data(d, args.text_log_mean)
    mixture = dict(zip(("text", "t2i", "i2t"), map(float, args.mix.split(","))))
    print(f"machine: {os.cpu_count()}-core CPU, torch threads 1, seq_length {args.seq_length}, micro-batch "
          f"{args.micro_batch}, mix text:t2i:i2t {args.mix}, pack_window {args.pack_window}")
    print("| text_sample | build s | loader tokens/s | packed useful | pad-to-longest useful | packed / pad | bound | "
          "samples (text/t2i/i2t) |")
    print("|---|---|---|---|---|---|---|---|")
    for mode in args.modes.split(","):
        cfg = DataConfig(pairs_path=pp, text_path=tp, seq_length=args.seq_length, mixture=mixture, text_sample=mode,
                         pack_window=args.pack_window, text_chunk_length=args.text_chunk,
                         cache_dir=os.path.join(d, f"cache-{mode}"))
        t0 = time.perf_counter()
        train, _ = build_datasets(cfg, args.sequences, vocab=vocab, tokenizer=tok)
        build_s = time.perf_counter() - t0
        fast = loader_tokens_per_s(train, args.micro_batch, repeats=2)
        packed, pad, bound = efficiencies(train, args.micro_batch, args.seq_length)
        counts = train.task_counts(len(train))
        print(f"| {mode} | {build_s:.2f} | {fast:,.0f} ({fast / TARGET:.2f}x target) | {packed:.4f} | {pad:.4f} | "
              f"{packed / pad:.2f}x | {bound:.4f} | "
              f"{'/'.join(str(int(c)) for c in counts)} |")


if __name__ == "__main__":
    main()
