"""Parallel-layout planning: parameter counts, per-GPU memory, FLOPs per token, throughput at an assumed MFU."""
from liquid_train.planning.planner import (GPU_SPECS, Layout, PlanResult, count_params, flops_per_token,
                                          activation_bytes_per_layer, plan)

__all__ = ["GPU_SPECS", "Layout", "PlanResult", "count_params", "flops_per_token", "activation_bytes_per_layer",
           "plan"]
