"""Short VQ-GAN-style training of a (tiny) taming VQGAN, saved in the real ``vqgan.ckpt`` + ``vqgan.yaml`` format.

Liquid never trains its VQGAN (Chameleon's is frozen); this exists so the CPU quickstart has a tokenizer that
actually fits its synthetic images. Losses: L1 + L2 reconstruction, codebook + commitment (the model's own
straight-through ``VectorQuantizer.forward``); no perceptual or adversarial term (both need pretrained nets or far
more steps than a quickstart has). Dead codes are restarted from encoder outputs of the current batch, the usual
remedy for codebook collapse in short runs.

Why an autoencoder warm-up and a k-means codebook: from a random start the straight-through VQ pulls every encoder
output toward a near-zero random codebook (the commitment term), the decoder receives no information and a short
run learns only the mean colour (measured on the quickstart scenes: L1 stuck at ~0.46 for 350 steps, every
analysed attribute wrong). So the first ``ae_warmup_steps`` train encoder and decoder without quantisation (L1 falls
to ~0.05 in ~200 steps there), then the codebook starts as k-means centroids of encoder latents of
``kmeans_images`` training images, and the remaining steps train the full VQ from that point.

Images get encode's preprocessing (``preprocess.py``: EXIF orientation, RGB mapping, aspect / size rejections,
short-side LANCZOS resize + centre crop to ``--resolution``, default the architecture's), so a VQ trains on exactly
what it will later encode, photos of any and mixed sizes included; they are held as uint8 (a quarter of float32).
Progress is printed unbuffered (one line per ``--log-every`` steps with the time per step and an estimate of the
rest), so it shows in a redirected log as it happens.

Usage: ``python -m data_pipeline.vq_train --images DIR_OR_TARS --out DIR [--steps N] [--vq chameleon-vqgan-tiny]
[--resolution R] [--schedule constant|constant_with_warmup|cosine] [--grad-clip C]``.
"""
from __future__ import annotations

import argparse
import collections
import functools
import glob
import math
import os
import sys
import tarfile
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image

from data_pipeline.errors import DataError
from data_pipeline.preprocess import PreprocessConfig, Rejected, decode_image, preprocess_image
from data_pipeline.readers import IMAGE_EXTS
from data_pipeline.rgb import to_rgb, upright
from data_pipeline.settings import check_output_dir
from data_pipeline.threads import available_cores, set_threads
from data_pipeline.vq.checkpoint import save_vqgan
from data_pipeline.vq.model import VQGANConfig, VQModel
from data_pipeline.vq.registry import REGISTRY

say = functools.partial(print, flush=True)
"""Console progress, flushed at once: block-buffered into a redirected log it would appear only at the end."""


SCHEDULES = ("constant", "constant_with_warmup", "cosine")


