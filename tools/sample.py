"""Sample from an exported Liquid model (the output of ``tools/convert_checkpoint.py megatron-to-hf``).

    python tools/sample.py t2i  --model HF_DIR --prompt "a red circle" [--prompt ...] [--prompts-file F] --out grid.png
    python tools/sample.py i2t  --model HF_DIR --image a.png [--image ...] [--out captions.jsonl]
    python tools/sample.py text --model HF_DIR --prompt "Once upon a time" [--max-new-tokens 64]

t2i draws with classifier-free guidance (cond and uncond in one batch, KV cache; only image ids may be drawn) and
decodes the codes with the VQ tokenizer named in the model's ``liquid_vocab.json`` (``--vq`` overrides) into a PNG
grid with the prompts underneath; ``--save-codes`` also keeps the raw codes (``.npy``). Defaults are the public
Liquid code's: scale 7.0, temperature 0.99, top-k 4096, top-p 0.96. i2t encodes each image with the same VQ
(resize short side + centre crop to ``--resolution``) and captions it greedily. Exit code 2 on bad input.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from liquid_train.atomic import atomic_path, atomic_write_text

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)


def _sampling_args(p: argparse.ArgumentParser, temperature: float) -> None:
    p.add_argument("--temperature", type=float, default=temperature, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=4096)
    p.add_argument("--top-p", type=float, default=0.96)
    p.add_argument("--seed", type=int, default=0)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="exported HF directory (megatron-to-hf --out)")
    p.add_argument("--device", default="cuda" if _has_cuda() else "cpu")
    p.add_argument("--dtype", default=None, choices=["fp32", "bf16", "fp16"])


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("t2i", help="text-to-image with CFG -> PNG grid")
    _common(t)
    t.add_argument("--prompt", action="append", default=[])
    t.add_argument("--prompts-file", help="one prompt per line")
    t.add_argument("--out", required=True, help="PNG grid path")
    t.add_argument("--save-codes", help="also write the codes [n, tokens] as .npy")
    t.add_argument("--vq", help="VQ tokenizer name or directory (default: the one in liquid_vocab.json)")
    t.add_argument("--resolution", type=int, default=512, help="image side in pixels (tokens = (side/f)^2)")
    t.add_argument("--cfg-scale", type=float, default=7.0)
    t.add_argument("--batch-size", type=int, default=8)
    t.add_argument("--cols", type=int, default=None)
    _sampling_args(t, 0.99)
    c = sub.add_parser("i2t", help="image-to-text captioning")
    _common(c)
    c.add_argument("--image", action="append", required=True)
    c.add_argument("--vq")
    c.add_argument("--resolution", type=int, default=512)
    c.add_argument("--max-new-tokens", type=int, default=64)
    c.add_argument("--out", help="jsonl with {image, caption} per line (default: print)")
    _sampling_args(c, 0.0)
    g = sub.add_parser("text", help="text generation")
    _common(g)
    g.add_argument("--prompt", action="append", required=True)
    g.add_argument("--max-new-tokens", type=int, default=64)
    _sampling_args(g, 0.0)
    return ap


def _load(args):
    import torch

    from liquid_train.inference.liquid_hf import load_liquid_hf

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, None: None}[args.dtype]
    return load_liquid_hf(args.model, device=args.device, dtype=dtype)


def _vq(args, lm):
    from data_pipeline.vq import load_vq_tokenizer

    return load_vq_tokenizer(args.vq or lm.vocab.vq_tokenizer, device=args.device)


def _config(args):
    from liquid_train.inference.sampling import SamplingConfig

    return SamplingConfig(cfg_scale=getattr(args, "cfg_scale", 1.0), temperature=args.temperature,
                          top_k=args.top_k, top_p=args.top_p, seed=args.seed)


def cmd_t2i(args) -> int:
    import numpy as np

    from liquid_train.inference.grid import save_image_grid
    from liquid_train.inference.tasks import decode_codes, text_to_image

    prompts = list(args.prompt)
    if args.prompts_file:
        with open(args.prompts_file) as f:
            prompts += [line.strip() for line in f if line.strip()]
    if not prompts:
        raise ValueError("t2i: give at least one --prompt or a --prompts-file with one prompt per line")
    lm = _load(args)
    vq = _vq(args, lm)
    if vq.codebook_size != lm.vocab.num_image_tokens:
        raise ValueError(f"--vq {vq.name}: codebook {vq.codebook_size} but the model has "
                         f"{lm.vocab.num_image_tokens} image ids; pass the VQ tokenizer the model was trained with")
    side = args.resolution // vq.downsample_factor
    codes = text_to_image(lm, prompts, side * side, _config(args), batch_size=args.batch_size)
    if args.save_codes:
        with atomic_path(args.save_codes) as tmp:
            with open(tmp, "wb") as f:  # a file object: np.save would append .npy to a name
                np.save(f, codes.astype(np.int16))
    save_image_grid(decode_codes(vq, codes), args.out, captions=prompts, cols=args.cols)
    print(f"wrote {args.out} ({len(prompts)} images, {side}x{side} codes each)")
    return 0


def cmd_i2t(args) -> int:
    from PIL import Image

    from liquid_train.inference.tasks import encode_images, image_to_text

    images = []
    for path in args.image:
        try:
            images.append(Image.open(path).convert("RGB"))
        except (OSError, ValueError) as e:
            raise ValueError(f"{path}: cannot read the image ({e})") from None
    lm = _load(args)
    codes = encode_images(_vq(args, lm), images, args.resolution)
    captions = image_to_text(lm, codes, args.max_new_tokens, _config(args))
    lines = [json.dumps({"image": p, "caption": c}) for p, c in zip(args.image, captions)]
    if args.out:
        atomic_write_text(args.out, "\n".join(lines) + "\n")
        print(f"wrote {args.out}")
    else:
        print("\n".join(lines))
    return 0


def cmd_text(args) -> int:
    from liquid_train.inference.tasks import generate_text

    lm = _load(args)
    for prompt, out in zip(args.prompt, generate_text(lm, args.prompt, args.max_new_tokens, _config(args))):
        print(json.dumps({"prompt": prompt, "continuation": out}))
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from data_pipeline.vq import VQCheckpointError
    from liquid_train.inference.liquid_hf import LiquidModelError

    try:
        return {"t2i": cmd_t2i, "i2t": cmd_i2t, "text": cmd_text}[args.cmd](args)
    except (LiquidModelError, VQCheckpointError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
