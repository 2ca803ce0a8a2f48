"""The three commands of ``tools/sample.py`` (t2i, i2t, text) on an exported model, with their defaults taken from
the export's image record (``liquid_image_tokens.json``, :mod:`liquid_train.image_meta`).

Why from the export: the model was trained on one code grid, with codes from one VQ's weights, prompted with one
instruction. Sampling at another resolution draws a number of codes the model never produced (and may run past its
positions), and decoding with other VQ weights turns right codes into wrong pixels. So the grid, the resolution, the
VQ and the templates default to the recorded ones; an explicit ``--resolution`` is honoured when it fits in the
model's positions and refused (one line) when it does not; a VQ whose weights are not the recorded ones is refused.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np
import torch
from PIL import Image

from data_pipeline.vq import load_vq_tokenizer
from liquid_train.atomic import atomic_path, atomic_write_text
from liquid_train.data.config import I2T_PROMPT, T2I_INSTRUCTIONS
from liquid_train.image_meta import EXPORT_FILE, grid_text, read_export_record
from liquid_train.inference.grid import save_image_grid
from liquid_train.inference.liquid_hf import load_liquid_hf
from liquid_train.inference.sampling import SamplingConfig
from liquid_train.inference.tasks import (decode_codes, encode_images, generate_text, i2t_prompt_ids, image_to_text,
                                          t2i_prompt_ids, text_to_image)


@dataclass
class ImageSettings:
    grid: Tuple[int, int]
    resolution: int
    vq: object
    """``data_pipeline.vq.VQTokenizer``."""
    instruction: str
    i2t_prompt: str
    pad_to_square: bool
    trained: str
    """How the model was trained, for messages ("8x8 codes at 64 px")."""

    @property
    def tokens(self) -> int:
        return self.grid[0] * self.grid[1]


def load_model(path: str, device: str, dtype_name: Optional[str]):
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, None: None}[dtype_name]
    return load_liquid_hf(path, device=device, dtype=dtype)


def image_settings(lm, vq_arg: Optional[str], resolution: Optional[int], device: str) -> ImageSettings:
    """Grid, resolution, VQ and templates for sampling ``lm``: the export's, or ``--vq`` / ``--resolution``."""
    record = read_export_record(lm.path)
    name = vq_arg or record.get("vq_tokenizer") or lm.vocab.vq_tokenizer
    flag = f"--vq {vq_arg}" if vq_arg else f"VQ {name} (recorded in {EXPORT_FILE})"
    vq = load_vq_tokenizer(name, device=device)
    if vq.codebook_size != lm.vocab.num_image_tokens:
        raise ValueError(f"{flag}: codebook {vq.codebook_size} but the model has {lm.vocab.num_image_tokens} image "
                         "ids; pass the VQ tokenizer the model was trained with")
    want = record.get("vq_identity")
    if want and vq.identity != want:
        raise ValueError(f"{flag}: its weights ({vq.identity[:19]}...) are not the ones the training data was encoded "
                         f"with ({want[:19]}..., {EXPORT_FILE}); pass the VQ the data was encoded with")
    f = vq.downsample_factor
    grid_rec, res_rec = record.get("image_grid"), record.get("resolution")
    trained = f"{grid_text(grid_rec)} codes" + (f" at {res_rec} px" if res_rec else "")
    if resolution is None:
        if not grid_rec:
            raise ValueError(f"{lm.path}: {EXPORT_FILE} records no image grid (the checkpoint was not trained on "
                             "image-text pairs by liquid-train); pass --resolution")
        grid = (int(grid_rec[0]), int(grid_rec[1]))
        resolution = int(res_rec or grid[0] * f)
    else:
        if resolution <= 0 or resolution % f:
            raise ValueError(f"--resolution {resolution}: must be a positive multiple of the VQ's downsampling "
                             f"factor {f}")
        grid = (resolution // f, resolution // f)
    instructions = record.get("t2i_instructions") or T2I_INSTRUCTIONS
    return ImageSettings(grid, resolution, vq, instructions[0], record.get("i2t_prompt") or I2T_PROMPT,
                         bool(record.get("pad_to_square", False)), trained)


def check_positions(lm, need: int, what: str, fix: str) -> None:
    """Refuse a sequence longer than the model's positions (``max_position_embeddings``)."""
    limit = getattr(lm.model.config, "max_position_embeddings", None)
    if limit and need > limit:
        raise ValueError(f"{what} needs {need} positions but the model has {limit} (max_position_embeddings in "
                         f"{lm.path}/config.json); {fix}")


def _resolution_fix(image: ImageSettings) -> str:
    return f"the model was trained on {image.trained}: use a smaller --resolution, or leave it out"


def t2i(args) -> int:
    prompts: List[str] = list(args.prompt)
    if args.prompts_file:
        with open(args.prompts_file) as f:
            prompts += [line.strip() for line in f if line.strip()]
    if not prompts:
        raise ValueError("t2i: give at least one --prompt or a --prompts-file with one prompt per line")
    lm = load_model(args.model, args.device, args.dtype)
    image = image_settings(lm, args.vq, args.resolution, args.device)
    longest = max(len(t2i_prompt_ids(lm, p, image.instruction)) for p in prompts)
    check_positions(lm, longest + image.tokens,
                    f"--resolution {image.resolution} ({grid_text(image.grid)} = {image.tokens} codes per image, "
                    f"after a prompt of {longest} tokens)", _resolution_fix(image))
    codes = text_to_image(lm, prompts, image.tokens, _sampling(args), batch_size=args.batch_size,
                          instruction=image.instruction)
    if args.save_codes:
        with atomic_path(args.save_codes) as tmp:
            with open(tmp, "wb") as f:  # a file object: np.save would append .npy to a name
                np.save(f, codes.astype(np.int16))
    save_image_grid(decode_codes(image.vq, codes, image.grid), args.out, captions=prompts, cols=args.cols)
    print(f"wrote {args.out} ({len(prompts)} images, {grid_text(image.grid)} codes each, {image.resolution} px)")
    return 0


def i2t(args) -> int:
    images = []
    for path in args.image:
        try:
            images.append(Image.open(path).convert("RGB"))
        except (OSError, ValueError) as e:
            raise ValueError(f"{path}: cannot read the image ({e})") from None
    lm = load_model(args.model, args.device, args.dtype)
    image = image_settings(lm, args.vq, args.resolution, args.device)
    prompt = len(i2t_prompt_ids(lm, [0] * image.tokens, image.i2t_prompt))
    check_positions(lm, prompt, f"--resolution {image.resolution} ({grid_text(image.grid)} = {image.tokens} codes "
                                f"per image, with the captioning prompt)", _resolution_fix(image))
    limit = getattr(lm.model.config, "max_position_embeddings", None) or prompt + args.max_new_tokens
    check_positions(lm, prompt + args.max_new_tokens, f"--max-new-tokens {args.max_new_tokens} after a prompt of "
                                                      f"{prompt} positions", f"use at most {limit - prompt}")
    codes = encode_images(image.vq, images, image.resolution, pad_to_square=image.pad_to_square)
    captions = image_to_text(lm, codes, args.max_new_tokens, _sampling(args), prompt=image.i2t_prompt)
    lines = [json.dumps({"image": p, "caption": c}) for p, c in zip(args.image, captions)]
    if args.out:
        atomic_write_text(args.out, "\n".join(lines) + "\n")
        print(f"wrote {args.out}")
    else:
        print("\n".join(lines))
    return 0


def text(args) -> int:
    lm = load_model(args.model, args.device, args.dtype)
    for prompt, out in zip(args.prompt, generate_text(lm, args.prompt, args.max_new_tokens, _sampling(args))):
        print(json.dumps({"prompt": prompt, "continuation": out}))
    return 0


def _sampling(args):
    return SamplingConfig(cfg_scale=getattr(args, "cfg_scale", 1.0), temperature=args.temperature,
                          top_k=args.top_k, top_p=args.top_p, seed=args.seed)


COMMANDS = {"t2i": t2i, "i2t": i2t, "text": text}
