"""``liquid-train --config configs/runs/<run>.yaml key=value ...``: start or resume a mix-pretraining run.

Launch with torchrun for several processes (``torchrun --nproc-per-node 8 -m liquid_train.cli --config ...``);
a plain single process works on CPU. A configuration problem is one line naming the key and where its value was set
(the YAML file or the command line), printed once (by rank 0), and every rank exits 2 before any process group
exists.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import List, Optional

from omegaconf import OmegaConf

from liquid_train.training import TrainingAborted, run
from liquid_train.training.checkpoint import CheckpointError
from liquid_train.training.config import ConfigError, config_sources, load_config


def _is_rank0() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="liquid-train", description=__doc__.splitlines()[0])
    parser.add_argument("--config", "-c", help="run YAML (configs/runs/*.yaml)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("overrides", nargs="*", help="dotlist overrides, e.g. train.iters=100 parallel.tensor_parallel=2")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sources = config_sources(args.config, args.overrides)
    try:
        cfg = load_config(args.config, args.overrides)
        if args.print_config:
            print(OmegaConf.to_yaml(cfg))
            return 0
        result = run(cfg)
    except ConfigError as err:
        if _is_rank0():
            print(f"liquid-train: {err.located(sources)}", file=sys.stderr)
        return 2
    except CheckpointError as err:  # a damaged or unwritable checkpoint / run dir: one line, no traceback
        print(f"liquid-train: {err}", file=sys.stderr)
        return 2
    except TrainingAborted as err:
        print(f"liquid-train: training aborted: {err}", file=sys.stderr)
        return 3
    if result.get("preempted"):
        print(f"liquid-train: preempted; checkpoint saved at step {result.get('step')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
