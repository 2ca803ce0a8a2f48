"""Score an exported quickstart model on the synthetic world: T2I by the pixel analyser, I2T by the caption parser.

Why this is a fair measure: captions determine scenes exactly (``scene.parse_caption`` inverts ``scene.caption``)
and the analyser reads every attribute back from clean renders without error (tested on all 675 scenes), so an
attribute scored wrong is the model's error, not the scorer's. The evaluation scenes are a fixed seeded draw
(``synthetic.eval_scenes``); the world has only 675 distinct scenes, so a 3000-pair training set contains them
all: this measures whether the model learned the caption <-> image mapping, not generalisation to unseen
combinations. Sampling uses the public Liquid defaults (CFG 7.0, temperature 0.99, top-k 4096 -> the whole
codebook here, top-p 0.96) for T2I at three guidance scales (1, 3 and the default 7) and greedy decoding for I2T;
nothing is tuned toward an answer.
"""
from __future__ import annotations

import collections
import json
import os
import random
from dataclasses import dataclass, field, replace
from typing import Dict, List, Sequence

import numpy as np
import torch
from PIL import Image

from liquid_train.atomic import atomic_write_text
from liquid_train.inference.grid import save_image_grid
from liquid_train.inference.liquid_hf import load_liquid_hf
from liquid_train.inference.sampling import SamplingConfig
from liquid_train.inference.tasks import decode_codes, encode_images, image_to_text, text_to_image
from liquid_train.quickstart import scene as sc
from liquid_train.quickstart.analyser import analyse
from liquid_train.quickstart.scene import ATTRIBUTES, GRID, Scene, caption, parse_caption, score
from liquid_train.quickstart.synthetic import pil_to_pixels, pixels_to_uint8, render


@dataclass
class EvalConfig:
    num_scenes: int = 48
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    """T2I sampling: the public Liquid defaults (see ``SamplingConfig``)."""
    max_caption_tokens: int = 32
    batch_size: int = 16
    grid_images: int = 16


@dataclass
class EvalSet:
    """The fixed evaluation scenes, rendered once and encoded once by the run's VQ; shared by every model's I2T
    inputs and by the VQ ceiling, so they all see the very same pixels and codes."""
    scenes: List[Scene]
    renders: List[Image.Image]
    codes: np.ndarray
    """I2T inputs: [n, tokens] VQ codes of ``renders``."""


def build_eval_set(vq, scenes: List[Scene], cell_size: int, seed: int = 0) -> EvalSet:
    rng = random.Random(seed + 7)
    renders = [render(s, cell_size, rng) for s in scenes]
    return EvalSet(scenes, renders, encode_images(vq, renders, cell_size * GRID))


def _mean_scores(rows: List[Dict[str, float]]) -> Dict[str, float]:
    return {k: float(np.mean([r[k] for r in rows])) for k in (*ATTRIBUTES, "all")}


CFG_SCALES = (1.0, 3.0, 7.0)
"""T2I is scored at each of these guidance scales; 7.0 is the public Liquid default. Guidance that suits a 7B model
need not suit a model of a million parameters, so the default is one column among three, never the only one."""


def cfg_key(scale: float) -> str:
    return f"cfg{scale:g}"