@dataclass
class VQTrainConfig:
    steps: int = 300
    batch_size: int = 32
    lr: float = 1e-3
    betas: tuple = (0.9, 0.99)
    """No adversarial term here, so not the GAN-style (0.5, 0.9): with those the warm-up autoencoder did not learn
    in 200 steps on the quickstart scenes (L1 0.49), with these it reached 0.05."""
    l1_weight: float = 1.0
    l2_weight: float = 1.0
    vq_weight: float = 1.0
    restart_dead_every: int = 25
    seed: int = 0
    log_every: int = 20
    contrast_weight: float = 0.0
    """Extra reconstruction weight on pixels far (> 0.25 in [-1, 1]) from their image's median colour. Sparse
    images (small objects on a flat background, as in the quickstart) otherwise spend a short run on the background:
    unweighted, shapes covering ~3% of the pixels were still missing after 300 steps at L1 0.04."""
    edge_weight: float = 0.0
    """Weight of an L1 loss on the images' horizontal and vertical pixel differences. Per-pixel L1/L2 barely
    separates a 5-pixel square from a circle of the same colour (a few corner pixels), so a blurry blob costs little;
    the difference images are large exactly at edges and corners, where the shapes differ. Off by default: on the
    quickstart scenes weight 1 stayed within run-to-run noise (round trip 0.804 vs 0.787, kind 0.31 vs 0.27) and
    weight 5 took over the loss and lost colour (0.12); docs/quickstart.md."""
    ae_warmup_steps: int = 0
    """Steps (counted in ``steps``) that train encoder + decoder without quantisation before the codebook exists."""
    kmeans_init: bool = True
    """Initialise the codebook by k-means on encoder latents when the VQ phase starts."""
    kmeans_images: int = 256
    kmeans_iters: int = 15
    schedule: str = "constant"
    """One of ``SCHEDULES`` (the Hugging Face names). The last two ramp linearly over ``warmup_fraction`` of each
    phase, restarted when the VQ phase begins (a new objective, as a fine-tune is); ``cosine`` then decays to
    ``min_lr_ratio * lr`` at the phase's end. Constant by default: cosine at lr 1e-3 trained without diverging on
    the quickstart scenes but ended at L1 0.11 vs 0.06 and a round trip of 0.56 vs 0.79 for constant 4e-4
    (docs/quickstart.md)."""
    warmup_fraction: float = 0.05
    min_lr_ratio: float = 0.05
    grad_clip: float = 0.0
    """Max global gradient norm (0: off). Without it the quickstart autoencoder at lr 4e-4 diverged after ~2000
    steps (L1 0.05 -> 0.37, every attribute lost); docs/quickstart.md."""


def lr_at(cfg: VQTrainConfig, step: int) -> float:
    """Learning rate of 1-based ``step``; each phase (autoencoder warm-up, VQ) has its own warm-up and decay."""
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.schedule not in SCHEDULES:
        raise ValueError(f"VQ schedule {cfg.schedule!r}; known: {', '.join(SCHEDULES)}")
    warm = min(cfg.ae_warmup_steps, cfg.steps)
    start, length = (0, warm) if step <= warm else (warm, cfg.steps - warm)
    t = step - start
    ramp = max(1, int(round(cfg.warmup_fraction * length)))
    if t <= ramp:
        return cfg.lr * t / ramp
    if cfg.schedule == "constant_with_warmup":
        return cfg.lr
    progress = (t - ramp) / max(1, length - ramp)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def build_tiny_model(name: str = "chameleon-vqgan-tiny", resolution: Optional[int] = None, seed: int = 0) -> VQModel:
    """The registry's architecture params for ``name`` (randomly initialised), optionally at another resolution."""
    if name not in REGISTRY:
        raise ValueError(f"unknown VQ tokenizer {name!r}; known: {sorted(REGISTRY)}")
    params = dict(REGISTRY[name].params)
    if resolution is not None:
        params["resolution"] = resolution
    torch.manual_seed(seed)
    return VQModel(VQGANConfig(**params))


def _native(img: Image.Image, where: str, size: Optional[Tuple[int, int]]) -> np.ndarray:
    img = to_rgb(upright(img))
    if size is not None and img.size != size:
        raise DataError(f"{where}: {img.size[0]}x{img.size[1]}, but the first image is {size[0]}x{size[1]}; pass "
                        "--resolution to resize and crop every image to one size")
    return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1).copy()


