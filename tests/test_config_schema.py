"""Every field of the run-config schema is read by some code path: a run with everything switched on (validation,
checkpoints, T2I samples, TensorBoard) plus the build-path branches a CPU run cannot take (FP8, recompute, the
other LR schedules) records every field the code reads, outside the config's own validation; the test fails on any
schema field that nothing read."""
from __future__ import annotations

import dataclasses
import inspect
import os

import pytest
from omegaconf import DictConfig, OmegaConf

from liquid_train.data.config import DataConfig
from liquid_train.models import builder
from liquid_train.models.options import FP8Config, RecomputeConfig
from liquid_train.models.precision import fp8_transformer_config_kwargs
from liquid_train.testing.runs import ensure_tiny_run_data, tiny_run_overrides
from liquid_train.testing.train_driver import nan_on_steps_provider
from liquid_train.training import load_config, run
from liquid_train.training.config import RunConfig
from liquid_train.training.optim import build_scheduler

# Reading a field to check it is not consuming it.
_VALIDATORS = {"validate", "_validate_deepspeed", "_require", "_check_machine", "_check_data", "preflight", "data_config", "__post_init__"}
_BLOCKS = {DataConfig: "data", FP8Config: "model.fp8", RecomputeConfig: "model.recompute"}


def schema_keys(node=None, prefix=""):
    node = OmegaConf.structured(RunConfig) if node is None else node
    keys = []
    for name in node.keys():
        child = node._get_node(name)
        if isinstance(child, DictConfig) and OmegaConf.get_type(child) not in (dict, None):
            keys += schema_keys(child, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


_PROJECT = tuple(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), d) + os.sep
                 for d in ("liquid_train", "data_pipeline", "tools"))


def _from_validation(depth: int = 2) -> bool:
    """True unless the read comes straight from project code outside a validator (omegaconf's own traversals,
    e.g. ``missing_keys`` or ``to_container``, read every key and prove nothing)."""
    frame = inspect.currentframe()
    for _ in range(depth):
        frame = frame.f_back if frame is not None else None
    if frame is None or not frame.f_code.co_filename.startswith(_PROJECT):
        return True
    return frame.f_code.co_name in _VALIDATORS


@pytest.fixture
def recorder(monkeypatch):
    read = set()
    get_attr, get_item, get = DictConfig.__getattr__, DictConfig.__getitem__, DictConfig.get

    def note(node, key):
        if isinstance(key, str) and not _from_validation(depth=3):
            full = node._get_full_key(key)
            if full:
                read.add(str(full))

    def getattr_(self, key):
        note(self, key)
        return get_attr(self, key)

    def getitem_(self, key):
        note(self, key)
        return get_item(self, key)

    def get_(self, key, default=None):
        note(self, key)
        return get(self, key, default)

    monkeypatch.setattr(DictConfig, "__getattr__", getattr_)
    monkeypatch.setattr(DictConfig, "__getitem__", getitem_)
    monkeypatch.setattr(DictConfig, "get", get_)
    for cls, prefix in _BLOCKS.items():
        fields = {f.name for f in dataclasses.fields(cls)}
        original = cls.__getattribute__

        def getattribute(self, name, _prefix=prefix, _fields=fields, _original=original):
            if name in _fields and not _from_validation():
                read.add(f"{_prefix}.{name}")
            return _original(self, name)

        monkeypatch.setattr(cls, "__getattribute__", getattribute)
    return read


@pytest.mark.slow
def test_every_schema_field_is_read(tmp_path, recorder, monkeypatch):
    data = ensure_tiny_run_data(str(tmp_path / "tiny_data"), num_image_tokens=512)  # the tiny VQ's codebook
    monkeypatch.setenv("LT_TEST_NAN_STEPS", "1")  # a non-finite first step: the skip-and-count branch
    monkeypatch.setenv("LT_TEST_MICROBATCHES", "2")
    cfg = load_config(overrides=tiny_run_overrides(data, iters=4) + [
        f"run_dir={tmp_path}/run", "train.eval_interval=2", "checkpoint.save_interval=2", "logging.tensorboard=true",
        "sampling.interval=4", "sampling.vq_tokenizer=chameleon-vqgan-tiny", "sampling.image_tokens=16",
        "sampling.prompts=[w1 w2]", "sampling.sampler.temperature=1.0", "train.exit_after_iters=4", "schedule.warmup_steps=null",
        "schedule.warmup_fraction=0.25"])
    run(cfg, model_provider=nan_on_steps_provider(cfg))
    # The deepspeed engine's block: a short run with every one of its switches on.
    monkeypatch.delenv("LT_TEST_NAN_STEPS")
    run(load_config(overrides=tiny_run_overrides(data, iters=2) + [
        f"run_dir={tmp_path}/ds", "schedule.warmup_steps=1", "engine=deepspeed", "deepspeed.zero_stage=3",
        "deepspeed.offload_optimizer=cpu",
        "deepspeed.offload_param=cpu", "deepspeed.gradient_checkpointing=true"]))
    # Branches a CPU run does not take, through the same functions the trainer calls.
    for style in ("constant", "cosine", "wsd", "linear"):
        import torch

        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.0)
        build_scheduler(load_config(overrides=[f"run_dir={tmp_path}/x", f"schedule.style={style}",
                                               "schedule.warmup_steps=1", "schedule.decay_steps=10"]), opt)
    fp8 = load_config(overrides=[f"run_dir={tmp_path}/x", "model.precision=fp8", "model.recompute.granularity=full",
                                 "model.recompute.method=block"])
    options = builder.options_from_run_config(fp8)
    fp8_transformer_config_kwargs(options.fp8, 8)
    builder.recompute_kwargs(options.recompute)
    builder.recompute_kwargs(builder.options_from_run_config(
        load_config(overrides=[f"run_dir={tmp_path}/x", "model.recompute.granularity=selective"])).recompute)
    unread = sorted(k for k in schema_keys() if k not in recorder)
    assert not unread, f"run-config fields that no code reads: {unread}"


def test_schema_walk_sees_nested_blocks():
    keys = schema_keys()
    assert {"model.fp8.recipe", "model.recompute.granularity", "data.seq_length", "train.iters"} <= set(keys)
    assert os.path.basename(__file__).startswith("test_")
