"""Memory and throughput model for one (architecture, parallel layout, cluster) choice.

WHY: a 32B run that OOMs after a 20-minute queue wait and a 2-hour warm-up is the expensive way to learn a layout
does not fit. The planner computes, per GPU of the busiest pipeline stage:

* weights (bf16, 2 B/param), gradients (fp32 main grads, 4 B/param) and Adam state (fp32 master + m + v,
  12 B/param) sharded over data-parallel ranks by the distributed optimizer (Megatron: 6 + 12/DP bytes/param);
* activations by Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large Transformer Models"):
  per layer ``s*b*h*(34 + 5*a*s/h)`` bytes for an MHA, 4h-GELU, dropout layer, divided by TP with sequence
  parallelism; we use the same term-by-term breakdown generalised to GQA, gated MLPs and no dropout. Selective
  recompute drops the ``a*s^2`` terms; full recompute keeps only each layer's input (``2*s*b*h/TP``) plus one
  layer's working set. The first pipeline stage holds PP micro-batches in flight (1F1B), times
  ``1 + (PP-1)/(PP*VPP)`` with interleaving;
* the output layer's fp32 logits for the vocab-parallel cross entropy (large for 152k-256k vocabularies).

FLOPs per token follow Megatron's convention (Narayanan et al. 2021): 6 x (matmul params incl. output layer)
+ 12 * L * s * (heads*head_dim) for attention scores and values (no causal discount), x 4/3 under full recompute
for hardware FLOPs. MFU is always relative to the dense BF16 peak.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

GiB = 1024 ** 3

GPU_SPECS: Dict[str, Dict[str, float]] = {
    # memory in bytes (nvidia-smi total), dense peaks in FLOP/s (anchors.md)
    "h100-80gb": {"memory": 79.6 * GiB, "bf16_peak": 989e12, "fp8_peak": 1979e12},
    "h200-141gb": {"memory": 139.8 * GiB, "bf16_peak": 989e12, "fp8_peak": 1979e12},
    "a100-80gb": {"memory": 79.2 * GiB, "bf16_peak": 312e12, "fp8_peak": 312e12},
}


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
    fp8: bool = False
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
class ParamCounts:
    embedding: int
    output: int  # 0 when tied
    per_layer: int
    final_norm: int
    num_layers: int

    @property
    def non_embedding(self) -> int:
        return self.per_layer * self.num_layers + self.final_norm

    @property
    def total(self) -> int:
        return self.embedding + self.output + self.non_embedding


def _arch_get(arch, name, default=None):
    return getattr(arch, name, default)


def count_params(arch, vocab_rows: Optional[int] = None) -> ParamCounts:
    """Exact parameter count of a decoder from its registry ``ModelArch`` (HF convention: tied output counted once)."""
    h, L, f = arch.hidden_size, arch.num_layers, arch.ffn_hidden_size
    d = arch.head_dim or h // arch.num_attention_heads
    q, kv = arch.num_attention_heads * d, arch.num_query_groups * d
    attn = h * q + 2 * h * kv + q * h + (q + 2 * kv if arch.qkv_bias else 0)
    mlp = (3 if arch.activation in ("swiglu", "geglu") else 2) * h * f
    norms = (4 if arch.post_norms else 2) * h
    rows = vocab_rows if vocab_rows is not None else arch.vocab_size
    emb = rows * h
    return ParamCounts(embedding=emb, output=0 if arch.tie_embeddings else emb, per_layer=attn + mlp + norms,
                       final_norm=h, num_layers=L)


def flops_per_token(arch, seq_length: int, vocab_rows: int, full_recompute: bool = False) -> Dict[str, float]:
    """Training FLOPs per token: model FLOPs (for MFU) and hardware FLOPs (incl. recompute)."""
    pc = count_params(arch, vocab_rows)
    d = arch.head_dim or arch.hidden_size // arch.num_attention_heads
    matmul = pc.non_embedding - pc.final_norm - pc.num_layers * ((4 if arch.post_norms else 2) * arch.hidden_size)
    dense = 6 * (matmul + vocab_rows * arch.hidden_size)
    attention = 12 * arch.num_layers * seq_length * arch.num_attention_heads * d
    model = dense + attention
    hardware = model * (4 / 3 if full_recompute else 1.0)
    return {"model": float(model), "hardware": float(hardware), "dense": float(dense), "attention": float(attention)}


def activation_bytes_per_layer(s: int, b: int, h: int, a: int, *, head_dim: Optional[int] = None,
                               kv_heads: Optional[int] = None, ffn: Optional[int] = None, gated: bool = False,
                               dropout: bool = False, tp: int = 1, sequence_parallel: bool = True,
                               recompute: str = "none") -> float:
    """Korthikanti et al. 2022, term by term (bf16 activations, 1-byte dropout masks).

    With ``kv_heads=a``, ``ffn=4h``, ``gated=False``, ``dropout=True``, ``tp=1`` this is exactly
    ``s*b*h*(34 + 5*a*s/h)``.
    """
    d = head_dim or h // a
    g = kv_heads or a
    f = ffn or 4 * h
    q_w, kv_w = a * d, g * d
    sbh = s * b * h
    # Inputs of QKV and fc1, the two norms' inputs and the two dropout masks live in the sequence-parallel region
    # (replicated across TP ranks without sequence parallelism); everything else is split over heads / ffn columns.
    seq_region = 2 * sbh + 2 * sbh + 2 * 2 * sbh + (2 * sbh if dropout else 0)
    # attention: Q and K for the scores, V for the context, context -> output projection
    head_region = 2 * s * b * q_w + 2 * 2 * s * b * kv_w + 2 * s * b * q_w
    # MLP: fc1 output(s) kept for the activation's backward, activation output (fc2 input)
    head_region += (2 * 2 * s * b * f if gated else 2 * s * b * f) + 2 * s * b * f
    attn_quadratic = (5 if dropout else 2) * a * s * s * b  # softmax out (2), dropout mask (1) + out (2)
    if recompute == "full":
        return 2 * sbh / (tp if sequence_parallel else 1)
    quad = 0 if recompute == "selective" else attn_quadratic
    return (head_region + quad) / tp + seq_region / (tp if sequence_parallel else 1)


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
            f" gbs {lo.global_batch_size}, seq {lo.seq_length}, recompute {lo.recompute}, fp8 {lo.fp8}",
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
    mult = 128 * tp
    padded = (rows + mult - 1) // mult * mult
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
    bytes_weights = 2.0 * stage_params
    bytes_grads = 4.0 * stage_params
    bytes_optim = 12.0 * stage_params / (dp if lo.use_distributed_optimizer else 1)

    s, b, h = lo.seq_length, lo.micro_batch_size, arch.hidden_size
    gated = arch.activation in ("swiglu", "geglu")
    act_layer = activation_bytes_per_layer(s, b, h, arch.num_attention_heads, head_dim=arch.head_dim,
                                           kv_heads=arch.num_query_groups, ffn=arch.ffn_hidden_size, gated=gated,
                                           dropout=False, tp=tp, sequence_parallel=lo.sequence_parallel and tp > 1,
                                           recompute=lo.recompute)
    in_flight = min(pp, num_micro) * (1 + (pp - 1) / (pp * vpp) if vpp > 1 else 1)
    act = act_layer * layers_per_stage * in_flight
    if lo.recompute == "full":  # one layer is re-materialised in full during its backward
        act += activation_bytes_per_layer(s, b, h, arch.num_attention_heads, head_dim=arch.head_dim,
                                          kv_heads=arch.num_query_groups, ffn=arch.ffn_hidden_size, gated=gated,
                                          tp=tp, sequence_parallel=lo.sequence_parallel and tp > 1,
                                          recompute="selective")
    logits = 4.0 * s * b * padded / tp * 2  # fp32 logits + their gradient on the last stage
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
    tps = lo.assumed_mfu * spec["bf16_peak"] / fl["model"]
    return PlanResult(family=arch.family, size=arch.size, layout=lo, params_total=true_pc.total,
                      params_non_embedding=true_pc.non_embedding, vocab_rows=rows, memory_gib=mem,
                      flops_per_token=fl, tokens_per_s_per_gpu=tps, tokens_per_day=tps * lo.world_size * 86400,
                      fits=not problems, problems=problems)