def load_training_images(paths: Sequence[str], resolution: Optional[int] = None, limit: Optional[int] = None,
                         log: Callable[[str], None] = say, log_every: int = 1000) -> Tuple[np.ndarray, Dict]:
    """img2dataset-style tars -> (uint8 [N,3,S,S], rejected counts by reason).

    ``resolution``: encode's preprocessing to that side (rejections as encode makes them); None: images as they
    are, which must then all have one size (the quickstart's synthetic scenes)."""
    pre = PreprocessConfig(resolution=resolution) if resolution else None
    out: List[np.ndarray] = []
    rejected: Dict[str, int] = collections.Counter()
    size = None
    t0 = time.time()
    for path in paths:
        if not os.path.isfile(path):
            raise DataError(f"--images {path}: no such file")
        try:
            tar = tarfile.open(path)
        except (tarfile.TarError, OSError) as e:
            raise DataError(f"--images {path}: not a readable tar ({e})") from None
        with tar:
            for member in tar:
                if not member.isfile() or member.name.rsplit(".", 1)[-1].lower() not in IMAGE_EXTS:
                    continue
                data = tar.extractfile(member).read()
                try:
                    if pre is None:
                        img = decode_image(data, PreprocessConfig())
                        arr = _native(img, f"{path}#{member.name}", size)
                        size = size or (arr.shape[2], arr.shape[1])
                    else:
                        arr, _ = preprocess_image(decode_image(data, pre), pre)
                except Rejected as r:
                    rejected[r.reason] += 1
                    continue
                out.append(arr)
                if len(out) % log_every == 0:
                    log(f"[vq_train] loaded {len(out)} images ({time.time() - t0:.0f}s)")
                if limit and len(out) >= limit:
                    return np.stack(out), dict(rejected)
    if not out:
        raise DataError(f"--images {' '.join(paths)}: no usable images found (rejected: {dict(rejected) or 'none'})")
    return np.stack(out), dict(rejected)


def load_images_from_tars(paths: Sequence[str], limit: Optional[int] = None,
                          resolution: Optional[int] = None) -> np.ndarray:
    """img2dataset-style tars -> [N,3,H,W] float32 in [-1,1] (see :func:`load_training_images`)."""
    images, _ = load_training_images(paths, resolution, limit, log=lambda _: None)
    return images.astype(np.float32) / 127.5 - 1.0


def _pixels(batch: torch.Tensor) -> torch.Tensor:
    """uint8 [0,255] -> float [-1,1]; float batches pass unchanged."""
    return batch.float().div_(127.5).sub_(1.0) if batch.dtype == torch.uint8 else batch


def pixel_weights(batch: torch.Tensor, contrast_weight: float) -> torch.Tensor:
    """[B,1,H,W] weights, mean 1 per image: 1 + ``contrast_weight`` where a pixel differs from the median colour."""
    if contrast_weight <= 0:
        return torch.ones_like(batch[:, :1])
    median = batch.flatten(2).median(dim=2).values[:, :, None, None]
    far = ((batch - median).abs().amax(dim=1, keepdim=True) > 0.25).float()
    w = 1.0 + contrast_weight * far
    return w / w.mean(dim=(2, 3), keepdim=True)


