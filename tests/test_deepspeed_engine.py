"""The ``deepspeed`` engine (the HF model under DeepSpeed ZeRO) against itself and against the megatron engine.

* packed == alone: a packed micro-batch through the HF model with ``hf_packed``'s mask and positions gives each
  sample's logits as if it ran alone (a leaking mask or positions that do not restart break it; Gemma 2 also checks
  the sliding-window mask inside segments);
* ZeRO-3 on two gloo processes follows the single-process loss curve (fp32, rel. ``ZERO_TOL``);
* from the same weights (the megatron init checkpoint and its HF export), the two engines give the same per-step
  losses for 20 steps on the same packed batches (fp32, rel. ``ENGINE_TOL``);
* a run killed with SIGKILL after a checkpoint and relaunched reproduces the uninterrupted losses bitwise;
* config errors are one ConfigError naming the key.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from liquid_train.engines.hf_packed import hf_inputs
from liquid_train.models.builder import arch_from_run_config, build_from_run_config
from liquid_train.models.hf_conversion import export_model_to_hf, hf_config_dict, save_model_checkpoint
from liquid_train.parallel import destroy_parallel, initialize_parallel
from liquid_train.testing.distributed import clean_env, command, run_distributed
from liquid_train.testing.runs import ensure_tiny_run_data, tiny_run_overrides, wait_for_step
from liquid_train.training import data_adapter, load_config
from liquid_train.training.checkpoint import CheckpointError
from liquid_train.training.config import ConfigError, validate
from liquid_train.training.deepspeed_module import export_to_hf
from liquid_train.training.preflight import preflight
from liquid_train.vocab import LiquidVocab
from tools.convert_checkpoint import main as convert_main

DRIVER = "liquid_train.testing.train_driver"
ZERO_TOL = 1e-5
"""ZeRO-3 x 2 vs 1 process: same math, other reduction order (fp32)."""
ENGINE_TOL = 1e-6
"""megatron vs HF+DeepSpeed: other kernels (fused QKV, attention), same math (fp32, 20 steps of AdamW; measured
7.3e-08 worst)."""
DS = ["engine=deepspeed", "deepspeed.zero_stage=3"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return ensure_tiny_run_data(str(tmp_path_factory.mktemp("ds") / "tiny_data"))


def _records(run_dir, kind="train"):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if r["kind"] == kind]


def _train(data, run_dir, overrides, nproc=1):
    run_distributed(DRIVER, ["--data", data.root, f"run_dir={run_dir}", *overrides], nproc=nproc, timeout=300)
    return _records(run_dir)


@pytest.mark.parametrize("family", ["qwen2.5", "gemma2"])
def test_packed_rows_equal_each_sample_alone(tmp_path, data, family):
    cfg = load_config(overrides=tiny_run_overrides(data, family) + [f"run_dir={tmp_path}",
                                                                    "train.micro_batch_size=4"])
    vocab = LiquidVocab.load(data.vocab)
    initialize_parallel(1, 1, seed=3)
    try:
        arch = arch_from_run_config(cfg.model)
        batch = next(data_adapter.build(cfg, vocab).train_iterator(0, 4, 0, 1))
    finally:
        destroy_parallel()
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**hf_config_dict(arch, vocab)),
                                             dtype=torch.float32).eval()  # transformers' choice: sdpa, else eager
    with torch.no_grad():
        packed = model(**hf_inputs(batch, model.config, torch.float32, "cpu")).logits.reshape(-1, vocab.vocab_size)
        cu = batch["packed_seq_params"].cu_seqlens_q.tolist()
        flat = batch["tokens"].reshape(-1)
        checked = 0
        for lo, hi in zip(cu[:-1], cu[1:]):
            alone = model(input_ids=flat[lo:hi][None], use_cache=False).logits[0]
            torch.testing.assert_close(packed[lo:hi], alone, rtol=1e-5, atol=1e-5)
            checked += 1
    assert checked >= 5 and len(cu) - 1 == checked  # several segments, every one checked
    if family == "gemma2":
        assert arch.sliding_window is not None and any(h - lo > arch.sliding_window for lo, h in zip(cu, cu[1:]))


def test_zero3_two_processes_equal_one(tmp_path, data):
    common = DS + ["train.iters=6", "checkpoint.save_interval=0", "checkpoint.save_at_end=false"]
    one = _train(data, tmp_path / "one", common)
    two = _train(data, tmp_path / "two", common, nproc=2)
    assert [r["step"] for r in two] == list(range(1, 7))
    for a, b in zip(one, two):
        for key in ("loss", "loss/text", "loss/t2i", "loss/i2t", "grad_norm", "z_loss"):
            assert b[key] == pytest.approx(a[key], rel=ZERO_TOL), (a["step"], key)
        assert a["lr"] == b["lr"] and a["tokens/t2i"] == b["tokens/t2i"] and a["samples/text"] == b["samples/text"]
    assert one[-1]["loss"] < one[0]["loss"]


def test_deepspeed_equals_megatron_from_the_same_weights(tmp_path, data):
    cfg = load_config(overrides=tiny_run_overrides(data) + [f"run_dir={tmp_path}"])
    vocab = LiquidVocab.load(data.vocab)
    initialize_parallel(1, 1, seed=1234)
    try:
        model = build_from_run_config(cfg, vocab)()
        arch = arch_from_run_config(cfg.model)
        save_model_checkpoint(model, str(tmp_path / "init_megatron"), vocab, arch)
        export_model_to_hf(model, arch, vocab, str(tmp_path / "init_hf"))
    finally:
        destroy_parallel()
    common = ["train.iters=20", "checkpoint.save_interval=0", "checkpoint.save_at_end=false"]
    meg = _train(data, tmp_path / "megatron", common + [f"model.init_from={tmp_path / 'init_megatron'}"])
    ds = _train(data, tmp_path / "deepspeed", common + DS + [f"model.init_from={tmp_path / 'init_hf'}"])
    assert len(meg) == len(ds) == 20
    worst = max(abs(a["loss"] - b["loss"]) / a["loss"] for a, b in zip(meg, ds))
    print(f"megatron vs deepspeed: worst relative loss difference over 20 steps {worst:.2e}")
    for a, b in zip(meg, ds):
        assert b["loss"] == pytest.approx(a["loss"], rel=ENGINE_TOL), a["step"]
        for task in ("text", "t2i", "i2t"):
            assert b[f"tokens/{task}"] == a[f"tokens/{task}"] and b[f"samples/{task}"] == a[f"samples/{task}"]
        assert b["lr"] == pytest.approx(a["lr"], rel=1e-12)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=10 * ENGINE_TOL)
        assert b["z_loss"] == pytest.approx(a["z_loss"], rel=ENGINE_TOL)
    assert meg[-1]["loss"] < meg[0]["loss"] - 0.1  # it trained, so agreement is not two flat curves



def test_kill9_and_resume_is_bitwise(tmp_path, data):
    common = DS + ["train.iters=10", "checkpoint.save_interval=5", "checkpoint.keep_last=1", "--data", data.root]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    ref = _train(data, straight, DS + ["train.iters=10", "checkpoint.save_interval=5"])

    def launch():
        return subprocess.Popen(command(DRIVER, [f"run_dir={killed}", *common]), env=clean_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    victim = launch()
    wait_for_step(victim, killed, 7)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    with open(killed / "checkpoints" / "latest") as f:
        assert f.read().strip() == "iter_0000005"
    out, _ = (again := launch()).communicate(timeout=300)
    assert again.returncode == 0, out[-3000:]
    got = _records(killed)
    assert [r["step"] for r in got] == list(range(1, 11))
    for a, b in zip(ref, got):
        for key in ("loss", "loss/text", "loss/t2i", "loss/i2t", "grad_norm", "lr", "z_loss", "consumed_samples"):
            assert a[key] == b[key], (a["step"], key, a[key], b[key])
    assert sorted(n for n in os.listdir(killed / "checkpoints") if n.startswith("iter_")) == ["iter_0000010"]
    assert (killed / "checkpoints" / "iter_0000010" / "manifest.json").exists()


@pytest.mark.parametrize("override, key", [
    ("engine=jax", "engine"), ("deepspeed.zero_stage=4", "deepspeed.zero_stage"),
    ("deepspeed.offload_param=cpu", "deepspeed.offload_param"),  # needs stage 3
    ("parallel.tensor_parallel=2", "parallel.tensor_parallel"), ("model.precision=fp8", "model.precision"),
    ("deepspeed.offload_optimizer=nvme", "deepspeed.offload_optimizer"),
])
def test_bad_deepspeed_configs_name_the_key(tmp_path, data, override, key):
    extra = ["engine=deepspeed", "deepspeed.zero_stage=2"] if override != "engine=jax" else []
    cfg = load_config(overrides=tiny_run_overrides(data) + [f"run_dir={tmp_path}", *extra, override])
    with pytest.raises(ConfigError) as err:
        validate(cfg, world_size=2)
    assert err.value.key == key and "\n" not in str(err.value)


def test_deepspeed_that_cannot_be_imported_is_one_error_naming_engine(tmp_path, data, monkeypatch):
    monkeypatch.setitem(sys.modules, "deepspeed", None)  # as if it were not installed
    cfg = load_config(overrides=tiny_run_overrides(data) + [f"run_dir={tmp_path}", "engine=deepspeed"])
    with pytest.raises(ConfigError) as err:
        preflight(cfg, world_size=1)
    assert err.value.key == "engine" and "--no-build-isolation" in str(err.value) and "\n" not in str(err.value)


def test_export_is_save_pretrained_of_the_consolidated_weights(tmp_path, data):
    run_dir = tmp_path / "run"
    _train(data, run_dir, DS + ["train.iters=2", "schedule.warmup_steps=1"])
    out = tmp_path / "hf"
    assert convert_main(["deepspeed-to-hf", "--ckpt", str(run_dir), "--out", str(out)]) == 0  # the CLI: latest
    with pytest.raises(CheckpointError):  # a megatron checkpoint (or anything else) is refused in one line
        export_to_hf(str(tmp_path), str(tmp_path / "nothing"))
    model = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32)
    assert model.config.vocab_size == LiquidVocab.load(str(out)).vocab_size
    state = torch.load(run_dir / "checkpoints" / "iter_0000002" / "state" / "zero_pp_rank_0_mp_rank_00_optim_states.pt",
                       weights_only=False)
    assert state  # the ZeRO-3 optimizer shards the export consolidated
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    assert torch.isfinite(logits).all() and logits.shape[-1] == model.config.vocab_size