def evaluate_exported(hf_dir: str, vq, evalset: EvalSet, out_dir: str, cfg: EvalConfig = EvalConfig(),
                      cfg_scales: Sequence[float] = CFG_SCALES, with_i2t: bool = True) -> dict:
    """T2I accuracy per attribute at each guidance scale (``{"cfg7": {...}, ...}``) and I2T accuracy for one
    exported model; writes a T2I grid per scale (``t2i_cfg7.png``, ...; ``t2i.png`` is the public default's, else
    the last scale's), the i2t grid and samples.jsonl."""
    os.makedirs(out_dir, exist_ok=True)
    lm = load_liquid_hf(hf_dir)
    if vq.codebook_size != lm.vocab.num_image_tokens:
        raise ValueError(f"{hf_dir}: {lm.vocab.num_image_tokens} image ids, but the VQ has {vq.codebook_size} codes")
    scenes = evalset.scenes
    prompts = [caption(s) for s in scenes]
    shown = cfg.sampling.cfg_scale if cfg.sampling.cfg_scale in cfg_scales else cfg_scales[-1]
    t2i: Dict[str, Dict[str, float]] = {}
    n = min(cfg.grid_images, len(scenes))
    for scale in cfg_scales:
        codes = text_to_image(lm, prompts, evalset.codes.shape[1], replace(cfg.sampling, cfg_scale=scale),
                              batch_size=cfg.batch_size, progress=False)
        generated = decode_codes(vq, codes)
        read = [analyse(im) for im in generated]
        t2i[cfg_key(scale)] = _mean_scores([score(r, s) for r, s in zip(read, scenes)])
        save_image_grid(generated[:n], os.path.join(out_dir, f"t2i_{cfg_key(scale)}.png"), captions=prompts[:n],
                        cols=8)
        if scale == shown:
            shown_images, shown_read = generated, read
    save_image_grid(shown_images[:n], os.path.join(out_dir, "t2i.png"), captions=prompts[:n], cols=8)
    result = {"t2i": t2i, "num_scenes": len(scenes)}
    captions = [""] * len(scenes)
    if with_i2t:
        captions = image_to_text(lm, evalset.codes, cfg.max_caption_tokens, batch_size=cfg.batch_size)
        result["i2t"] = _mean_scores([score(parse_caption(c), s) for c, s in zip(captions, scenes)])
        save_image_grid(np.stack([np.asarray(r) for r in evalset.renders[:n]]), os.path.join(out_dir, "i2t.png"),
                        captions=captions[:n], cols=8)
    atomic_write_text(os.path.join(out_dir, "samples.jsonl"), "".join(
        json.dumps({"scene": s.to_dict(), "prompt": p, f"t2i_read_{cfg_key(shown)}": read, "i2t_caption": c}) + "\n"
        for s, p, read, c in zip(scenes, prompts, shown_read, captions)))
    return result


def vq_ceiling(vq, evalset: EvalSet) -> Dict[str, float]:
    """The analyser on VQ round trips (encode -> decode) of the eval renders: the best T2I accuracy any model
    drawing codes of this tokenizer can reach, so a T2I score is read against it, not against 1.0."""
    recon = decode_codes(vq, evalset.codes)
    return _mean_scores([score(analyse(im), s) for im, s in zip(recon, evalset.scenes)])


def chance_accuracy() -> Dict[str, float]:
    """Per-attribute accuracy of a uniform guess: what an untrained model's scores are compared with."""
    sizes = {"kind": len(sc.KINDS), "colour": len(sc.COLOURS), "position": len(sc.POSITIONS),
             "count": len(sc.COUNTS), "background": len(sc.BACKGROUNDS)}
    out = {k: 1.0 / v for k, v in sizes.items()}
    out["all"] = float(np.prod(list(out.values())))
    return out


def cell_contents(scene: Scene, size: int = GRID) -> Dict[tuple, str]:
    """(row, col) -> what the lattice cell holds: ``"<background>:-"`` (empty) or ``"<background>:<kind>/<colour>"``.
    One code covers one cell, so these are the distinct things a code must tell apart (48 in the whole world)."""
    out = {(r, c): f"{scene.background}:-" for r in range(size) for c in range(size)}
    for cell in scene.cells():
        out[cell] = f"{scene.background}:{scene.kind}/{scene.colour}"
    return out


@torch.no_grad()
def autoencoder_scores(model, evalset) -> dict:
    """Analyser scores of encoder -> decoder with no quantisation (the warm-up autoencoder's round trip)."""
    x = torch.from_numpy(pil_to_pixels(evalset.renders))
    recon = model.decode_latents(model.encode_latents(x)).clamp(-1, 1).numpy()
    return _mean_scores([score(analyse(im), s) for im, s in zip(pixels_to_uint8(recon), evalset.scenes)])


def codebook_usage(evalset: EvalSet) -> Dict[str, int]:
    """How the VQ's codes of ``evalset`` cover the cell contents: distinct codes overall and on shape cells, codes
    given to more than one content, and contents that share a code with another (those lose kind / colour in the
    round trip whatever the decoder does)."""
    codes = evalset.codes.reshape(len(evalset.scenes), GRID, GRID)
    by_content = collections.defaultdict(set)
    by_code = collections.defaultdict(set)
    for scene, grid in zip(evalset.scenes, codes):
        for (r, c), label in cell_contents(scene).items():
            by_content[label].add(int(grid[r, c]))
            by_code[int(grid[r, c])].add(label)
    shape = {k: v for k, v in by_content.items() if not k.endswith(":-")}
    shape_codes = set().union(*shape.values()) if shape else set()
    shared = sum(1 for labels in by_code.values() if len(labels) > 1)
    return {"codes_used": int(len(np.unique(codes))), "shape_contents": len(shape),
            "shape_codes": len(shape_codes), "codes_shared_by_contents": shared,
            "contents_sharing_a_code": sum(1 for k, v in by_content.items()
                                           if any(len(by_code[c]) > 1 for c in v))}
