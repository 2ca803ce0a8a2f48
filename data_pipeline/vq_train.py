"""Short VQ-GAN-style training of a (tiny) taming VQGAN, saved in the real ``vqgan.ckpt`` + ``vqgan.yaml`` format.

Liquid never trains its VQGAN (Chameleon's is frozen); this exists so the CPU quickstart has a tokenizer that
actually fits its synthetic images. Losses: L1 + L2 reconstruction, codebook + commitment (the model's own
straight-through ``VectorQuantizer.forward``); no perceptual or adversarial term (both need pretrained nets or far
more steps than a quickstart has). Dead codes are restarted from encoder outputs of the current batch, the usual
remedy for codebook collapse in short runs.

Usage: ``python -m data_pipeline.vq_train --images DIR_OR_TARS --out DIR [--steps N] [--vq chameleon-vqgan-tiny]``.
"""
from __future__ import annotations

import argparse
import glob
import io
import os
import tarfile
import time
from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np
import torch
from PIL import Image

from data_pipeline.vq.checkpoint import save_vqgan
from data_pipeline.vq.model import VQGANConfig, VQModel
from data_pipeline.vq.registry import REGISTRY


@dataclass
class VQTrainConfig:
    steps: int = 300
    batch_size: int = 32
    lr: float = 2e-3
    l1_weight: float = 1.0
    l2_weight: float = 1.0
    vq_weight: float = 1.0
    restart_dead_every: int = 25
    seed: int = 0
    log_every: int = 20


def build_tiny_model(name: str = "chameleon-vqgan-tiny", resolution: Optional[int] = None, seed: int = 0) -> VQModel:
    """The registry's architecture params for ``name`` (randomly initialised), optionally at another resolution."""
    if name not in REGISTRY:
        raise ValueError(f"unknown VQ tokenizer {name!r}; known: {sorted(REGISTRY)}")
    params = dict(REGISTRY[name].params)
    if resolution is not None:
        params["resolution"] = resolution
    torch.manual_seed(seed)
    return VQModel(VQGANConfig(**params))


def load_images_from_tars(paths: Sequence[str], limit: Optional[int] = None) -> np.ndarray:
    """img2dataset-style tars -> [N,3,H,W] float32 in [-1,1]."""
    out: List[np.ndarray] = []
    for path in paths:
        with tarfile.open(path) as tar:
            for member in tar:
                if member.name.rsplit(".", 1)[-1].lower() in ("png", "jpg", "jpeg", "webp"):
                    img = Image.open(io.BytesIO(tar.extractfile(member).read())).convert("RGB")
                    out.append(np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / 127.5 - 1.0)
                    if limit and len(out) >= limit:
                        return np.stack(out)
    if not out:
        raise ValueError(f"no images found in {list(paths)}")
    return np.stack(out)


def train_step(model: VQModel, opt: torch.optim.Optimizer, batch: torch.Tensor, cfg: VQTrainConfig) -> dict:
    recon, vq_loss, idx = model(batch)
    l1 = (recon - batch).abs().mean()
    l2 = ((recon - batch) ** 2).mean()
    loss = cfg.l1_weight * l1 + cfg.l2_weight * l2 + cfg.vq_weight * vq_loss
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
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


def train_vq(images: np.ndarray, model: VQModel, cfg: VQTrainConfig, log=print) -> dict:
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    data = torch.from_numpy(images)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.5, 0.9))
    used = torch.zeros(model.codebook_size, dtype=torch.long)
    history = []
    start = time.time()
    model.train()
    for step in range(1, cfg.steps + 1):
        batch = data[torch.randint(0, data.shape[0], (cfg.batch_size,), generator=gen)]
        stats = train_step(model, opt, batch, cfg)
        used += torch.bincount(stats.pop("indices").flatten(), minlength=model.codebook_size)
        history.append(dict(step=step, **stats))
        if cfg.restart_dead_every and step % cfg.restart_dead_every == 0 and step < cfg.steps * 0.8:
            restart_dead_codes(model, batch, used, gen)
            used.zero_()
        if step % cfg.log_every == 0 or step == cfg.steps:
            log(f"[vq_train] step {step}/{cfg.steps} loss {stats['loss']:.4f} l1 {stats['l1']:.4f} "
                f"({time.time() - start:.1f}s)")
    model.eval()
    return {"history": history, "seconds": time.time() - start}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m data_pipeline.vq_train", description=__doc__)
    p.add_argument("--images", nargs="+", required=True, help="img2dataset-style .tar files or directories of them")
    p.add_argument("--out", required=True, help="directory for vqgan.ckpt + vqgan.yaml")
    p.add_argument("--vq", default="chameleon-vqgan-tiny", help="registry name whose architecture to train")
    p.add_argument("--resolution", type=int, default=None)
    p.add_argument("--steps", type=int, default=VQTrainConfig.steps)
    p.add_argument("--batch-size", type=int, default=VQTrainConfig.batch_size)
    p.add_argument("--lr", type=float, default=VQTrainConfig.lr)
    p.add_argument("--max-images", type=int, default=None)
    args = p.parse_args(argv)
    tars: List[str] = []
    for item in args.images:
        tars.extend(sorted(glob.glob(os.path.join(item, "*.tar"))) if os.path.isdir(item) else [item])
    images = load_images_from_tars(tars, args.max_images)
    model = build_tiny_model(args.vq, args.resolution or images.shape[-1])
    cfg = VQTrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr)
    result = train_vq(images, model, cfg)
    save_vqgan(model, args.out)
    print(f"[vq_train] saved {args.out} after {result['seconds']:.1f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
