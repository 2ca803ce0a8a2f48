"""Run config: YAML + dotlist, one clear error naming the key; LR schedules against closed forms; FLOPs formula."""
from __future__ import annotations

import math
import os

import pytest
import torch

from liquid_train.training.config import ConfigError, load_config, save_resolved, validate

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cfg(*overrides):
    return load_config(os.path.join(REPO, "configs/runs/tiny_cpu.yaml"), ["run_dir=/tmp/x", *overrides])


def test_yaml_plus_overrides_and_resolved_copy(tmp_path):
    cfg = _cfg("train.iters=7", "data.seq_length=64", "parallel.tensor_parallel=2")
    assert cfg.train.iters == 7 and cfg.data.seq_length == 64 and cfg.model.family == "qwen2.5"
    path = save_resolved(cfg, str(tmp_path))
    assert "iters: 7" in open(path).read()


@pytest.mark.parametrize("override,key", [("train.itres=3", "train.itres"), ("train.iters=abc", "train.iters"),
                                          ("data.seqlen=5", "data.seqlen"), ("nonsense", "nonsense")])
def test_bad_keys_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key):
        _cfg(override)


def test_cross_field_checks_name_the_key():
    with pytest.raises(ConfigError, match="parallel.tensor_parallel.*world size"):
        validate(_cfg("parallel.tensor_parallel=3"), world_size=4)
    with pytest.raises(ConfigError, match="train.global_batch_size"):
        validate(_cfg("train.global_batch_size=6", "train.micro_batch_size=4"), 1)
    with pytest.raises(ConfigError, match="train.global_batch_size"):
        validate(_cfg("train.global_batch_size=8", "train.micro_batch_size=8"), 2)
    with pytest.raises(ConfigError, match="virtual_pipeline_parallel"):
        validate(_cfg("parallel.virtual_pipeline_parallel=2"), 1)
    with pytest.raises(ConfigError, match="model.precision"):
        validate(_cfg("model.precision=fp4"), 1)
    with pytest.raises(ConfigError, match="schedule.style"):
        validate(_cfg("schedule.style=step"), 1)
    validate(_cfg(), 1)


def _lrs(*overrides, steps=20):
    from liquid_train.training.optim import build_scheduler

    cfg = _cfg("train.iters=20", "optimizer.lr=1.0", "optimizer.min_lr=0.1", *overrides)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.0)
    sched = build_scheduler(cfg, opt)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        sched.step(1)
    return out


def test_lr_schedules_match_closed_forms():
    const = _lrs("schedule.style=constant", "schedule.warmup_steps=4")
    assert const[:5] == pytest.approx([0, 0.25, 0.5, 0.75, 1.0]) and const[5:] == pytest.approx([1.0] * 15)
    cos = _lrs("schedule.style=cosine", "schedule.warmup_steps=0")
    assert cos == pytest.approx([0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * k / 20)) for k in range(20)])
    wsd = _lrs("schedule.style=wsd", "schedule.warmup_steps=2", "schedule.wsd_decay_fraction=0.25")
    assert wsd[2:15] == pytest.approx([1.0] * 13)  # stable until the last 5 steps
    assert wsd[15:] == pytest.approx([1.0 - 0.9 * (k / 5) for k in range(5)])


# --- data.include: a run config names a shared data config and overrides some of its fields -----------------------
def test_data_include_merges_a_data_config_with_overrides(tmp_path):
    from liquid_train.training.config import config_sources

    run = tmp_path / "run.yaml"
    run.write_text("run_dir: x\ndata:\n  include: configs/data/paper_mix.yaml\n  seq_length: 256\n"
                   "  pairs_path: /p/pairs\n")
    cfg = load_config(str(run))
    assert dict(cfg.data.mixture) == {"text": 30, "t2i": 24, "i2t": 6} and cfg.data.text_sample == "window"
    assert cfg.data.seq_length == 256 and cfg.data.pairs_path == "/p/pairs"  # overrides win
    assert cfg.data.text_path == "data/indexed/text"  # from the included file
    sources = config_sources(str(run))
    assert sources["data.seq_length"] == f"set in {run}"
    assert sources["data.text_path"] == f"set in {REPO}/configs/data/paper_mix.yaml, included by {run}"
    # next to the run config first; a mixture given replaces the included one whole (a task left out has weight 0)
    (tmp_path / "mine.yaml").write_text("mixture: {text: 1, t2i: 1, i2t: 1}\nseq_length: 512\n")
    run.write_text("run_dir: x\ndata:\n  include: mine.yaml\n  mixture: {text: 2, t2i: 1}\n")
    cfg = load_config(str(run), ["data.seq_length=64"])
    assert dict(cfg.data.mixture) == {"text": 2, "t2i": 1} and cfg.data.seq_length == 64
    # a required field stays required, even where the included file has a value
    run.write_text("run_dir: x\ndata:\n  include: configs/data/paper_mix.yaml\n  pairs_path: ???\n")
    with pytest.raises(ConfigError, match=r"config key 'data.pairs_path': is required"):
        load_config(str(run))
    assert load_config(str(run), ["data.pairs_path=/q"]).data.pairs_path == "/q"
    run.write_text("run_dir: x\ndata:\n  include: configs/data/nope.yaml\n")
    with pytest.raises(ConfigError, match=r"config key 'data.include': configs/data/nope.yaml not found"):
        load_config(str(run))


def test_a_mixture_in_the_file_replaces_the_default(tmp_path):
    run = tmp_path / "run.yaml"
    run.write_text("run_dir: x\ndata:\n  mixture: {text: 1, t2i: 3}\n")
    assert dict(load_config(str(run)).data.mixture) == {"text": 1, "t2i": 3}
    assert dict(load_config(str(run), ["data.mixture.i2t=2"]).data.mixture) == {"text": 1, "t2i": 3, "i2t": 2}


def test_checkpoints_default_to_every_1000_steps_and_hourly():
    cfg = load_config(None, ["run_dir=x"])
    assert cfg.checkpoint.save_interval == 1000 and cfg.checkpoint.save_interval_minutes == 60
    with pytest.raises(ConfigError, match="checkpoint.save_interval_minutes"):
        validate(load_config(None, ["run_dir=x", "checkpoint.save_interval_minutes=-1"]), 1)
