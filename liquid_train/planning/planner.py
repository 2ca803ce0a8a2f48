"""Memory and throughput model for one (architecture, parallel layout, cluster) choice.

WHY: a 32B run that OOMs after a 20-minute queue wait and a 2-hour warm-up is the expensive way to learn a layout
does not fit. The planner adds up, per GPU of the busiest pipeline stage, the numbers of
:mod:`liquid_train.accounting` (the one home of parameter counts, FLOPs, activation and state memory and GPU peaks):
weights, fp32 gradients and Adam state (sharded over data-parallel ranks by the distributed optimizer); activations
per layer times the micro-batches in flight (1F1B: PP on the first stage, times ``1 + (PP-1)/(PP*VPP)`` with
interleaving), divided by TP with sequence parallelism, with selective / full recompute; and the last stage's
logits. Throughput is the assumed MFU times the GPU's dense peak over the model FLOPs per token.
"""
from __future__ import annotations

import dataclasses
import itertools
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from omegaconf import OmegaConf

from liquid_train.accounting import (GPU_SPECS, GiB, Kernels, activation_bytes_per_layer, count_params, flops_per_token,
                                     logits_bytes, peak_flops, state_bytes_per_param)
from liquid_train.models.families import ModelArch, get_model_arch
from liquid_train.models.vocab_extension import plan_vocab
from liquid_train.vocab import padded_rows

@dataclass
class Layout:
    """A parallel layout plus the cluster it runs on (fields mirror the trainer's ``parallel``/``train`` keys)."""
    tensor_parallel: int = 1
    pipeline_parallel: int = 1
    virtual_pipeline_parallel: Optional[int] = None
    micro_batch_size: int = 1
    global_batch_size: int = 1024
    seq_length: int = 2048
    recompute: str = "selective"  # none | selective | full
    precision: str = "bf16"  # bf16 | fp8 | fp32 (fp8 keeps bf16 weights: same memory as bf16)
    kernels: Kernels = field(default_factory=Kernels)
    """What the kernels keep for backward (``accounting.kernels_of`` of the built model; default: GPU kernels)."""
    sequence_parallel: bool = True
    use_distributed_optimizer: bool = True
    nodes: int = 1
    gpus_per_node: int = 8
    gpu: str = "h100-80gb"
    assumed_mfu: float = 0.40
    reserve_gib: float = 6.0  # CUDA context, NCCL buffers, allocator fragmentation

    @property
    def world_size(self) -> int:
        return self.nodes * self.gpus_per_node

    @property
    def data_parallel(self) -> int:
        return self.world_size // (self.tensor_parallel * self.pipeline_parallel)


@dataclass
class PlanResult:
    family: str
    size: str
    layout: Layout
    params_total: int
    params_non_embedding: int
    vocab_rows: int
    memory_gib: Dict[str, float] = field(default_factory=dict)
    flops_per_token: Dict[str, float] = field(default_factory=dict)
    tokens_per_s_per_gpu: float = 0.0
    tokens_per_day: float = 0.0
    fits: bool = True
    problems: List[str] = field(default_factory=list)

    def report(self) -> str:
        lo = self.layout
        lines = [
            f"{self.family} {self.size}: {self.params_total / 1e9:.3f}B params "
            f"({self.params_non_embedding / 1e9:.3f}B non-embedding), vocab rows {self.vocab_rows}",
            f"layout: {lo.nodes}x{lo.gpus_per_node} {lo.gpu}, TP{lo.tensor_parallel} PP{lo.pipeline_parallel}"
            f" VPP{lo.virtual_pipeline_parallel or 1} DP{lo.data_parallel}, mbs {lo.micro_batch_size},"
            f" gbs {lo.global_batch_size}, seq {lo.seq_length}, recompute {lo.recompute}, {lo.precision}",
            "per-GPU memory (GiB, busiest stage): " + ", ".join(f"{k} {v:.2f}" for k, v in self.memory_gib.items()),
            f"FLOPs/token: model {self.flops_per_token['model']:.3e}, hardware {self.flops_per_token['hardware']:.3e}",
            f"throughput at MFU {lo.assumed_mfu:.2f}: {self.tokens_per_s_per_gpu:,.0f} tokens/s/GPU, "
            f"{self.tokens_per_day / 1e9:,.2f}B tokens/day on {lo.world_size} GPUs",
            "FITS" if self.fits else "DOES NOT FIT: " + "; ".join(self.problems),
        ]
        return "\n".join(lines)


