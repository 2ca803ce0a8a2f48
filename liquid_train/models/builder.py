"""The one build path: (architecture, vocabulary, :class:`BuildOptions`) -> megatron ``TransformerConfig``, layer
spec and per-stage ``GPTModel``. The trainer, the HF converter, the planner's checks, the samplers, the benchmarks
and the tests all build models through :func:`build` (or :func:`build_from_run_config`, which reads a run config).

What the options decide, in one place and logged once at start (:meth:`ModelBuild.describe`):

* precision (fp32 / bf16 / fp16 / fp8 with the ``model.fp8`` recipe, :mod:`liquid_train.models.precision`);
* tensor / pipeline / virtual-pipeline sizes and sequence parallelism;
* activation recomputation (selective modules, or full with method and layer count);
* kernel fusions (:mod:`liquid_train.models.fusions`: ``auto`` = where the kernels exist, off on CPU);
* the attention backend (:func:`resolve_attention_backend`): Transformer Engine's layer spec (``te``), or megatron's
  local spec with our core attention (``local`` exact / ``flex`` FlexAttention, :mod:`liquid_train.models.attention`).
  Every backend takes packed micro-batches as megatron's ``PackedSeqParams`` (THD).

Anything asked for that cannot run here (TE, FP8, a fused kernel, FlexAttention's backward on CPU) is a
``ValueError`` naming the setting, never a quiet switch to something else.

Gemma pieces that megatron lacks are small modules (post-norm linear, an SP-aware RMSNorm) and forward hooks on
GPTModel submodules: sqrt(hidden) embedding scaling, final logit soft-capping and masking of the TP padding rows of
the vocabulary (``-inf`` logits, so no probability mass ever reaches them).
"""
from __future__ import annotations

import copy
import functools
import logging
import math
from dataclasses import asdict, dataclass, replace
from typing import Dict, List, Optional, Union

import torch
import torch.nn.functional as F
from megatron.core import parallel_state
from megatron.core.models.gpt import GPTModel
from megatron.core.models.gpt.gpt_layer_specs import (get_gpt_layer_local_spec,
                                                     get_gpt_layer_with_transformer_engine_spec)
from megatron.core.transformer import TransformerConfig
from megatron.core.transformer.enums import ModelType
from megatron.core.transformer.transformer_block import TransformerBlockSubmodules, get_num_layers_to_build

from liquid_train.models.attention import ATTENTION_BACKENDS, FlexCoreAttention, LocalCoreAttention
from liquid_train.models.families import ModelArch, get_model_arch
from liquid_train.models.fusions import resolve_fusions
from liquid_train.models.layers import LiquidRMSNorm, RowParallelLinearWithPostNorm
from liquid_train.models.options import (PRECISIONS, RECOMPUTE_GRANULARITIES, RECOMPUTE_METHODS, BuildOptions,
                                         FP8Config, RecomputeConfig)
from liquid_train.models.precision import fp8_available, fp8_transformer_config_kwargs, te_import_error
from liquid_train.models.rope import install_rope
from liquid_train.models.sidecar import checkpoint_arch
from liquid_train.vocab import LiquidVocab

logger = logging.getLogger(__name__)

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "fp8": torch.bfloat16}


@dataclass
class VocabRows:
    """Rows of the embedding: real (sampled) rows and the TP-padded total."""
    real: int
    padded: int


def resolve_vocab(vocab: Union[int, LiquidVocab, VocabRows], tp: int) -> VocabRows:
    if isinstance(vocab, LiquidVocab):
        return VocabRows(vocab.vocab_size, vocab.padded_vocab_size(tp))
    if isinstance(vocab, VocabRows):
        return vocab
    return VocabRows(int(vocab), int(vocab))


def check_divisibility(arch: ModelArch, tp: int, pp: int = 1, vpp: Optional[int] = None) -> None:
    """One clear error per layout the architecture cannot take."""
    if arch.num_attention_heads % tp:
        raise ValueError(f"tensor_parallel={tp} does not divide num_attention_heads={arch.num_attention_heads} of "
                         f"{arch.family} {arch.size}; choose a TP size that divides it")
    if arch.num_query_groups % tp:
        raise ValueError(f"tensor_parallel={tp} does not divide num_key_value_heads={arch.num_query_groups} of "
                         f"{arch.family} {arch.size}; choose a TP size that divides it")
    if arch.ffn_hidden_size % tp:
        raise ValueError(f"tensor_parallel={tp} does not divide ffn_hidden_size={arch.ffn_hidden_size}")
    chunks = pp * (vpp or 1)
    if arch.num_layers % chunks:
        raise ValueError(f"pipeline_parallel={pp} x virtual={vpp or 1} does not divide num_layers={arch.num_layers}")


