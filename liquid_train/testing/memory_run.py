"""``python -m liquid_train.testing.memory_run DIR``: one process trains a small model on CPU for a few steps and
prints (as JSON) its measured peak memory next to the planner's prediction for the same model and layout.

Measured: the process's peak RSS from just before the trainer is built to the end of the third step, less its RSS
at that start (weights, fp32 gradient buffers, Adam state, activations). The kernel's high-water mark is reset at
the start (``/proc/self/clear_refs``) because ``ru_maxrss`` only grows: a transient peak from an earlier stage
(data set-up, model init) would hide part of the growth; that is the likely cause of one CI run measuring 857 MiB
where the dev box measures 1052 (not reproduced here). Run with ``MALLOC_MMAP_THRESHOLD_`` set low so freed
buffers go back to the system: glibc's heap otherwise keeps them, and RSS would measure the allocator's history
instead of live memory. Predicted: :func:`liquid_train.planning.plan` with the kernels of the built model
(``accounting.kernels_of``), fp32, the plain (non-distributed) optimizer, no reserve.
"""
from __future__ import annotations

import json
import os
import re
import sys

import torch

from liquid_train.accounting import kernels_of
from liquid_train.parallel import destroy_parallel, initialize_parallel
from liquid_train.planning.planner import Layout, plan
from liquid_train.testing.runs import ensure_tiny_run_data, tiny_run_overrides
from liquid_train.training import load_config
from liquid_train.training import data_adapter
from liquid_train.training.providers import default_model_provider
from liquid_train.training.train_module import TrainModule

SHAPE = dict(hidden_size=512, num_layers=8, ffn_hidden_size=2048, num_attention_heads=8, num_query_groups=4,
             head_dim=64)
SEQ, BATCH = 256, 4


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        return int(re.search(rf"^{field}:\s+(\d+) kB", status.read(), re.M).group(1))


def reset_peak_rss() -> int:
    """Reset the kernel's peak-RSS mark to the current RSS and return that RSS in bytes (Linux 4.0+)."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError as error:
        raise SystemExit(f"memory_run: cannot reset the peak RSS through /proc/self/clear_refs ({error}); "
                         "run on Linux 4.0 or newer with a writable /proc") from error
    return _status_kib("VmRSS") * 1024


def peak_rss() -> int:
    return _status_kib("VmHWM") * 1024


def main(root: str) -> dict:
    torch.set_num_threads(1)
    data = ensure_tiny_run_data(os.path.join(root, "tiny_data"))
    overrides = tiny_run_overrides(data) + [f"run_dir={root}/run", f"train.micro_batch_size={BATCH}",
                                            f"train.global_batch_size={BATCH}", f"data.seq_length={SEQ}"]
    cfg = load_config(overrides=overrides + [f"model.arch.{k}={v}" for k, v in SHAPE.items()])
    initialize_parallel(1, 1)
    try:
        model = default_model_provider(cfg)
        batch = next(data_adapter.build(cfg, model.vocab).train_iterator(0, BATCH, 0, 1))
        base = reset_peak_rss()
        module = TrainModule(cfg, model)
        for _ in range(3):
            module.train_step([batch])
        measured = peak_rss() - base
        kernels = kernels_of(module.model[0].config)
    finally:
        destroy_parallel()
    layout = Layout(micro_batch_size=BATCH, global_batch_size=BATCH, seq_length=SEQ, recompute="none",
                    precision="fp32", use_distributed_optimizer=False, nodes=1, gpus_per_node=1, reserve_gib=0.0,
                    kernels=kernels)
    result = plan(model.arch, layout, model.vocab.vocab_size)
    return {"measured_bytes": measured, "predicted_bytes": result.memory_gib["total"] * 2**30,
            "predicted_gib": result.memory_gib}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
