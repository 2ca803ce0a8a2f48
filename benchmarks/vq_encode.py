"""VQ encoding throughput: our pipeline (DataLoader decode workers + batched encode + shard writing) against the
one-image-per-call way of the public Liquid code (decode, preprocess, encode one image at a time), same run, same
VQ weights, same images.

Threads: the pipeline runs twice in the same run, with the ``--threads`` default (cores // (workers + 1) in the
encoder and in each decode worker) and with the old setting, torch's default intra-op count (one thread per core)
in the encoder next to busy decode workers; the ratio is the cost of oversubscription. Leave ``OMP_NUM_THREADS``
unset, or the "old" count is that variable instead of torch's default.

Run from the repository root (``PYTHONPATH=.`` unless the project is installed):
CPU (defaults): tiny VQ at 64 px, then the full Chameleon architecture (random weights) at 128 px.
GPU (full size): python benchmarks/vq_encode.py --device cuda --vq chameleon-vqgan --resolution 512 \
    --num-images 4096 --batch-size 64 --num-workers 14 --source-size 640x480 --baseline-images 64
Weights are random unless --vq names a directory with vqgan.ckpt + vqgan.yaml; throughput does not depend on them.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time

import torch

from data_pipeline.encode import EncodeConfig, run_encode
from data_pipeline.preprocess import PreprocessConfig, decode_image, preprocess_image
from data_pipeline.readers import iter_tar
from data_pipeline.testing import image_bytes, write_wds_tar
from data_pipeline.threads import available_cores, default_threads, set_threads
from data_pipeline.vq.registry import REGISTRY, VQTokenizer, build_vq_module, load_vq_tokenizer

TORCH_DEFAULT_THREADS = torch.get_num_threads()
"""Read before anything sets a count: the old, unmanaged setting of the encoder process."""


def make_inputs(d: str, n: int, size, per_tar: int) -> list:
    w, h = size
    jpgs = [image_bytes(w, h, seed=i, fmt="JPEG") for i in range(min(n, 64))]
    paths = []
    for t in range(0, n, per_tar):
        samples = [{"__key__": f"{i:08d}", "jpg": jpgs[i % len(jpgs)], "txt": f"image {i}".encode()}
                   for i in range(t, min(n, t + per_tar))]
        paths.append(write_wds_tar(os.path.join(d, f"in-{t // per_tar:05d}.tar"), samples))
    return paths


def tokenizer_for(vq: str, device: str, dtype):
    if vq in REGISTRY:
        return VQTokenizer(build_vq_module(vq, allow_random=True), vq, device, dtype)
    return load_vq_tokenizer(vq, device=device, dtype=dtype)


def one_per_call(tok, tar_paths, pre: PreprocessConfig, limit: int) -> float:
    """Baseline: serial decode + preprocess + encode of a single image per call."""
    n = 0
    if tok.device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for path in tar_paths:
        for rec in iter_tar(path):
            arr, _ = preprocess_image(decode_image(rec.image_bytes, pre), pre)
            codes = tok.encode(torch.from_numpy(arr)[None].float().div(127.5).sub(1.0))
            codes.cpu()
            n += 1
            if n >= limit:
                return n / (time.perf_counter() - t0)
    return n / (time.perf_counter() - t0)


def preprocess_rate(tar_paths, pre: PreprocessConfig, limit: int) -> float:
    """Host-side cost alone (JPEG decode + resize/crop), images/s on one core: sizes the decode workers of a GPU."""
    n, t0 = 0, time.perf_counter()
    for path in tar_paths:
        for rec in iter_tar(path):
            preprocess_image(decode_image(rec.image_bytes, pre), pre)
            n += 1
            if n >= limit:
                return n / (time.perf_counter() - t0)
    return n / (time.perf_counter() - t0)


def pipeline_rate(args, tok, tars, pre, device, threads: int, out: str) -> float:
    cfg = EncodeConfig(inputs=tars, output_dir=out, vq_tokenizer=tok.name, preprocess=pre,
                       batch_size=args.batch_size, num_workers=args.num_workers, device=device, progress=False,
                       threads=threads)
    t0 = time.perf_counter()
    result = run_encode(cfg, tokenizer=tok)
    wall = time.perf_counter() - t0
    shutil.rmtree(out)
    return result["summary"]["written"] / wall


def run_case(args, vq: str, resolution: int, num_images: int, baseline_images: int) -> dict:
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = getattr(torch, args.dtype) if args.dtype else None
    tok = tokenizer_for(vq, device, dtype)
    pre = PreprocessConfig(resolution=resolution, jpeg_draft=args.jpeg_draft)
    threads = args.threads or default_threads(args.num_workers)
    old_threads = TORCH_DEFAULT_THREADS
    with tempfile.TemporaryDirectory() as d:
        size = tuple(int(v) for v in args.source_size.split("x")) if args.source_size else (resolution * 5 // 4, resolution)
        tars = make_inputs(d, num_images, size, args.per_tar)
        set_threads(threads)
        # warm-up (cudnn autotune, allocator) outside the timed regions
        warm = torch.zeros(min(args.batch_size, 8), 3, resolution, resolution, dtype=torch.uint8)
        tok.encode_uint8(warm)
        tok.encode_uint8(warm[:1])
        host = preprocess_rate(tars, pre, max(baseline_images, 64))
        base = one_per_call(tok, tars, pre, baseline_images)
        ours, old = [], []
        for r in range(args.repeats):  # interleaved, so load changes on a shared box hit both settings alike
            ours.append(pipeline_rate(args, tok, tars, pre, device, threads, os.path.join(d, f"out{r}")))
            if not args.skip_old_threads:
                old.append(pipeline_rate(args, tok, tars, pre, device, old_threads, os.path.join(d, f"old{r}")))
    best, best_old = max(ours), (max(old) if old else None)
    return {"vq": vq, "resolution": resolution, "device": device, "dtype": str(tok.dtype).replace("torch.", ""),
            "grid": list(tok.code_grid(resolution)), "batch_size": args.batch_size, "num_workers": args.num_workers,
            "images": num_images, "baseline_images": baseline_images, "cores": available_cores(),
            "threads": threads, "old_threads": old_threads, "repeats": args.repeats,
            "one_per_call_img_s": round(base, 2), "pipeline_img_s": round(best, 2),
            "speedup": round(best / base, 2), "pipeline_old_threads_img_s": round(best_old, 2) if old else None,
            "threads_ratio": round(best / best_old, 2) if old else None,
            "preprocess_img_s_per_core": round(host, 1), "source_size": list(size)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vq", default=None, help="registry name or checkpoint dir (default: the two CPU cases)")
    p.add_argument("--resolution", type=int, default=None)
    p.add_argument("--num-images", type=int, default=None)
    p.add_argument("--baseline-images", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--num-workers", type=int, default=1)
    p.add_argument("--per-tar", type=int, default=256)
    p.add_argument("--source-size", default=None, help="WxH of the synthetic JPEGs (default 1.25*res x res)")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default=None, choices=[None, "float32", "bfloat16", "float16"])
    p.add_argument("--jpeg-draft", action="store_true")
    p.add_argument("--threads", type=int, default=None,
                   help="threads of the measured pipeline (default: the encode default, cores // (workers + 1))")
    p.add_argument("--repeats", type=int, default=1, help="pipeline runs per setting, interleaved; best is reported")
    p.add_argument("--skip-old-threads", action="store_true", help="do not also run with torch's default threads")
    args = p.parse_args()
    if os.environ.get("OMP_NUM_THREADS"):
        print(f"note: OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} is set, so the 'old' setting is that count, "
              "not torch's default")
    if args.vq:
        cases = [(args.vq, args.resolution or 512, args.num_images or 1024, args.baseline_images or 64)]
    else:
        cases = [("chameleon-vqgan-tiny", 64, 512, 128), ("chameleon-vqgan", 128, 48, 12)]
    for vq, res, n, nb in cases:
        r = run_case(args, vq, res, n, nb)
        print(f"{vq} @ {res}px ({r['device']}, {r['dtype']}, batch {r['batch_size']}, workers {r['num_workers']}): "
              f"one-image-per-call {r['one_per_call_img_s']} img/s, pipeline {r['pipeline_img_s']} img/s, "
              f"ratio {r['speedup']}x; host decode+resize {r['preprocess_img_s_per_core']} img/s/core")
        if r["threads_ratio"] is not None:
            print(f"  threads: default {r['threads']} per process ({r['cores']} cores, {r['num_workers']} workers) "
                  f"{r['pipeline_img_s']} img/s vs old {r['old_threads']} (torch default) "
                  f"{r['pipeline_old_threads_img_s']} img/s: ratio {r['threads_ratio']}x")
        print(json.dumps(r))


if __name__ == "__main__":
    main()
