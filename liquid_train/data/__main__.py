"""``python -m liquid_train.data index --config run.yaml [key=value ...]``: build the mixed-task index ahead of time.

Why: a job builds its index on rank 0 while the other ranks wait at a barrier (`liquid_train.data.index.ensure`).
At paper scale that is about a minute; building it beforehand (on a CPU node, once per key) makes the job start
without it, and is the way when the ranks do not share one ``cache_dir`` (build it on every node).

``--config`` takes a run YAML (``configs/runs/*.yaml``: the data section, and ``train.iters x
train.global_batch_size`` packed sequences, as the trainer asks) or a data YAML (``configs/data/*.yaml``, with
``--sequences``). Overrides use the file's own keys (``data.cache_dir=...`` for a run YAML). Prints the index
directory; an index that exists already is left alone. Bad config: one line, exit 2.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from omegaconf import OmegaConf

from liquid_train.data import DataConfig, builder
from liquid_train.data import index as index_module
from liquid_train.data import load_data_config
from liquid_train.training.config import ConfigError, load_config
from liquid_train.vocab import LiquidVocab, default_test_vocab


def _run_config(path: str, overrides: List[str], sequences: Optional[int]):
    cfg = load_config(path, overrides)
    data = OmegaConf.to_object(cfg.data)
    if not isinstance(data, DataConfig):
        data = DataConfig(**OmegaConf.to_container(cfg.data, resolve=True))
    num = sequences or int(cfg.train.iters) * int(cfg.train.global_batch_size)
    vocab = None  # the index does not depend on the vocabulary, but the templates are built with it
    if cfg.model.vocab == "test":
        vocab = default_test_vocab()
    elif cfg.model.vocab or data.vocab:
        vocab = LiquidVocab.load(cfg.model.vocab or data.vocab)
    return data, num, vocab


def _data_config(path: str, overrides: List[str], sequences: Optional[int]):
    if not sequences:
        raise ValueError(f"{path}: a data config does not say how many packed sequences to build; give --sequences")
    return load_data_config(path, overrides), sequences, None


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m liquid_train.data", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    index = sub.add_parser("index", help="build the mixed-task index of a config (if it does not exist)")
    index.add_argument("--config", "-c", required=True, help="run YAML or data YAML")
    index.add_argument("--sequences", type=int, default=None,
                       help="packed training sequences (default for a run YAML: train.iters x global_batch_size)")
    index.add_argument("overrides", nargs="*", help="dotlist overrides, e.g. data.cache_dir=/shared/cache")
    args = parser.parse_args(argv)


    try:
        raw = OmegaConf.load(args.config) if args.config.endswith((".yaml", ".yml")) else None
        is_run = raw is not None and OmegaConf.is_dict(raw) and "data" in raw and "train" in raw
        load = _run_config if is_run else _data_config
        cfg, num, vocab = load(args.config, list(args.overrides), args.sequences)
        plan, _ = builder.index_plan(cfg, num, vocab)
        reader = index_module.load(plan)
        if reader is None:
            reader = index_module.build(plan, progress=lambda line: print(line, flush=True))
        else:
            print(f"index {plan.key}: up to date ({reader.meta['num_sequences']:,} packed sequences)")
    except (ConfigError, ValueError, FileNotFoundError) as err:
        print(f"liquid_train.data index: {err}", file=sys.stderr)
        return 2
    print(reader.directory)
    return 0


if __name__ == "__main__":
    sys.exit(main())
