"""Parallel-layout planning: per-GPU memory, FLOPs per token, throughput at an assumed MFU (the numbers themselves
live in ``liquid_train.accounting``)."""
from liquid_train.planning.planner import Layout, PlanResult, plan

__all__ = ["Layout", "PlanResult", "plan"]
