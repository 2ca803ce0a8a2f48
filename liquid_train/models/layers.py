"""Small modules plugged into megatron-core's local layer spec for what 0.16.1 lacks.

* :class:`LiquidRMSNorm`: torch's RMSNorm with megatron's norm signature whose weight is marked
  ``sequence_parallel`` under sequence parallelism (megatron then all-reduces its gradient over the TP group);
  megatron's own torch-norm wrapper refuses sequence parallelism outright.
* :class:`RowParallelLinearWithPostNorm`: megatron's RowParallelLinear followed by an RMSNorm: Gemma 2's
  post-attention / post-feedforward norms sit exactly there (before the residual add). Under sequence parallelism
  the linear's output is already the reduce-scattered sequence shard, so the norm is per-token and exact.

Core attention lives in :mod:`liquid_train.models.attention`.
"""
from __future__ import annotations

import torch
from megatron.core.tensor_parallel.layers import RowParallelLinear


class LiquidRMSNorm(torch.nn.RMSNorm):
    def __init__(self, config, hidden_size: int, eps: float = 1e-5, **unused):
        super().__init__(hidden_size, eps=eps, dtype=config.params_dtype)
        setattr(self.weight, "sequence_parallel", bool(config.sequence_parallel))


class RowParallelLinearWithPostNorm(RowParallelLinear):
    """RowParallelLinear whose (all-reduced) output goes through an RMSNorm: Gemma 2's post-norms."""

    def __init__(self, input_size, output_size, *, config, **kwargs):
        super().__init__(input_size, output_size, config=config, **kwargs)
        self.post_norm = torch.nn.RMSNorm(output_size, eps=config.layernorm_epsilon, dtype=config.params_dtype)
        setattr(self.post_norm.weight, "sequence_parallel", config.sequence_parallel)

    def forward(self, input_, *args, **kwargs):
        output, bias = super().forward(input_, *args, **kwargs)
        return self.post_norm(output), bias
