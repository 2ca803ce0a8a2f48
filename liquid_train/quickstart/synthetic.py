"""Synthetic image-text pairs whose captions determine the image, plus a small templated text corpus.

Pairs are written exactly as img2dataset writes them (webdataset tars of ``{key}.png``, ``{key}.txt``,
``{key}.json``), so ``python -m data_pipeline encode`` reads them through its ordinary reader; the JSON carries
the scene attributes so evaluations know the truth without re-parsing captions.
"""
from __future__ import annotations

import io
import json
import os
import random
import tarfile
import time
from dataclasses import dataclass
from typing import Iterator, List, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

from liquid_train.atomic import atomic_path, atomic_write_text
from liquid_train.quickstart.scene import (BACKGROUNDS, COLOURS, COUNTS, GRID, KINDS, POSITIONS, Scene, all_scenes,
                                           caption)


@dataclass
class SyntheticConfig:
    num_pairs: int = 3000
    """Image-text pairs for training (the held-out evaluation scenes are drawn separately)."""
    cell_size: int = 16
    """Pixels per lattice cell; the image is ``GRID * cell_size`` square. Set to the VQ downsampling factor."""
    shard_size: int = 1000
    num_text_docs: int = 3000
    seed: int = 0

    @property
    def image_size(self) -> int:
        return GRID * self.cell_size


def render(scene: Scene, cell_size: int, rng: random.Random) -> Image.Image:
    """Draw ``scene``; a shape fills ~60-75% of its cell, jittered by a pixel or two, never touching a neighbour."""
    size = GRID * cell_size
    img = Image.new("RGB", (size, size), BACKGROUNDS[scene.background])
    draw = ImageDraw.Draw(img)
    colour = COLOURS[scene.colour]
    max_jitter = max(1, cell_size // 16)
    for row, col in scene.cells():
        half = cell_size * rng.uniform(0.30, 0.37)
        cx = (col + 0.5) * cell_size + rng.randint(-max_jitter, max_jitter)
        cy = (row + 0.5) * cell_size + rng.randint(-max_jitter, max_jitter)
        box = [cx - half, cy - half, cx + half - 1, cy + half - 1]
        if scene.kind == "circle":
            draw.ellipse(box, fill=colour)
        elif scene.kind == "square":
            # A square of equal area reads differently from a circle mainly by its corners; shrink it a little so
            # it does not dominate the cell.
            s = half * 0.9
            draw.rectangle([cx - s, cy - s, cx + s - 1, cy + s - 1], fill=colour)
        else:
            draw.polygon([(cx, cy - half), (cx + half, cy + half - 1), (cx - half, cy + half - 1)], fill=colour)
    return img


def sample_scenes(n: int, seed: int) -> List[Scene]:
    """``n`` scenes, cycling through a seeded permutation of all scenes so every combination appears evenly."""
    rng = random.Random(seed)
    pool = all_scenes()
    out: List[Scene] = []
    while len(out) < n:
        order = pool[:]
        rng.shuffle(order)
        out.extend(order)
    return out[:n]


def eval_scenes(n: int, seed: int = 12345) -> List[Scene]:
    """Fixed evaluation prompts: a seeded draw, independent of the training stream's seed."""
    rng = random.Random(seed)
    pool = all_scenes()
    return [pool[i] for i in rng.sample(range(len(pool)), n)]


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def iter_pairs(cfg: SyntheticConfig) -> Iterator[Tuple[str, Image.Image, str, dict]]:
    rng = random.Random(cfg.seed + 1)
    for i, scene in enumerate(sample_scenes(cfg.num_pairs, cfg.seed)):
        yield f"{i:09d}", render(scene, cfg.cell_size, rng), caption(scene), scene.to_dict()


def write_pairs(cfg: SyntheticConfig, out_dir: str) -> List[str]:
    """Write img2dataset-style shards ``00000.tar``...; each shard atomically (temp + rename). Returns paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths: List[str] = []
    pairs = list(iter_pairs(cfg))
    for shard_idx in range(0, len(pairs), cfg.shard_size):
        path = os.path.join(out_dir, f"{shard_idx // cfg.shard_size:05d}.tar")
        paths.append(path)
        if os.path.exists(path):
            continue
        with atomic_path(path) as tmp, tarfile.open(tmp, "w") as tar:
            for key, img, text, meta in pairs[shard_idx: shard_idx + cfg.shard_size]:
                meta = dict(meta, caption=text, width=img.width, height=img.height)
                for ext, payload in (("png", png_bytes(img)), ("txt", text.encode()),
                                     ("json", json.dumps(meta).encode())):
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(payload)
                    info.mtime = int(time.time())
                    tar.addfile(info, io.BytesIO(payload))
    return paths


# --- text corpus ------------------------------------------------------------------------------------------------
_CORNERS = {"circle": "no corners", "square": "four corners", "triangle": "three corners"}
_RELATIONS = ("left of", "right of", "above", "below", "next to")


def _sentence(rng: random.Random) -> str:
    kind, kind2 = rng.choice(KINDS), rng.choice(KINDS)
    colour, colour2 = rng.sample(list(COLOURS), 2)
    form = rng.randrange(5)
    if form == 0:
        return f"the {colour} {kind} is {rng.choice(_RELATIONS)} the {colour2} {kind2}."
    if form == 1:
        n = rng.choice(COUNTS)
        word = {1: "is one", 2: "are two", 3: "are three"}[n]
        return f"there {word} {colour} {kind}{'s' if n > 1 else ''} on the {rng.choice(list(BACKGROUNDS))} background."
    if form == 2:
        return f"a {kind} has {_CORNERS[kind]}."
    if form == 3:
        return f"the {kind} at the {rng.choice(POSITIONS)} is {colour}."
    return f"a {colour} {kind} and a {colour2} {kind2} make a picture."


def text_documents(n: int, seed: int) -> List[str]:
    rng = random.Random(seed)
    return [" ".join(_sentence(rng) for _ in range(rng.randint(4, 10))) for _ in range(n)]


def write_text_corpus(cfg: SyntheticConfig, path: str) -> str:
    """``{"text": ...}`` per line (the data pipeline's jsonl text schema); atomic."""
    if os.path.exists(path):
        return path
    return atomic_write_text(path, "".join(json.dumps({"text": doc}) + "\n"
                                           for doc in text_documents(cfg.num_text_docs, cfg.seed + 2)))


def pil_to_pixels(images: Sequence[Image.Image]) -> np.ndarray:
    """[B,3,H,W] float32 in [-1, 1] (the VQ tokenizer's input convention: x/255*2-1)."""
    arr = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) for im in images])
    return (arr.transpose(0, 3, 1, 2) / 255.0) * 2.0 - 1.0


def pixels_to_uint8(pixels: np.ndarray) -> np.ndarray:
    """[B,3,H,W] in [-1,1] -> [B,H,W,3] uint8."""
    arr = (np.clip(np.asarray(pixels, dtype=np.float32), -1, 1) + 1.0) * 127.5
    return np.rint(arr).astype(np.uint8).transpose(0, 2, 3, 1)