def te_unavailable_reason() -> Optional[str]:
    """None when Transformer Engine can run here (a CUDA GPU and an importable TE), else why not."""
    if not torch.cuda.is_available():
        return "no CUDA GPU is available"
    error = te_import_error()
    return f"Transformer Engine does not import ({error})" if error else None


def resolve_attention_backend(arch: ModelArch, requested: str = "auto", training: bool = True) -> str:
    """``auto``: TE where TE runs and the family needs nothing TE lacks (soft-capping), FlexAttention on other
    GPUs, the exact local path on CPU. An explicit choice that cannot run is a ValueError, not a substitute."""
    if requested not in ATTENTION_BACKENDS:
        raise ValueError(f"attention_backend={requested!r}; choose one of {ATTENTION_BACKENDS}")
    needs_own = arch.attn_logit_softcap is not None or arch.post_norms
    if requested == "auto":
        if not torch.cuda.is_available():
            return "local"
        return "te" if not needs_own and te_unavailable_reason() is None else "flex"
    if requested == "te":
        if needs_own:
            raise ValueError(f"attention_backend=te: Transformer Engine cannot soft-cap attention logits / place "
                             f"post-norms ({arch.family}); use attention_backend=flex (or auto)")
        reason = te_unavailable_reason()
        if reason:
            raise ValueError(f"attention_backend=te: {reason}; use attention_backend=auto, flex or local")
    if requested == "flex" and training and not torch.cuda.is_available():
        raise ValueError("attention_backend=flex: FlexAttention has no backward pass on CPU; train on CPU with "
                         "attention_backend=local (or auto)")
    return requested


def recompute_kwargs(recompute: RecomputeConfig) -> Dict:
    if recompute.granularity not in RECOMPUTE_GRANULARITIES:
        raise ValueError(f"recompute.granularity={recompute.granularity!r}; choose one of {RECOMPUTE_GRANULARITIES}")
    if recompute.granularity == "none":
        return {}
    if recompute.granularity == "selective":
        return dict(recompute_granularity="selective", recompute_modules=list(recompute.modules))
    if recompute.method not in RECOMPUTE_METHODS:
        raise ValueError(f"recompute.method={recompute.method!r}; choose one of {RECOMPUTE_METHODS}")
    if recompute.num_layers < 1:
        raise ValueError(f"recompute.num_layers={recompute.num_layers} must be >= 1")
    return dict(recompute_granularity="full", recompute_method=recompute.method,
                recompute_num_layers=recompute.num_layers)


