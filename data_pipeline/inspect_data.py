"""``python -m data_pipeline inspect``: stats of a shard directory or an indexed dataset, and a PNG grid of samples
decoded back through the VQ decoder with their captions (the quickest check that codes and captions line up)."""
from __future__ import annotations

import json
import os
import textwrap
from typing import Dict, List, Optional, Tuple

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import torch
from megatron.core.datasets.indexed_dataset import IndexedDataset

from liquid_train.atomic import atomic_path

from .build import load_hf_tokenizer
from .errors import DataError
from .shards import finished_shards, iter_shard, read_sidecar
from .vq import load_vq_tokenizer


def shard_stats(shards_dir: str, max_code_samples: int = 2000) -> Dict:
    shards = finished_shards(shards_dir)
    if not shards:
        raise DataError(f"{shards_dir}: no finished shards (shard-*.tar + .json); run encode first")
    sides = [read_sidecar(s) for s in shards]
    rejected: Dict[str, int] = {}
    for s in sides:
        for k, v in s["rejected"].items():
            rejected[k] = rejected.get(k, 0) + v
    used, n = set(), 0
    caption_chars = []
    for shard in shards:
        for sample in iter_shard(shard):
            used.update(np.unique(sample["codes"]).tolist())
            caption_chars.append(len(sample["caption"]))
            n += 1
            if n >= max_code_samples:
                break
        if n >= max_code_samples:
            break
    summary_path = os.path.join(shards_dir, "summary.json")
    summary = json.load(open(summary_path)) if os.path.exists(summary_path) else None
    return {"shards": len(shards), "read": sum(s["read"] for s in sides), "written": sum(s["written"] for s in sides),
            "rejected": rejected, "vq_tokenizer": sides[0]["vq_tokenizer"], "distinct_codes_in_sample": len(used),
            "samples_scanned": n, "caption_chars_mean": round(float(np.mean(caption_chars)), 1) if caption_chars else 0,
            "summary_complete": summary.get("complete") if summary else None}


def dataset_stats(prefix: str) -> Dict:
    meta_path = prefix + ".meta.json"
    meta = json.load(open(meta_path)) if os.path.exists(meta_path) else {}
    ds = IndexedDataset(prefix)
    docs = len(ds.document_indices) - 1
    lengths = ds.sequence_lengths
    return {"meta": meta, "documents": docs, "sequences": len(ds), "tokens": int(np.sum(lengths)),
            "sequence_length_mean": round(float(np.mean(lengths)), 2) if len(lengths) else 0}


def _shard_samples(shards_dir: str, n: int) -> List[Tuple[np.ndarray, str]]:
    out = []
    for shard in finished_shards(shards_dir):
        for sample in iter_shard(shard):
            out.append((sample["codes"].astype(np.int64), sample["caption"]))
            if len(out) >= n:
                return out
    return out


def _dataset_samples(prefix: str, n: int) -> Tuple[List[Tuple[np.ndarray, str]], Dict]:
    meta = json.load(open(prefix + ".meta.json"))
    if meta.get("kind") != "pairs":
        raise DataError(f"{prefix}: only 'pairs' datasets hold images (kind={meta.get('kind')!r}); pass -n 0")
    ds = IndexedDataset(prefix)
    tok = load_hf_tokenizer(meta["tokenizer"]) if os.path.isdir(meta.get("tokenizer", "")) else None
    h, w = meta["image_grid"]
    out = []
    for d in range(min(n, len(ds.document_indices) - 1)):
        first = ds.document_indices[d]
        caption_ids, codes = ds[first], ds[first + 1]
        caption = tok.decode(caption_ids.tolist()) if tok else " ".join(map(str, caption_ids[:32]))
        out.append((codes.astype(np.int64).reshape(h, w), caption))
    return out, meta


def render_grid(images: np.ndarray, captions: List[str], out_png: str, cols: int = 4) -> str:
    """images: float [N,3,H,W] in [-1,1]."""
    matplotlib.use("Agg")
    n = len(captions)
    cols = min(cols, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.9 * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        ax.imshow(((images[i].transpose(1, 2, 0) + 1) * 127.5).clip(0, 255).astype(np.uint8))
        ax.set_title("\n".join(textwrap.wrap(captions[i], 34)[:3]), fontsize=8)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return out_png


def inspect_path(path: str, num_samples: int = 0, out_png: Optional[str] = None, vq: Optional[str] = None,
                 device: str = "cpu") -> Dict:
    if os.path.isdir(path):
        report = {"kind": "shards", **shard_stats(path)}
        samples = _shard_samples(path, num_samples) if num_samples else []
        vq_name = vq or report["vq_tokenizer"]
    elif os.path.exists(path + ".idx"):
        report = {"kind": "indexed", **dataset_stats(path)}
        samples, meta = _dataset_samples(path, num_samples) if num_samples else ([], report["meta"])
        vq_name = vq or meta.get("vq_tokenizer")
    else:
        raise DataError(f"{path}: neither a shard directory nor an indexed dataset prefix (<prefix>.idx)")
    if samples:
        tok = load_vq_tokenizer(vq_name, device=device)
        codes = torch.from_numpy(np.stack([c for c, _ in samples]))
        images = tok.decode(codes).cpu().numpy()
        out_png = out_png or (os.path.join(path, "inspect.png") if os.path.isdir(path) else path + ".inspect.png")
        report["grid_png"] = render_grid(images, [c for _, c in samples], out_png)
    return report
