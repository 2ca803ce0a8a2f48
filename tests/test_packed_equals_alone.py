"""A packed micro-batch is exactly its samples run alone: loss and gradients through the trainer's own step (``TrainModule``)
(megatron's schedule, THD ``PackedSeqParams``, the run config's build path), for all four families, fp32.

The oracle is each attention segment of the packed micro-batch as a micro-batch of its own: the summed loss and the
token-weighted sum of its gradients must equal the packed ones. Any cross-sample attention (a mask that leaks, a
backend that ignores ``cu_seqlens``) breaks it. Gemma 2's window (4) is shorter than the samples, so its sliding-
window layers are exercised inside segments too.
"""
from __future__ import annotations

import dataclasses

import pytest
import torch
from megatron.core.packed_seq_params import PackedSeqParams

from liquid_train.parallel import destroy_parallel, initialize_parallel
from liquid_train.testing.runs import ensure_tiny_run_data, tiny_run_overrides
from liquid_train.training import load_config
from liquid_train.training.loss import STAT_NAMES
from liquid_train.training import data_adapter
from liquid_train.training.providers import default_model_provider
from liquid_train.training.train_module import TrainModule

FAMILIES = ("qwen2.5", "llama3.2", "gemma2", "gemma")
CE, TOKENS = STAT_NAMES.index("ce"), STAT_NAMES.index("tokens")
TOL = 1e-5  # relative, fp32


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return ensure_tiny_run_data(str(tmp_path_factory.mktemp("packed") / "tiny_data"))


def _segments(batch):
    """Each attention segment of a packed micro-batch as a one-row micro-batch of its own."""
    cu = batch["packed_seq_params"].cu_seqlens_q.tolist()
    flat = {k: v.reshape(-1) for k, v in batch.items() if torch.is_tensor(v)}
    for lo, hi in zip(cu[:-1], cu[1:]):
        if flat["loss_mask"][lo:hi].sum() == 0:
            continue  # padding, or a segment without loss tokens: contributes nothing
        one = {k: v[lo:hi][None].clone() for k, v in flat.items()}
        n = hi - lo
        cu1 = torch.tensor([0, n], dtype=torch.int32)
        one["packed_seq_params"] = PackedSeqParams(qkv_format="thd", cu_seqlens_q=cu1, cu_seqlens_kv=cu1,
                                                   max_seqlen_q=n, max_seqlen_kv=n)
        yield one


def _grads(module):
    return torch.cat([p.main_grad.detach().reshape(-1).clone() for chunk in module.model
                      for p in chunk.parameters() if p.requires_grad])


@pytest.mark.parametrize("family", FAMILIES)
def test_packed_micro_batch_equals_its_samples_alone(tmp_path, data, family):
    cfg = load_config(overrides=tiny_run_overrides(data, family) + [f"run_dir={tmp_path}",
                                                                    "train.micro_batch_size=4"])
    initialize_parallel(1, 1, seed=3)
    try:
        model = default_model_provider(cfg)
        module = TrainModule(cfg, model)
        batch = next(data_adapter.build(cfg, model.vocab).train_iterator(0, 4, 0, 1))
        segments = list(_segments(batch))
        assert len(segments) >= 4, "the packed micro-batch should hold several samples"

        for chunk in module.model:
            chunk.zero_grad_buffer()
        packed = module.forward_backward([batch])
        packed_grad = _grads(module) * packed[TOKENS]

        total = torch.zeros_like(packed)
        alone_grad = torch.zeros_like(packed_grad)
        for one in segments:
            for chunk in module.model:
                chunk.zero_grad_buffer()
            stats = module.forward_backward([one])
            total += stats
            alone_grad += _grads(module) * stats[TOKENS]
    finally:
        destroy_parallel()
    assert packed[TOKENS] == total[TOKENS] > 0
    assert abs(float(packed[CE] - total[CE])) <= TOL * float(total[CE]), (family, packed[CE], total[CE])
    scale = float(alone_grad.abs().max())
    assert scale > 0
    assert float((packed_grad - alone_grad).abs().max()) <= TOL * scale, family


def test_cross_sample_attention_would_be_caught(tmp_path, data):
    """The oracle has teeth: treating the packed rows as one causal stream (one segment) moves the loss of even a
    freshly initialised model (near-uniform attention) well past the tolerance above."""
    cfg = load_config(overrides=tiny_run_overrides(data, "qwen2.5") + [f"run_dir={tmp_path}"])
    initialize_parallel(1, 1, seed=3)
    try:
        model = default_model_provider(cfg)
        module = TrainModule(cfg, model)
        batch = next(data_adapter.build(cfg, model.vocab).train_iterator(0, 2, 0, 1))
        t = batch["tokens"].numel()
        cu = torch.tensor([0, t], dtype=torch.int32)
        leaky = dict(batch, packed_seq_params=dataclasses.replace(batch["packed_seq_params"], cu_seqlens_q=cu,
                                                                  cu_seqlens_kv=cu, max_seqlen_q=t,
                                                                  max_seqlen_kv=t))
        right = module.forward_backward([batch], forward_only=True)
        wrong = module.forward_backward([leaky], forward_only=True)
    finally:
        destroy_parallel()
    assert abs(float(right[CE] - wrong[CE])) > 3 * TOL * float(right[CE])