def transformer_config(arch: ModelArch, options: BuildOptions = BuildOptions()) -> TransformerConfig:
    """The megatron TransformerConfig carrying ``arch``'s math and the options (plus Liquid attributes read by our
    modules). Checks that FP8 can run unless ``options.precision`` is not fp8."""
    if options.precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {options.precision!r}")
    if options.tensor_parallel is not None:  # the layout given explicitly (no parallel state needed)
        tp, pp, vpp = options.tensor_parallel, options.pipeline_parallel or 1, options.virtual_pipeline_parallel
    else:
        tp = parallel_state.get_tensor_model_parallel_world_size()
        pp = parallel_state.get_pipeline_model_parallel_world_size()
        vpp = parallel_state.get_virtual_pipeline_model_parallel_world_size()
    check_divisibility(arch, tp, pp, vpp)
    backend = resolve_attention_backend(arch, options.attention_backend, options.training)
    dtype = _DTYPES[options.precision]
    act = F.silu if arch.activation == "swiglu" else functools.partial(F.gelu, approximate="tanh")
    kwargs = dict(
        num_layers=arch.num_layers, hidden_size=arch.hidden_size, ffn_hidden_size=arch.ffn_hidden_size,
        num_attention_heads=arch.num_attention_heads, num_query_groups=arch.num_query_groups,
        kv_channels=arch.head_dim, normalization="RMSNorm", layernorm_epsilon=arch.norm_eps,
        add_bias_linear=False, add_qkv_bias=arch.qkv_bias, gated_linear_unit=True, activation_func=act,
        hidden_dropout=0.0, attention_dropout=0.0, softmax_scale=arch.softmax_scale, attention_softmax_in_fp32=True,
        tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp, virtual_pipeline_model_parallel_size=vpp,
        sequence_parallel=options.sequence_parallel and tp > 1, params_dtype=dtype, pipeline_dtype=dtype,
        bf16=options.precision in ("bf16", "fp8"), fp16=options.precision == "fp16",
        use_cpu_initialization=not torch.cuda.is_available(), init_method_std=options.init_method_std,
        perform_initialization=True, calculate_per_token_loss=True,
    )
    kwargs.update(resolve_fusions(options.fusions, arch.activation, backend))
    kwargs.update(recompute_kwargs(options.recompute))
    if options.precision == "fp8":
        reason = fp8_available()
        if reason:
            raise ValueError(f"precision=fp8: {reason}")
        if backend != "te":
            raise ValueError(f"precision=fp8 runs in Transformer Engine layers; attention_backend={backend} has "
                             f"none (use attention_backend=te, or precision=bf16)")
        kwargs.update(fp8_transformer_config_kwargs(options.fp8, arch.num_layers))
    config = TransformerConfig(**kwargs)
    # Read by our modules (plain attributes: TransformerConfig is a non-frozen dataclass).
    config.liquid_attn_logit_softcap = arch.attn_logit_softcap
    config.liquid_sliding_window = arch.sliding_window
    config.liquid_window_layers = arch.window_layers()  # 0-based layers with the window (Gemma 2: even ones)
    config.liquid_attention_backend = backend
    return config


def layer_spec(arch: ModelArch, backend: str):
    """Megatron layer spec: TE's for ``te``; megatron's local spec with our core attention for ``local``/``flex``
    (plus Gemma 2's post-norms and an RMSNorm that takes sequence parallelism)."""
    if backend == "te":
        return get_gpt_layer_with_transformer_engine_spec()
    spec = copy.deepcopy(get_gpt_layer_local_spec(normalization="RMSNorm"))
    spec.submodules.input_layernorm = LiquidRMSNorm
    spec.submodules.pre_mlp_layernorm = LiquidRMSNorm
    attn = spec.submodules.self_attention.submodules
    attn.core_attention = FlexCoreAttention if backend == "flex" else LocalCoreAttention
    if arch.post_norms:
        attn.linear_proj = RowParallelLinearWithPostNorm
        _mlp_submodules(spec.submodules.mlp).linear_fc2 = RowParallelLinearWithPostNorm
    return spec


def _mlp_submodules(mlp):
    """The MLP's submodules in either spelling of the local spec: a ``ModuleSpec`` (megatron-core <= 0.17) or
    ``functools.partial(MLP.as_mlp_submodule, submodules=...)`` (0.18 on)."""
    return mlp.keywords["submodules"] if isinstance(mlp, functools.partial) else mlp.submodules


def _block_spec(spec, config: TransformerConfig, backend: str, vp_stage: Optional[int]):
    """The local spec as a block whose final norm is :class:`LiquidRMSNorm` too (megatron's default final norm on
    the local path is torch's, which refuses sequence parallelism); TE's spec keeps TE's final norm."""
    if backend == "te":
        return spec
    pp_rank = parallel_state.get_pipeline_model_parallel_rank()
    layers = get_num_layers_to_build(config, vp_stage=vp_stage, pp_rank=pp_rank)
    return TransformerBlockSubmodules(layer_specs=[spec] * layers, layer_norm=LiquidRMSNorm)


