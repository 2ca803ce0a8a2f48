"""``python -m data_pipeline {encode,build,inspect}`` (console script ``liquid-data``).

Bad input, output or settings end in one line on stderr and exit status 2 (``errors.DataError``), never a traceback.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import List, Optional

from .build import build_pairs, build_text
from .encode import EncodeConfig, run_encode
from .errors import DataError
from .inspect_data import inspect_path
from .preprocess import PreprocessConfig


def _add_encode(sub):
    p = sub.add_parser("encode", help="image-text pairs -> VQ code shards (webdataset)")
    p.add_argument("inputs", nargs="+", help="webdataset .tar, .jsonl/.parquet (image_path, text), dirs or globs")
    p.add_argument("-o", "--output-dir", required=True)
    p.add_argument("--vq", default="chameleon-vqgan", help="registry name or directory with vqgan.ckpt + vqgan.yaml")
    p.add_argument("--resolution", type=int, default=512, help="output side (512 default; 256/384 selectable)")
    p.add_argument("--max-aspect-ratio", type=float, default=2.0, help="reject above this (<= 0 disables)")
    p.add_argument("--min-side", type=int, default=None, help="reject short side below this (default resolution/4)")
    p.add_argument("--pad-to-square", action="store_true", help="pad with (122,116,104) instead of center crop")
    p.add_argument("--jpeg-draft", action="store_true", help="fast reduced-scale JPEG decoding of large images")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--num-workers", type=int, default=4)
    p.add_argument("--rows-per-shard", type=int, default=10000)
    p.add_argument("--image-root", default=None, help="base dir of relative image_path values")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--dtype", default=None, choices=[None, "float32", "bfloat16", "float16"])
    p.add_argument("--rank", type=int, default=None, help="override torchrun/SLURM rank detection")
    p.add_argument("--world-size", type=int, default=None)
    p.add_argument("--max-units", type=int, default=None, help="stop after this many shards (smoke runs)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads of the encoder and of each worker (default: cores // (workers + 1))")
    p.add_argument("--force", action="store_true",
                   help="if -o holds an output made with other settings, start a new output next to it")
    p.add_argument("--no-progress", action="store_true")


def _add_build(sub):
    p = sub.add_parser("build", help="VQ shards / text corpora -> megatron-core indexed datasets")
    p.add_argument("kind", choices=["pairs", "text"])
    p.add_argument("inputs", nargs="+", help="pairs: the shard directory; text: jsonl/parquet/txt files (.zst ok)")
    p.add_argument("-t", "--tokenizer", required=True, help="local HF tokenizer directory of the base model")
    p.add_argument("-o", "--output-prefix", required=True, help="writes <prefix>.bin/.idx/.meta.json")
    p.add_argument("--text-key", default="text", help="text: the field/column holding the document (StarCoder: content)")
    p.add_argument("--txt-mode", default="line", choices=["line", "file"], help=".txt: one doc per line or per file")
    p.add_argument("--allow-incomplete", action="store_true", help="pairs: build from an unfinished encode")
    p.add_argument("--no-progress", action="store_true")


def _add_inspect(sub):
    p = sub.add_parser("inspect", help="stats of shards / an indexed dataset, and a PNG grid of decoded samples")
    p.add_argument("path", help="shard directory or indexed dataset prefix")
    p.add_argument("-n", "--num-samples", type=int, default=8)
    p.add_argument("--out", default=None, help="PNG path (default next to the data)")
    p.add_argument("--vq", default=None, help="VQ tokenizer to decode with (default: the one recorded)")
    p.add_argument("--device", default="cpu")


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="liquid-data", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_encode(sub)
    _add_build(sub)
    _add_inspect(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return _run(parser, args)
    except DataError as e:
        print(f"liquid-data {args.command}: {e}", file=sys.stderr)
        return 2


def _run(parser, args) -> int:
    if args.command == "encode":
        cfg = EncodeConfig(
            inputs=args.inputs, output_dir=args.output_dir, vq_tokenizer=args.vq,
            preprocess=PreprocessConfig(resolution=args.resolution, max_aspect_ratio=args.max_aspect_ratio,
                                        min_side=args.min_side, pad_to_square=args.pad_to_square,
                                        jpeg_draft=args.jpeg_draft),
            batch_size=args.batch_size, num_workers=args.num_workers, rows_per_shard=args.rows_per_shard,
            image_root=args.image_root, device=args.device, dtype=args.dtype, rank=args.rank,
            world_size=args.world_size, max_units=args.max_units, progress=not args.no_progress,
            threads=args.threads, force=args.force)
        for flag, value, low in (("--threads", args.threads, 1), ("--resolution", args.resolution, 1),
                                 ("--batch-size", args.batch_size, 1), ("--num-workers", args.num_workers, 0)):
            if value is not None and value < low:
                raise DataError(f"{flag} must be >= {low}, got {value}")
        result = run_encode(cfg)
        s = result["summary"]
        print(json.dumps({"this_run": result["run"], "output_dir": result["output_dir"], "read": s["read"],
                          "written": s["written"], "rejected": s["rejected"], "complete": s["complete"]}, indent=1))
        return 0 if s["balanced"] else 1
    if args.command == "build":
        if args.kind == "pairs":
            if len(args.inputs) != 1:
                parser.error("build pairs takes exactly one shard directory")
            meta = build_pairs(args.inputs[0], args.tokenizer, args.output_prefix, progress=not args.no_progress,
                               allow_incomplete=args.allow_incomplete)
        else:
            meta = build_text(args.inputs, args.tokenizer, args.output_prefix, args.text_key, args.txt_mode,
                              progress=not args.no_progress)
        print(json.dumps(meta, indent=1))
        return 0
    if args.command == "inspect":
        print(json.dumps(inspect_path(args.path, args.num_samples, args.out, args.vq, args.device), indent=1))
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
