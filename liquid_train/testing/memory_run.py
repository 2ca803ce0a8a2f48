"""``python -m liquid_train.testing.memory_run DIR``: one process trains a small model on CPU for a few steps and
prints (as JSON) its measured peak memory next to the planner's prediction for the same model and layout.

Measured: the model's weights (its parameter and buffer storages, alive throughout) plus the peak of live tensor
bytes from the trainer's build to the end of the third step (fp32 gradient buffers, Adam state, activations and the
backward's temporaries), counted by ``memory_probe.LiveTensorBytes``, a dispatch mode that adds every new tensor
storage and subtracts it when it is freed. So the number is the tensors' own and the same on every machine. It used
to be the growth of the process's peak RSS, which also counts what the C libraries allocate and keep, and left the
weights out: one CI machine measured 857 MiB where the dev box measures 1052. Predicted:
:func:`liquid_train.planning.plan` with the kernels of the built model (``accounting.kernels_of``), fp32, the plain
(non-distributed) optimizer, no reserve.
"""
from __future__ import annotations

import json
import os
import sys

import torch

from liquid_train.accounting import kernels_of
from liquid_train.parallel import destroy_parallel, initialize_parallel
from liquid_train.planning.planner import Layout, plan
from liquid_train.testing.runs import ensure_tiny_run_data, tiny_run_overrides
from liquid_train.training import load_config
from liquid_train.training import data_adapter
from liquid_train.training.memory_probe import LiveTensorBytes, storage_bytes
from liquid_train.training.providers import default_model_provider
from liquid_train.training.train_module import TrainModule

SHAPE = dict(hidden_size=512, num_layers=8, ffn_hidden_size=2048, num_attention_heads=8, num_query_groups=4,
             head_dim=64)
SEQ, BATCH = 256, 4


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
        with LiveTensorBytes() as live:
            module = TrainModule(cfg, model)
            for _ in range(3):
                module.train_step([batch])
        built = [chunk.module for chunk in module.model]  # inside megatron's DDP, whose ``buffers`` is a list
        measured = storage_bytes(t for m in built for t in [*m.parameters(), *m.buffers()]) + live.peak
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