def _install_hooks(model: GPTModel, arch: ModelArch, rows: VocabRows) -> None:
    if getattr(model, "pre_process", False) and arch.embedding_scale:
        scale = math.sqrt(arch.hidden_size)
        model.embedding.register_forward_hook(lambda m, a, out: out * scale)
    if getattr(model, "post_process", False):
        cap = arch.final_logit_softcap
        real, padded = rows.real, rows.padded

        def logits_hook(module, args, output):
            logits, bias = output
            if cap is not None:
                logits = torch.tanh(logits / cap) * cap
            if padded > real:
                width = logits.size(-1)
                start = 0 if width == padded else parallel_state.get_tensor_model_parallel_rank() * width
                ids = torch.arange(start, start + width, device=logits.device)
                logits = logits.masked_fill(ids >= real, float("-inf"))
            return logits, bias

        model.output_layer.register_forward_hook(logits_hook)


@dataclass
class ModelBuild:
    """A resolved model recipe: call it (megatron's ``model_provider(pre_process, post_process, vp_stage)``) to
    build this rank's GPTModel of a pipeline stage; :meth:`chunks` builds all of this rank's chunks."""

    arch: ModelArch
    rows: VocabRows
    options: BuildOptions
    config: TransformerConfig
    attention_backend: str

    def __call__(self, pre_process: Optional[bool] = None, post_process: Optional[bool] = None,
                 vp_stage: Optional[int] = None) -> GPTModel:
        if pre_process is None:
            pre_process = parallel_state.is_pipeline_first_stage(ignore_virtual=False, vp_stage=vp_stage)
        if post_process is None:
            post_process = parallel_state.is_pipeline_last_stage(ignore_virtual=False, vp_stage=vp_stage)
        arch = self.arch
        spec = _block_spec(layer_spec(arch, self.attention_backend), self.config, self.attention_backend, vp_stage)
        model = GPTModel(
            config=self.config, transformer_layer_spec=spec, vocab_size=self.rows.padded,
            max_sequence_length=arch.max_position_embeddings, pre_process=pre_process, post_process=post_process,
            parallel_output=True, share_embeddings_and_output_weights=arch.tie_embeddings,
            position_embedding_type="rope", rotary_base=int(arch.rope_theta),
            rope_scaling=arch.rope_scaling_factor is not None,
            rope_scaling_factor=arch.rope_scaling_factor or 8.0, vp_stage=vp_stage,
        )
        install_rope(model, arch)  # exact HF RoPE (any theta; linear / Llama-3 scaling with all its parameters)
        model.model_type = ModelType.encoder_or_decoder
        model.liquid_arch = arch
        model.liquid_vocab_rows = self.rows
        _install_hooks(model, arch, self.rows)
        return model

    def chunks(self) -> List[GPTModel]:
        """All model chunks of this rank: one per virtual pipeline stage, or a single one."""
        vpp = parallel_state.get_virtual_pipeline_model_parallel_world_size()
        if not vpp or vpp == 1:
            return [self()]
        return [self(vp_stage=i) for i in range(vpp)]

    def describe(self) -> Dict:
        """What was chosen, for the one start-up log line and the run's records."""
        c = self.config
        return {
            "family": self.arch.family, "size": self.arch.size, "precision": self.options.precision,
            "attention_backend": self.attention_backend, "tensor_parallel": c.tensor_model_parallel_size,
            "pipeline_parallel": c.pipeline_model_parallel_size,
            "virtual_pipeline_parallel": c.virtual_pipeline_model_parallel_size,
            "sequence_parallel": c.sequence_parallel,
            "recompute": {"granularity": c.recompute_granularity, "method": c.recompute_method,
                          "num_layers": c.recompute_num_layers,
                          "modules": list(c.recompute_modules) if c.recompute_granularity == "selective" else None},
            "fp8": {"format": c.fp8, "recipe": c.fp8_recipe if c.fp8 else None,
                    "bf16_layers": c.num_layers_at_start_in_bf16 if c.fp8 and c.first_last_layers_bf16 else 0},
            "fusions": {flag: bool(getattr(c, flag)) for flag in (
                "bias_dropout_fusion", "bias_activation_fusion", "apply_rope_fusion",
                "gradient_accumulation_fusion")},
            "vocab_rows": asdict(self.rows),
        }


def build(arch: ModelArch, vocab: Union[int, LiquidVocab, VocabRows], options: BuildOptions = BuildOptions()
          ) -> ModelBuild:
    """The build path. Parallel state must be initialised unless ``options`` gives the layout explicitly."""
    tp = options.tensor_parallel or parallel_state.get_tensor_model_parallel_world_size()
    rows = resolve_vocab(vocab, tp)
    if rows.padded % tp:
        raise ValueError(f"padded vocabulary {rows.padded} is not divisible by tensor_parallel={tp}")
    config = transformer_config(arch, options)
    return ModelBuild(arch=arch, rows=rows, options=options, config=config,
                      attention_backend=config.liquid_attention_backend)


