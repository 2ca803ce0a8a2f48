"""Sample from an exported Liquid model (the output of ``tools/convert_checkpoint.py megatron-to-hf``).

    python tools/sample.py t2i  --model HF_DIR --prompt "a red circle" [--prompt ...] [--prompts-file F] --out grid.png
    python tools/sample.py i2t  --model HF_DIR --image a.png [--image ...] [--out captions.jsonl]
    python tools/sample.py text --model HF_DIR --prompt "Once upon a time" [--max-new-tokens 64]

The image grid, the resolution, the VQ tokenizer and the prompt templates default to what the model was trained
with, recorded in the export's ``liquid_image_tokens.json``. ``--resolution`` asks for another size (refused when
the codes do not fit in the model's positions); ``--vq`` for another VQ (refused when its weights are not the ones
the training data was encoded with). t2i draws with classifier-free guidance (cond and uncond in one batch, KV
cache; only image ids may be drawn) and writes a PNG grid with the prompts underneath; ``--save-codes`` also keeps
the raw codes (``.npy``). Defaults are the public Liquid code's: scale 7.0, temperature 0.99, top-k 4096, top-p
0.96. i2t encodes each image as the data pipeline did (resize short side + centre crop) and captions it greedily.
Exit code 2 on bad input. Implementation: ``liquid_train.inference.commands``.
"""
from __future__ import annotations

import argparse
import sys

import torch

from data_pipeline.vq import VQCheckpointError
from liquid_train.inference.commands import COMMANDS
from liquid_train.inference.liquid_hf import LiquidModelError


def _sampling_args(p: argparse.ArgumentParser, temperature: float) -> None:
    p.add_argument("--temperature", type=float, default=temperature, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=4096)
    p.add_argument("--top-p", type=float, default=0.96)
    p.add_argument("--seed", type=int, default=0)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="exported HF directory (megatron-to-hf --out)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default=None, choices=["fp32", "bf16", "fp16"])


def _image_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--vq", help="VQ tokenizer name or directory (default: the one the training data was encoded with)")
    p.add_argument("--resolution", type=int, default=None,
                   help="image side in pixels (default: the trained one; codes = (side / VQ factor)^2)")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("t2i", help="text-to-image with CFG -> PNG grid")
    _common(t)
    t.add_argument("--prompt", action="append", default=[])
    t.add_argument("--prompts-file", help="one prompt per line")
    t.add_argument("--out", required=True, help="PNG grid path")
    t.add_argument("--save-codes", help="also write the codes [n, tokens] as .npy")
    _image_args(t)
    t.add_argument("--cfg-scale", type=float, default=7.0)
    t.add_argument("--batch-size", type=int, default=8)
    t.add_argument("--cols", type=int, default=None)
    _sampling_args(t, 0.99)
    c = sub.add_parser("i2t", help="image-to-text captioning")
    _common(c)
    c.add_argument("--image", action="append", required=True)
    _image_args(c)
    c.add_argument("--max-new-tokens", type=int, default=64)
    c.add_argument("--out", help="jsonl with {image, caption} per line (default: print)")
    _sampling_args(c, 0.0)
    g = sub.add_parser("text", help="text generation")
    _common(g)
    g.add_argument("--prompt", action="append", required=True)
    g.add_argument("--max-new-tokens", type=int, default=64)
    _sampling_args(g, 0.0)
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)

    try:
        return COMMANDS[args.cmd](args)
    except (LiquidModelError, VQCheckpointError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