def edge_loss(recon: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
    """Mean L1 between the horizontal and vertical pixel differences of ``recon`` and ``batch``."""
    dx = lambda t: t[..., :, 1:] - t[..., :, :-1]  # noqa: E731
    dy = lambda t: t[..., 1:, :] - t[..., :-1, :]  # noqa: E731
    return (dx(recon) - dx(batch)).abs().mean() + (dy(recon) - dy(batch)).abs().mean()


def reconstruction_losses(recon: torch.Tensor, batch: torch.Tensor, cfg: VQTrainConfig):
    """(L1, L2) reconstruction terms; the edge term, when weighted, is folded into the L1 one."""
    w = pixel_weights(batch, cfg.contrast_weight)
    l1 = (w * (recon - batch).abs()).mean()
    if cfg.edge_weight > 0:
        l1 = l1 + cfg.edge_weight * edge_loss(recon, batch)
    return l1, (w * (recon - batch) ** 2).mean()


def _update(model: VQModel, opt: torch.optim.Optimizer, loss: torch.Tensor, cfg: VQTrainConfig) -> None:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    opt.step()


def train_step(model: VQModel, opt: torch.optim.Optimizer, batch: torch.Tensor, cfg: VQTrainConfig) -> dict:
    recon, vq_loss, idx = model(batch)
    l1, l2 = reconstruction_losses(recon, batch, cfg)
    loss = cfg.l1_weight * l1 + cfg.l2_weight * l2 + cfg.vq_weight * vq_loss
    _update(model, opt, loss, cfg)
    return {"loss": loss.item(), "l1": l1.item(), "l2": l2.item(), "vq": vq_loss.item(), "indices": idx.detach()}


@torch.no_grad()
def restart_dead_codes(model: VQModel, batch: torch.Tensor, used: torch.Tensor, generator: torch.Generator) -> int:
    """Codes unused since the last restart get an encoder latent of ``batch`` (plus tiny noise). Returns count."""
    dead = torch.nonzero(used == 0).flatten()
    if dead.numel() == 0:
        return 0
    z = model.encode_latents(batch).permute(0, 2, 3, 1).reshape(-1, model.quantize.embed_dim)
    pick = torch.randint(0, z.shape[0], (dead.numel(),), generator=generator)
    emb = model.quantize.embedding.weight
    emb.data[dead] = z[pick] + 1e-3 * torch.randn(dead.numel(), emb.shape[1], generator=generator)
    return int(dead.numel())


def autoencoder_step(model: VQModel, opt: torch.optim.Optimizer, batch: torch.Tensor, cfg: VQTrainConfig) -> dict:
    """Warm-up step: reconstruction through encoder and decoder with no quantisation in between."""
    recon = model.decode_latents(model.encode_latents(batch))
    l1, l2 = reconstruction_losses(recon, batch, cfg)
    loss = cfg.l1_weight * l1 + cfg.l2_weight * l2
    _update(model, opt, loss, cfg)
    return {"loss": loss.item(), "l1": l1.item(), "l2": l2.item(), "vq": 0.0}


@torch.no_grad()
def kmeans_codebook(model: VQModel, images: torch.Tensor, iters: int, generator: torch.Generator) -> int:
    """Set the codebook to k-means centroids (Lloyd) of the encoder latents of ``images``; returns codes in use.

    Empty clusters are re-seeded with random latents each iteration, so every code starts on the data.
    """
    z = torch.cat([model.encode_latents(images[i:i + 64]) for i in range(0, len(images), 64)])
    flat = z.permute(0, 2, 3, 1).reshape(-1, model.quantize.embed_dim).float()
    k = model.codebook_size
    centroids = flat[torch.randint(0, flat.shape[0], (k,), generator=generator)].clone()
    assign = torch.zeros(flat.shape[0], dtype=torch.long)
    for _ in range(iters):
        assign = torch.cdist(flat, centroids).argmin(1)
        counts = torch.bincount(assign, minlength=k)
        sums = torch.zeros_like(centroids).index_add_(0, assign, flat)
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled, None]
        empty = torch.nonzero(~filled).flatten()
        if empty.numel():
            centroids[empty] = flat[torch.randint(0, flat.shape[0], (empty.numel(),), generator=generator)]
    model.quantize.embedding.weight.data.copy_(centroids.to(model.quantize.embedding.weight.dtype))
    return int(torch.unique(assign).numel())


def train_vq(images: np.ndarray, model: VQModel, cfg: VQTrainConfig, log=say) -> dict:
    """``images``: [N,3,S,S], uint8 in [0,255] or float in [-1,1]."""
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    data = torch.from_numpy(images)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas))
    used = torch.zeros(model.codebook_size, dtype=torch.long)
    history = []
    start = time.time()
    model.train()
    warmup = min(cfg.ae_warmup_steps, cfg.steps)
    for step in range(1, cfg.steps + 1):
        batch = _pixels(data[torch.randint(0, data.shape[0], (cfg.batch_size,), generator=gen)])
        for group in opt.param_groups:
            group["lr"] = lr_at(cfg, step)
        if step <= warmup:
            stats = autoencoder_step(model, opt, batch, cfg)
        else:
            if step == warmup + 1 and cfg.kmeans_init:
                pick = torch.randperm(data.shape[0], generator=gen)[:cfg.kmeans_images]
                live = kmeans_codebook(model, _pixels(data[pick]), cfg.kmeans_iters, gen)
                log(f"[vq_train] step {step}: codebook from k-means on {len(pick)} images ({live} clusters used)")
            stats = train_step(model, opt, batch, cfg)
            used += torch.bincount(stats.pop("indices").flatten(), minlength=model.codebook_size)
            vq_step = step - warmup
            if cfg.restart_dead_every and vq_step % cfg.restart_dead_every == 0 and step < cfg.steps * 0.8:
                restart_dead_codes(model, batch, used, gen)
                used.zero_()
        history.append(dict(step=step, phase="autoencoder" if step <= warmup else "vq", **stats))
        if step == 1 or step % cfg.log_every == 0 or step == cfg.steps:
            elapsed = time.time() - start
            log(f"[vq_train] step {step}/{cfg.steps} loss {stats['loss']:.4f} l1 {stats['l1']:.4f} "
                f"({elapsed:.1f}s, {elapsed / step:.2f}s/step, ~{elapsed / step * (cfg.steps - step):.0f}s left)")
    model.eval()
    return {"history": history, "seconds": time.time() - start}