def build_model(arch: ModelArch, vocab: Union[int, LiquidVocab, VocabRows], precision: str = "fp32",
                **options) -> ModelBuild:
    """:func:`build` with the options as keywords (``attention_backend``, ``sequence_parallel``, ``training`` ...);
    the result is megatron's model provider."""
    return build(arch, vocab, BuildOptions(precision=precision, **options))


def build_gpt_model(arch: ModelArch, vocab: Union[int, LiquidVocab, VocabRows], precision: str = "fp32",
                    pre_process: Optional[bool] = None, post_process: Optional[bool] = None,
                    vp_stage: Optional[int] = None, **options) -> GPTModel:
    """One stage's GPTModel through :func:`build` (defaults: this rank's pipeline position)."""
    return build_model(arch, vocab, precision, **options)(pre_process, post_process, vp_stage)



def arch_from_run_config(model_cfg) -> ModelArch:
    """The architecture a run config names: the registry entry ``model.family``/``model.size`` (or, with
    ``model.size: null``, the architecture recorded in ``model.init_from``), with the inline ``model.arch`` fields
    (if any) overriding it. A registry architecture that computes something else than the ``init_from`` checkpoint
    it would start from is refused (ValueError naming the first differing field)."""
    init_arch = checkpoint_arch(model_cfg.init_from)
    if model_cfg.size is None:
        if init_arch is None:
            raise ValueError("model.size is null, which means the architecture of model.init_from, but there is no "
                             "liquid_model.json in it; set model.size to a registry size")
        base = init_arch
    else:
        base = get_model_arch(model_cfg.family, model_cfg.size)
    inline = dict(model_cfg.arch or {})
    unknown = sorted(set(inline) - set(ModelArch.__dataclass_fields__))
    if unknown:
        raise ValueError(f"model.arch: unknown field(s) {unknown}; known: {sorted(ModelArch.__dataclass_fields__)}")
    if inline:
        inline.setdefault("size", "custom")
        base = replace(base, **inline)
    if init_arch is not None:
        ours, theirs = base.math(), init_arch.math()
        diff = next((k for k in ours if ours[k] != theirs.get(k)), None)
        if diff is not None:
            raise ValueError(f"model.size={model_cfg.size}: {diff}={ours[diff]!r} but model.init_from holds "
                             f"{diff}={theirs[diff]!r}; set model.size: null to train the architecture of the "
                             f"checkpoint")
    return base


def resolve_precision(precision: str) -> str:
    """``auto``: bf16 on a GPU, fp32 on CPU; anything else as given."""
    if precision == "auto":
        return "bf16" if torch.cuda.is_available() else "fp32"
    return precision


def options_from_run_config(cfg, training: bool = True) -> BuildOptions:
    """The build options a run config asks for (``model.*`` and ``parallel.*``)."""
    m, p = cfg.model, cfg.parallel
    return BuildOptions(
        precision=resolve_precision(m.precision), tensor_parallel=p.tensor_parallel,
        pipeline_parallel=p.pipeline_parallel, virtual_pipeline_parallel=p.virtual_pipeline_parallel,
        sequence_parallel=bool(p.sequence_parallel), recompute=_plain(RecomputeConfig, m.recompute),
        fp8=_plain(FP8Config, m.fp8), attention_backend=m.attention_backend, fusions=m.fusions, training=training)


def _plain(cls, block):
    """A config block (omegaconf node or dataclass) as the plain dataclass ``cls``."""
    if isinstance(block, cls):
        return block
    return cls(**{name: (list(getattr(block, name)) if name == "modules" else getattr(block, name))
                  for name in cls.__dataclass_fields__})


def build_from_run_config(cfg, vocab: Union[int, LiquidVocab, VocabRows], training: bool = True) -> ModelBuild:
    """The model of a run config: its architecture and build options through :func:`build`."""
    return build(arch_from_run_config(cfg.model), vocab, options_from_run_config(cfg, training))
