"""``python -m liquid_train.tutorial toy-inputs --out DIR``: the toy inputs of docs/tutorial.md (see ``toy.py``)."""
from __future__ import annotations

import argparse
import sys

import torch

from liquid_train.tutorial.toy import write_toy_inputs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m liquid_train.tutorial", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    toy = sub.add_parser("toy-inputs", help="a tiny HF base model, photos, text and an example photo")
    toy.add_argument("--out", required=True)
    args = p.parse_args(argv)
    torch.set_num_threads(1)  # seconds of work; do not contend with the rest of the machine

    for name, path in write_toy_inputs(args.out).items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
