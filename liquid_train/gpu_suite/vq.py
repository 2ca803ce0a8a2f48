"""VQ section: encode throughput of the full Chameleon VQGAN (random weights: speed does not depend on them) at
512 px, and the host decode rate that has to feed it.

* Batched: ``VQTokenizer.encode_uint8`` (bf16 + channels_last on GPU, the encoder's defaults) on uint8 batches of
  1, 16, 64 and 128 images from pinned host memory, codes copied back to the host, as the encode pipeline does.
* Baseline, same run, same weights: one image per call in fp32, NCHW: how the public Liquid code tokenises.
* Host: the encode pipeline's own decode workers (``data_pipeline.encode.UnitBatches`` in a DataLoader, one thread
  each) on synthetic 640x480 JPEGs -> 512 px crops, images/s for N workers.

Target: at least 500 images/s on one H100 at the best batch size. Also reported: how many codes the bf16 batched
path shares with the fp32 baseline on the same images (random weights put many codes near ties, so this is a
sanity figure, not an exactness claim; ``tests/test_vq_gpu.py`` checks exactness on a calibrated codebook).
"""
from __future__ import annotations

import copy
import math
import os
import time
from typing import Dict, Sequence

import torch
from torch.utils.data import DataLoader

from data_pipeline.encode import UnitBatches
from data_pipeline.preprocess import PreprocessConfig
from data_pipeline.readers import plan_units
from data_pipeline.testing import image_bytes, write_wds_tar
from data_pipeline.threads import WorkerThreads, available_cores
from data_pipeline.vq.registry import VQTokenizer, build_vq_module
from liquid_train.gpu_suite.context import Context, check, free_memory, part, sync, timed

TARGET_IMG_S = 500.0


def encode_rate(ctx: Context, tok: VQTokenizer, images: torch.Tensor, batch: int, min_images: int) -> float:
    """Images/s of ``tok`` at ``batch`` images per call (one warm-up call first: cudnn picks its kernels)."""
    x = images[:batch]
    tok.encode_uint8(x).cpu()
    calls = max(2, math.ceil(min_images / batch))
    with timed(ctx) as t:
        for _ in range(calls):
            tok.encode_uint8(x).cpu()
    return batch * calls / t["s"]


def one_per_call(ctx: Context, tok: VQTokenizer, images: torch.Tensor, n: int) -> Dict:
    tok.encode_uint8(images[:1]).cpu()
    codes = []
    with timed(ctx) as t:
        for i in range(n):
            codes.append(tok.encode_uint8(images[i:i + 1]).cpu())
    return {"img_s": n / t["s"], "codes": torch.cat(codes)}


def host_decode_rates(ctx: Context, workers: Sequence[int], resolution: int, source: tuple, per_worker: int,
                      vq_name: str) -> Dict[int, float]:
    """Images/s of the encode pipeline's decode workers alone (the pipeline's DataLoader, default start method),
    for each worker count; every worker gets two work units."""
    jpgs = [image_bytes(source[0], source[1], seed=i, fmt="JPEG") for i in range(16)]
    pre = PreprocessConfig(resolution=resolution)
    rates = {}
    for n in workers:
        d = os.path.join(ctx.work_dir, f"vq-decode-{n}")
        os.makedirs(d, exist_ok=True)
        per_tar = max(1, per_worker // 2)
        paths = [write_wds_tar(os.path.join(d, f"in-{t:04d}.tar"),
                               [{"__key__": f"{t:04d}{i:05d}", "jpg": jpgs[(t + i) % len(jpgs)], "txt": b"image"}
                                for i in range(per_tar)]) for t in range(2 * n)]
        dataset = UnitBatches(plan_units(paths), pre, batch_size=32, vq_name=vq_name)
        loader = DataLoader(dataset, batch_size=None, num_workers=n, worker_init_fn=WorkerThreads(1))
        count, t0 = 0, None
        for batch in loader:  # timed from the first batch on: worker start-up is not decode throughput
            if t0 is None:
                t0 = time.perf_counter()
            else:
                count += len(batch["keys"])
        rates[n] = count / (time.perf_counter() - t0)
    return rates


def run(ctx: Context) -> Dict:
    if ctx.dry_run:
        name, res, batches, min_images, baseline_n = "chameleon-vqgan-tiny", 64, (1, 4), 8, 4
        workers, source, per_worker = (1, 2), (80, 64), 16
    else:
        name, res, batches, min_images, baseline_n = "chameleon-vqgan", 512, (1, 16, 64, 128), 384, 32
        cores = available_cores()
        workers = tuple(sorted({1, min(4, cores), min(8, cores), max(1, cores - 2)}))
        source, per_worker = (640, 480), 96
    if ctx.cuda:
        torch.backends.cudnn.benchmark = True  # as the encode pipeline sets it
    module = build_vq_module(name, allow_random=True)
    fast = VQTokenizer(copy.deepcopy(module), name, ctx.device)
    base = VQTokenizer(copy.deepcopy(module), name, ctx.device, dtype=torch.float32, channels_last=False,
                       micro_batch=1)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (max(batches), 3, res, res), dtype=torch.uint8, generator=g)
    if ctx.cuda:
        images = images.pin_memory()
    ctx.say(f"vq: {name} at {res} px, batches {list(batches)}")
    rates = {b: encode_rate(ctx, fast, images, b, min_images) for b in batches}
    baseline = one_per_call(ctx, base, images, min(baseline_n, images.shape[0]))
    n = baseline["codes"].shape[0]
    agree = float((fast.encode_uint8(images[:n]).cpu() == baseline["codes"]).float().mean())
    sync(ctx)
    del fast, base, module, images
    free_memory(ctx)
    ctx.say(f"vq: host decode with {list(workers)} workers")
    decode = part(ctx, "vq host decode", lambda: {"img_s_by_workers": {str(k): v for k, v in host_decode_rates(
        ctx, workers, res, source, per_worker, name).items()}})
    best = max(rates, key=rates.get)
    out = {"vq": name, "resolution": res, "dtype": "bfloat16" if ctx.cuda else "float32",
           "channels_last": ctx.cuda, "img_s_by_batch": {str(b): r for b, r in rates.items()},
           "one_per_call_fp32_img_s": baseline["img_s"], "best_batch": best,
           "best_over_one_per_call": rates[best] / baseline["img_s"],
           "best_over_batch_1": rates[best] / rates[batches[0]], "codes_agree_with_fp32": agree,
           "host_decode": decode,
           "host_source": f"{source[0]}x{source[1]} JPEG -> {res} px"}
    out["checks"] = {"target": check(TARGET_IMG_S / rates[best], 1.0,
                                     f"{TARGET_IMG_S:.0f} img/s target / best img/s (<= 1 meets it)")}
    return out
