"""The three Liquid tasks at inference time, with prompts built exactly as the training templates build them.

WHY the templates matter: a model trained on ``[bos] caption + instruction <boi> codes`` (caption and instruction
tokenized separately, as ``liquid_train.data.templates`` does) must be prompted with the same ids, or a small model
sees a sequence it never trained on. So:

- T2I: ``[bos] caption + instruction <boi>`` against ``[bos] <unconditional> <boi>``, CFG, image ids only;
- I2T: ``[bos] <boi> codes <eoi> "The caption of this image is:"`` then text until ``[eos]``;
- text: ``[bos] prompt`` then text until ``[eos]``.
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import List, Optional, Sequence

import numpy as np
import torch
from tqdm import tqdm

from data_pipeline.preprocess import PreprocessConfig, preprocess_image
from liquid_train.data.config import I2T_PROMPT, T2I_INSTRUCTIONS
from liquid_train.inference.liquid_hf import LiquidHF
from liquid_train.inference.sampling import SamplingConfig, generate_image_tokens, generate_text_tokens


def t2i_prompt_ids(lm: LiquidHF, caption: str, instruction: str = T2I_INSTRUCTIONS[0]) -> List[int]:
    v = lm.vocab
    return [v.bos_id] + lm.encode_text(caption) + lm.encode_text(instruction) + [v.boi_id]


def uncond_prompt_ids(lm: LiquidHF) -> List[int]:
    v = lm.vocab
    return [v.bos_id, v.uncond_id, v.boi_id]


def i2t_prompt_ids(lm: LiquidHF, codes: np.ndarray, prompt: str = I2T_PROMPT) -> List[int]:
    v = lm.vocab
    image = v.codes_to_ids(np.asarray(codes).reshape(-1)).tolist()
    return [v.bos_id, v.boi_id] + image + [v.eoi_id] + lm.encode_text(prompt)


def text_banned_ids(lm: LiquidHF) -> torch.Tensor:
    """Ids a text continuation may not draw: every image code and the three image specials."""
    v = lm.vocab
    return torch.cat([torch.arange(v.image_token_offset, v.image_token_end),
                      torch.tensor([v.boi_id, v.eoi_id, v.uncond_id])])


def _batches(n: int, size: int):
    for start in range(0, n, max(1, size)):
        yield start, min(n, start + max(1, size))


def text_to_image(lm: LiquidHF, captions: Sequence[str], num_tokens: int, cfg: SamplingConfig,
                  batch_size: int = 8, instruction: str = T2I_INSTRUCTIONS[0], progress: bool = True) -> np.ndarray:
    """Image codes [n, num_tokens] (raster order) for each caption; batch ``i`` draws with seed ``cfg.seed + i``."""
    v = lm.vocab
    out = []
    starts = list(_batches(len(captions), batch_size))
    for i, (a, b) in enumerate(tqdm(starts, desc="T2I batches", disable=not progress or len(starts) < 2)):
        prompts = [t2i_prompt_ids(lm, c, instruction) for c in captions[a:b]]
        ids = generate_image_tokens(lm.model, prompts, uncond_prompt_ids(lm), num_tokens, v.image_token_offset,
                                    v.image_token_end, v.pad_id, replace(cfg, seed=cfg.seed + i),
                                    progress=progress and len(starts) < 2)
        out.append(v.ids_to_codes(ids.cpu().numpy()))
    return np.concatenate(out, 0) if out else np.zeros((0, num_tokens), np.int64)


def image_to_text(lm: LiquidHF, codes: np.ndarray, max_new_tokens: int = 64, cfg: Optional[SamplingConfig] = None,
                  batch_size: int = 16, prompt: str = I2T_PROMPT) -> List[str]:
    """A caption for each code grid in ``codes`` [n, ...]; greedy unless ``cfg`` says otherwise."""
    cfg = cfg or SamplingConfig(temperature=0.0)
    v = lm.vocab
    captions: List[str] = []
    banned = text_banned_ids(lm)
    for a, b in _batches(len(codes), batch_size):
        prompts = [i2t_prompt_ids(lm, c, prompt) for c in codes[a:b]]
        for ids in generate_text_tokens(lm.model, prompts, max_new_tokens, v.eos_id, v.pad_id, banned, cfg,
                                        vocab_size=v.vocab_size):
            captions.append(lm.decode_text(ids).strip())
    return captions


def generate_text(lm: LiquidHF, prompts: Sequence[str], max_new_tokens: int = 64,
                  cfg: Optional[SamplingConfig] = None) -> List[str]:
    """Plain language-model continuation of each prompt (no image ids drawn)."""
    cfg = cfg or SamplingConfig(temperature=0.0)
    v = lm.vocab
    ids = [[v.bos_id] + lm.encode_text(p) for p in prompts]
    outs = generate_text_tokens(lm.model, ids, max_new_tokens, v.eos_id, v.pad_id, text_banned_ids(lm), cfg,
                                vocab_size=v.vocab_size)
    return [lm.decode_text(o) for o in outs]


def decode_codes(vq, codes: np.ndarray, grid: Optional[Sequence[int]] = None) -> np.ndarray:
    """Code grids [n, T] in raster order -> uint8 images [n, H, W, 3] through the VQ decoder; ``grid`` (h, w),
    default a square of T."""
    codes = np.asarray(codes)
    if grid is None:
        side = math.isqrt(codes.shape[-1])
        if side * side != codes.shape[-1]:
            raise ValueError(f"{codes.shape[-1]} image tokens are not a square grid; give the grid (h, w)")
        grid = (side, side)
    h, w = int(grid[0]), int(grid[1])
    if h * w != codes.shape[-1]:
        raise ValueError(f"{codes.shape[-1]} image tokens do not fill a {h}x{w} grid")
    pixels = vq.decode(torch.as_tensor(codes.reshape(-1, h, w))).float().clamp(-1, 1)
    return ((pixels + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def encode_images(vq, images, resolution: int, pad_to_square: bool = False) -> np.ndarray:
    """PIL images -> code grids [n, (resolution/f)^2] with the data pipeline's resize + centre crop (or padding to
    a square, as ``encode --pad-to-square``)."""
    pcfg = PreprocessConfig(resolution=resolution, max_aspect_ratio=0, min_side=1, pad_to_square=pad_to_square)
    arrays = np.stack([preprocess_image(im, pcfg)[0] for im in images])
    codes = vq.encode_uint8(torch.from_numpy(arrays))
    return codes.reshape(len(images), -1).cpu().numpy().astype(np.int64)