def plan(arch, layout: Layout, vocab_rows: Optional[int] = None) -> PlanResult:
    """Plan ``arch`` (registry ModelArch) at ``layout``. ``vocab_rows`` = real rows after image-code extension;
    the embedding/output are padded to a multiple of 128*TP as the model builder does."""
    lo = layout
    tp, pp, vpp = lo.tensor_parallel, lo.pipeline_parallel, lo.virtual_pipeline_parallel or 1
    problems: List[str] = []
    if lo.gpu not in GPU_SPECS:
        raise ValueError(f"unknown gpu {lo.gpu!r}; known: {sorted(GPU_SPECS)}")
    rows = vocab_rows or arch.vocab_size
    padded = padded_rows(rows, tp)
    pc = count_params(arch, padded)
    true_pc = count_params(arch, rows)
    if lo.world_size % (tp * pp):
        problems.append(f"world size {lo.world_size} is not divisible by TP*PP={tp * pp}")
    if arch.num_attention_heads % tp or arch.num_query_groups % tp:
        problems.append(f"TP={tp} does not divide heads {arch.num_attention_heads} / kv groups {arch.num_query_groups}")
    if arch.num_layers % (pp * vpp):
        problems.append(f"PP*VPP={pp * vpp} does not divide {arch.num_layers} layers")
    dp = max(lo.data_parallel, 1)
    if lo.global_batch_size % (lo.micro_batch_size * dp):
        problems.append(f"global batch {lo.global_batch_size} not divisible by micro-batch {lo.micro_batch_size} x DP {dp}")
    num_micro = max(lo.global_batch_size // max(lo.micro_batch_size * dp, 1), 1)
    if vpp > 1 and num_micro % pp:
        problems.append(f"interleaved schedule needs micro-batches ({num_micro}) divisible by PP={pp}")

    layers_per_stage = -(-arch.num_layers // pp)
    emb_stage = pc.embedding / tp  # first stage
    out_stage = (pc.output if pc.output else (pc.embedding if pp > 1 else 0)) / tp  # last stage (tied copy if PP>1)
    stage_params = layers_per_stage * pc.per_layer / tp + max(emb_stage + (out_stage if pp == 1 else 0),
                                                             out_stage + pc.final_norm)
    state = state_bytes_per_param(lo.precision, lo.use_distributed_optimizer, dp)
    bytes_weights = state["weights"] * stage_params
    bytes_grads = state["grads"] * stage_params
    bytes_optim = state["optimizer"] * stage_params
    value_bytes = 4 if lo.precision == "fp32" else 2

    s, b, h = lo.seq_length, lo.micro_batch_size, arch.hidden_size
    gated = arch.activation in ("swiglu", "geglu")
    act_layer = activation_bytes_per_layer(s, b, h, arch.num_attention_heads, head_dim=arch.head_dim,
                                           kv_heads=arch.num_query_groups, ffn=arch.ffn_hidden_size, gated=gated,
                                           dropout=False, tp=tp, sequence_parallel=lo.sequence_parallel and tp > 1,
                                           recompute=lo.recompute, bytes_per_value=value_bytes,
                                           post_norms=arch.post_norms, kernels=lo.kernels)
    in_flight = min(pp, num_micro) * (1 + (pp - 1) / (pp * vpp) if vpp > 1 else 1)
    act = act_layer * layers_per_stage * in_flight
    if lo.recompute == "full":  # one layer is re-materialised in full during its backward
        act += activation_bytes_per_layer(s, b, h, arch.num_attention_heads, head_dim=arch.head_dim,
                                          kv_heads=arch.num_query_groups, ffn=arch.ffn_hidden_size, gated=gated,
                                          tp=tp, sequence_parallel=lo.sequence_parallel and tp > 1,
                                          recompute="selective", bytes_per_value=value_bytes,
                                          post_norms=arch.post_norms, kernels=lo.kernels)
    logits = logits_bytes(s, b, padded, tp, value_bytes, softcapped=arch.final_logit_softcap is not None)
    if pp == 1:
        act += logits
    else:
        act = max(act, act_layer * layers_per_stage + logits)
    spec = GPU_SPECS[lo.gpu]
    mem = {"weights": bytes_weights / GiB, "grads": bytes_grads / GiB, "optimizer": bytes_optim / GiB,
           "activations": act / GiB, "reserve": lo.reserve_gib}
    mem["total"] = sum(mem.values())
    mem["capacity"] = spec["memory"] / GiB
    if mem["total"] > mem["capacity"]:
        problems.append(f"needs {mem['total']:.1f} GiB per GPU (weights {mem['weights']:.1f} + grads "
                        f"{mem['grads']:.1f} + optimizer {mem['optimizer']:.1f} + activations "
                        f"{mem['activations']:.1f} + reserve {lo.reserve_gib:.1f}) > {mem['capacity']:.1f} GiB")
    fl = flops_per_token(arch, s, padded, full_recompute=lo.recompute == "full")
    tps = lo.assumed_mfu * peak_flops(lo.gpu, lo.precision) / fl["model"]
    return PlanResult(family=arch.family, size=arch.size, layout=lo, params_total=true_pc.total,
                      params_non_embedding=true_pc.non_embedding, vocab_rows=rows, memory_gib=mem,
                      flops_per_token=fl, tokens_per_s_per_gpu=tps, tokens_per_day=tps * lo.world_size * 86400,
                      fits=not problems, problems=problems)


class PlanError(ValueError):
    """A model config the planner cannot read; the message names the file and key."""


def arch_and_rows(family: str, size: str, num_image_tokens: int = 8192) -> Tuple[ModelArch, int]:
    """The registry architecture and its vocabulary rows after adding the image codes (and the specials)."""
    arch = get_model_arch(family, size)
    return arch, plan_vocab(arch, num_image_tokens).vocab_size


def layout_from_config(path: str) -> Tuple[str, str, Layout]:
    """(family, size, Layout) of a model config: its ``model`` / ``parallel`` / ``train`` / ``data`` keys, as the
    trainer reads them (``model.precision``, ``model.recompute.granularity``), plus the cluster of ``plan``."""
    if not os.path.exists(path):
        raise PlanError(f"{path}: no such config")
    cfg = OmegaConf.load(path)
    model = cfg.get("model") or {}
    if not model.get("family") or not model.get("size"):
        raise PlanError(f"{path}: needs model.family and model.size")
    par, train, cluster = cfg.get("parallel") or {}, cfg.get("train") or {}, cfg.get("plan") or {}
    data = cfg.get("data") or {}
    known = {"nodes", "gpus_per_node", "gpu", "assumed_mfu", "reserve_gib"}
    bad = set(cluster.keys()) - known
    if bad:
        raise PlanError(f"{path}: unknown plan keys {sorted(bad)}; known: {sorted(known)} (precision and recompute "
                        f"are model.precision and model.recompute.granularity)")
    recompute = (model.get("recompute") or {}).get("granularity", "none")
    precision = model.get("precision", "bf16")
    lo = Layout(tensor_parallel=par.get("tensor_parallel", 1), pipeline_parallel=par.get("pipeline_parallel", 1),
                virtual_pipeline_parallel=par.get("virtual_pipeline_parallel", None),
                sequence_parallel=bool(par.get("sequence_parallel", True)),
                use_distributed_optimizer=bool(par.get("use_distributed_optimizer", True)),
                micro_batch_size=train.get("micro_batch_size", 1),
                global_batch_size=train.get("global_batch_size", 1024),
                seq_length=data.get("seq_length", 2048), recompute=recompute,
                precision="bf16" if precision == "auto" else precision, **OmegaConf.to_container(cluster))
    return str(model.family), str(model.size), lo


def search(arch: ModelArch, rows: int, base: Layout) -> Optional[PlanResult]:
    """Least model parallelism first (TP, then PP), then the largest micro-batch, then the least recompute."""
    for tp, pp in sorted(itertools.product([1, 2, 4, 8], [1, 2, 4, 8, 16]), key=lambda x: (x[0] * x[1], x[1])):
        for recompute in ("none", "selective", "full"):
            for mbs in (8, 4, 2, 1):
                lo = dataclasses.replace(base, tensor_parallel=tp, pipeline_parallel=pp, micro_batch_size=mbs,
                                         recompute=recompute, virtual_pipeline_parallel=None)
                if pp > 1 and arch.num_layers % (pp * 2) == 0 and pp < arch.num_layers:
                    lo = dataclasses.replace(lo, virtual_pipeline_parallel=2)
                result = plan(arch, lo, rows)
                if result.fits:
                    return result
    return None
