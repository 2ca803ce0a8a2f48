"""Parallel layouts through the Trainer on the real thing: the project's four families (Gemma 2's soft-caps,
sliding window and post-norms included) on packed mixed-task data, as megatron THD micro-batches. TP=2, TP=2 with
sequence parallelism, PP=2 (1F1B), PP=2 x VPP=2 (interleaved) and DP=2, each on two gloo processes, follow the
single-process loss curve step by step from the same TP=1 initial weights (which also exercises loading a dist
checkpoint at another layout). The single-process run is the oracle.
"""
from __future__ import annotations

import json
import os

import pytest

from liquid_train.testing.distributed import run_distributed

DRIVER = "liquid_train.testing.train_driver"
FAMILIES = ("qwen2.5", "llama3.2", "gemma2", "gemma")
STEPS = 6
COMMON = [f"train.iters={STEPS}", "checkpoint.save_at_end=false", "model.arch.num_layers=4"]
LAYOUTS = {
    "tp2": ["parallel.tensor_parallel=2"],
    "tp2_sp": ["parallel.tensor_parallel=2", "parallel.sequence_parallel=true"],
    "pp2_1f1b": ["parallel.pipeline_parallel=2"],
    "pp2_interleaved": ["parallel.pipeline_parallel=2", "parallel.virtual_pipeline_parallel=2"],
    "dp2": [],
}


def _records(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if r["kind"] == "train"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("parallel")
    families = ",".join(FAMILIES)
    init = str(root / "init")
    run_distributed(DRIVER, ["--save-init", init, "--families", families, *COMMON])
    run_distributed(DRIVER, ["--families", families, "--init-root", init, f"run_dir={root / 'ref'}", *COMMON])
    return root, init, {f: _records(str(root / "ref" / f)) for f in FAMILIES}


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_two_process_layout_matches_single_process(reference, layout):
    root, init, ref = reference
    run_dir = root / layout
    run_distributed(DRIVER, ["--families", ",".join(FAMILIES), "--init-root", init, f"run_dir={run_dir}", *COMMON,
                             *LAYOUTS[layout]], nproc=2)
    for family in FAMILIES:
        recs = _records(str(run_dir / family))
        assert [r["step"] for r in recs] == list(range(1, STEPS + 1)), family
        for a, b in zip(ref[family], recs):
            assert abs(a["loss"] - b["loss"]) <= 1e-4 * abs(a["loss"]), (layout, family, a["step"], a["loss"],
                                                                        b["loss"])
            assert abs(a["grad_norm"] - b["grad_norm"]) <= 1e-3 * a["grad_norm"], (layout, family, a["step"])
            for key in ("tokens/text", "tokens/t2i", "tokens/i2t", "consumed_samples"):
                assert a[key] == b[key], (layout, family, key)
        assert ref[family][-1]["loss"] < ref[family][0]["loss"], family  # and it is training
