"""Summarise a run's metrics: loss per task over training, validation, data stream, throughput, samples, checkpoints.

    python tools/metrics.py RUN_DIR [--rows 6]

For curves, ``tensorboard --logdir RUN_DIR/tensorboard``. Library: ``liquid_train.metrics_view``.
"""
from __future__ import annotations

import argparse
import sys

from liquid_train.metrics_view import summary


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir")
    ap.add_argument("--rows", type=int, default=6, help="training steps shown (evenly spaced, the last included)")
    args = ap.parse_args(argv)
    try:
        print(summary(args.run_dir, args.rows))
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