def _tar_list(items: Sequence[str]) -> List[str]:
    tars: List[str] = []
    for item in items:
        if os.path.isdir(item):
            found = sorted(glob.glob(os.path.join(item, "*.tar")))
            if not found:
                raise DataError(f"--images {item}: a directory without .tar files")
            tars.extend(found)
        elif os.path.isfile(item):
            tars.append(item)
        else:
            raise DataError(f"--images {item}: no such file or directory")
    return tars


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m data_pipeline.vq_train", description=__doc__)
    p.add_argument("--images", nargs="+", required=True, help="img2dataset-style .tar files or directories of them")
    p.add_argument("--out", required=True, help="directory for vqgan.ckpt + vqgan.yaml")
    p.add_argument("--vq", default="chameleon-vqgan-tiny", help="registry name whose architecture to train")
    p.add_argument("--resolution", type=int, default=None,
                   help="resize + centre-crop every image to this side, as encode does (default: the architecture's)")
    p.add_argument("--steps", type=int, default=VQTrainConfig.steps)
    p.add_argument("--batch-size", type=int, default=VQTrainConfig.batch_size)
    p.add_argument("--lr", type=float, default=VQTrainConfig.lr)
    p.add_argument("--ae-warmup-steps", type=int, default=VQTrainConfig.ae_warmup_steps,
                   help="steps without quantisation first (then a k-means codebook); counted in --steps")
    p.add_argument("--schedule", default=VQTrainConfig.schedule, choices=SCHEDULES,
                   help="learning-rate schedule, per phase (see VQTrainConfig.schedule)")
    p.add_argument("--grad-clip", type=float, default=VQTrainConfig.grad_clip, help="max gradient norm (0: off)")
    p.add_argument("--max-images", type=int, default=None)
    p.add_argument("--log-every", type=int, default=VQTrainConfig.log_every)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: the cores this process has)")
    args = p.parse_args(argv)
    try:
        if args.vq not in REGISTRY:
            raise DataError(f"--vq {args.vq}: unknown architecture; known: {', '.join(sorted(REGISTRY))}")
        resolution = args.resolution or int(REGISTRY[args.vq].params.get("resolution", VQGANConfig.resolution))
        if resolution < 1 or args.steps < 1 or args.batch_size < 1:
            raise DataError("--resolution, --steps and --batch-size must be >= 1")
        check_output_dir(args.out, "--out")  # before the training, not when saving after it
        set_threads(args.threads or available_cores())
        tars = _tar_list(args.images)
        say(f"[vq_train] loading images from {len(tars)} tar(s) at {resolution}px")
        images, rejected = load_training_images(tars, resolution, args.max_images)
    except DataError as e:
        print(f"vq_train: {e}", file=sys.stderr)
        return 2
    say(f"[vq_train] {len(images)} images of {resolution}x{resolution}" + (f", rejected {rejected}" if rejected else ""))
    model = build_tiny_model(args.vq, resolution)
    cfg = VQTrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                        ae_warmup_steps=args.ae_warmup_steps, log_every=args.log_every, schedule=args.schedule,
                        grad_clip=args.grad_clip)
    result = train_vq(images, model, cfg)
    save_vqgan(model, args.out)
    say(f"[vq_train] saved {args.out} after {result['seconds']:.1f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
