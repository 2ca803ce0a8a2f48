"""Convert between Hugging Face checkpoints and liquid-train megatron dist checkpoints.

    python tools/convert_checkpoint.py hf-to-megatron --hf-dir HF --out CKPT [--family qwen2.5] [--size 0.5b]
        [--tokenizer TOK] [--tp 2 --pp 2] [--vq-tokenizer VQ] [--num-image-tokens K]
    python tools/convert_checkpoint.py megatron-to-hf --ckpt CKPT --out HF_OUT [--tokenizer-dir TOK] [--dtype bf16]
    python tools/convert_checkpoint.py deepspeed-to-hf --ckpt CKPT --out HF_OUT   (a run of engine=deepspeed)

hf-to-megatron reads the architecture from HF/config.json (any shape of Qwen2, Llama, Gemma, Gemma 2); a setting the
megatron model cannot reproduce is refused with one line (exit 2). ``--family`` / ``--size`` are optional and, when
given, checked against the config. The tokenizer (HF, or ``--tokenizer``) is extended and saved with the checkpoint.
The image rows are the codebook of ``--vq-tokenizer`` (a registry name or a VQ checkpoint directory; default
chameleon-vqgan, 8192 codes); ``--num-image-tokens`` overrides the count and must agree with a VQ given explicitly.

megatron-to-hf always writes a tokenizer: ``--tokenizer-dir``, else the checkpoint's ``tokenizer/``, else the run's
``data.tokenizer`` recorded in the checkpoint; with none of them it refuses (one line, exit 2).

``CKPT`` is a model checkpoint (hf-to-megatron's output), a trainer ``iter_*`` directory, a trainer
``checkpoints/`` directory or a run directory (the last two: the checkpoint their ``latest`` pointer names).

hf-to-megatron may run under ``torchrun --nproc_per_node=TP*PP``: each process then holds only its shard.
See docs/models.md.
"""
from __future__ import annotations

import argparse
import os
import sys

from liquid_train.engines.deepspeed_cpu import DeepSpeedUnavailable
from liquid_train.models.builder import check_divisibility
from liquid_train.models.hf_conversion import ConversionError, hf_to_megatron, image_rows, import_arch, megatron_to_hf
from liquid_train.parallel import destroy_parallel, initialize_parallel
from liquid_train.training.checkpoint import CheckpointError, read_latest, verify_checkpoint
from liquid_train.training.deepspeed_module import export_to_hf


def resolve_checkpoint(path: str) -> str:
    """A run dir or trainer ``checkpoints/`` dir -> the checkpoint its ``latest`` names; anything else unchanged."""
    for ckpt_dir in (path, os.path.join(path, "checkpoints")):
        latest = read_latest(ckpt_dir) if os.path.isdir(ckpt_dir) else None
        if latest:
            return latest
    return path


def _note(message: str) -> None:
    """One line for the person converting (only rank 0 speaks under torchrun)."""
    if os.environ.get("RANK", "0") == "0":
        print(f"note: {message}", flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("hf-to-megatron")
    a.add_argument("--hf-dir", required=True)
    a.add_argument("--out", required=True)
    a.add_argument("--family", default=None, help="checked against config.json model_type when given")
    a.add_argument("--size", default=None, help="a registry size; config.json must describe exactly it")
    a.add_argument("--tokenizer", default=None, help="tokenizer directory (default: --hf-dir when it has one)")
    a.add_argument("--tp", type=int, default=1)
    a.add_argument("--pp", type=int, default=1)
    a.add_argument("--num-image-tokens", type=int, default=None,
                   help="image rows (default: the codebook size of --vq-tokenizer)")
    a.add_argument("--vq-tokenizer", default=None,
                   help="VQ registry name or checkpoint directory whose codes the image rows hold "
                        "(default chameleon-vqgan)")
    a.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    a.add_argument("--seed", type=int, default=0)
    b = sub.add_parser("megatron-to-hf")
    b.add_argument("--ckpt", required=True)
    b.add_argument("--out", required=True)
    b.add_argument("--tokenizer-dir", "--tokenizer", dest="tokenizer_dir", default=None)
    b.add_argument("--dtype", default=None, choices=["fp32", "bf16", "fp16"],
                   help="dtype of the written shards (default: the imported config.json's)")
    c = sub.add_parser("deepspeed-to-hf", help="a checkpoint of engine=deepspeed -> save_pretrained of its "
                                               "consolidated fp32 weights")
    c.add_argument("--ckpt", required=True, help="an iter_* directory, a checkpoints/ directory or a run directory")
    c.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if args.cmd == "deepspeed-to-hf":
        try:
            export_to_hf(resolve_checkpoint(args.ckpt), args.out)
        except (CheckpointError, DeepSpeedUnavailable, ValueError, FileNotFoundError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"wrote {args.out}")
        return 0


    try:
        if args.cmd == "hf-to-megatron":
            arch = import_arch(args.hf_dir, args.family, args.size)  # refusals before any process group
            check_divisibility(arch, args.tp, args.pp)
            vq_tokenizer, num_image_tokens = image_rows(args.vq_tokenizer, args.num_image_tokens)
            initialize_parallel(args.tp, args.pp, seed=args.seed)
            vocab = hf_to_megatron(args.hf_dir, args.out, args.family, args.size, tp=args.tp, pp=args.pp,
                                   num_image_tokens=num_image_tokens, vq_tokenizer=vq_tokenizer,
                                   precision=args.precision, seed=args.seed, tokenizer_dir=args.tokenizer,
                                   notify=_note)
            print(f"wrote {args.out}: {arch.family} {arch.size} ({arch.num_layers} layers, hidden "
                  f"{arch.hidden_size}), vocab {vocab.vocab_size} rows, image ids from {vocab.image_token_offset}")
        else:
            initialize_parallel(1, 1)
            ckpt = resolve_checkpoint(args.ckpt)
            verify_checkpoint(ckpt)  # manifest (or structure) first: a damaged shard is one line, naming the file
            megatron_to_hf(ckpt, args.out, tokenizer_dir=args.tokenizer_dir, dtype=args.dtype, notify=_note)
            print(f"wrote {args.out}")
    except (ConversionError, CheckpointError, ValueError, KeyError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        destroy_parallel()
    return 0


if __name__ == "__main__":
    sys.exit(main())
