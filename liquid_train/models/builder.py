"""(family arch, vocabulary, precision, parallel layout) -> megatron-core GPTModel for one pipeline stage.

The layer spec is megatron-core's: the Transformer Engine spec when TE and a GPU are present (Llama / Qwen), the
local spec otherwise, with :class:`~liquid_train.models.layers.LiquidCoreAttention` as core attention on the local
path (explicit block-diagonal masks that combine with causal/sliding-window masks, soft-capping). Gemma pieces that
megatron lacks are added as small modules (post-norm linear) and three forward hooks on GPTModel submodules:
sqrt(hidden) embedding scaling, final logit soft-capping and masking of the TP padding rows of the vocabulary
(``-inf`` logits, so no probability mass ever reaches them).
"""
from __future__ import annotations

import copy
import functools
import math
from dataclasses import dataclass
from typing import Callable, Optional, Union

import torch
import torch.nn.functional as F

from liquid_train.models.families import ModelArch
from liquid_train.models.rope import install_rope
from liquid_train.vocab import LiquidVocab

PRECISIONS = ("fp32", "bf16", "fp16")


def have_te_gpu() -> bool:
    if not torch.cuda.is_available():
        return False
    try:
        import transformer_engine  # noqa: F401
    except Exception:
        return False
    return True


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


def transformer_config(arch: ModelArch, precision: str = "fp32", tp: Optional[int] = None, pp: Optional[int] = None,
                       vpp: Optional[int] = None, sequence_parallel: bool = False, init_method_std: float = 0.02,
                       recompute: Optional[str] = None, **overrides):
    """The megatron TransformerConfig carrying ``arch``'s math (plus Liquid attributes read by our modules)."""
    from megatron.core import parallel_state
    from megatron.core.transformer import TransformerConfig

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    tp = tp or parallel_state.get_tensor_model_parallel_world_size()
    pp = pp or parallel_state.get_pipeline_model_parallel_world_size()
    vpp = vpp or parallel_state.get_virtual_pipeline_model_parallel_world_size()
    check_divisibility(arch, tp, pp, vpp)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    act = F.silu if arch.activation == "swiglu" else functools.partial(F.gelu, approximate="tanh")
    kwargs = dict(
        num_layers=arch.num_layers, hidden_size=arch.hidden_size, ffn_hidden_size=arch.ffn_hidden_size,
        num_attention_heads=arch.num_attention_heads, num_query_groups=arch.num_query_groups,
        kv_channels=arch.head_dim, normalization="RMSNorm", layernorm_epsilon=arch.norm_eps,
        add_bias_linear=False, add_qkv_bias=arch.qkv_bias, gated_linear_unit=True, activation_func=act,
        bias_activation_fusion=False, masked_softmax_fusion=False, persist_layer_norm=False,
        bias_dropout_fusion=False, apply_rope_fusion=False, gradient_accumulation_fusion=False,
        cross_entropy_loss_fusion=False, hidden_dropout=0.0, attention_dropout=0.0,
        softmax_scale=arch.softmax_scale, attention_softmax_in_fp32=True,
        tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp,
        virtual_pipeline_model_parallel_size=vpp, sequence_parallel=sequence_parallel and tp > 1,
        params_dtype=dtype, pipeline_dtype=dtype, bf16=precision == "bf16", fp16=precision == "fp16",
        use_cpu_initialization=not torch.cuda.is_available(), init_method_std=init_method_std,
        perform_initialization=True,
    )
    if recompute:
        kwargs.update(recompute_granularity=recompute)
        if recompute == "full":
            kwargs.update(recompute_method="uniform", recompute_num_layers=1)
    kwargs.update(overrides)
    config = TransformerConfig(**kwargs)
    # Read by LiquidCoreAttention (plain attributes: TransformerConfig is a non-frozen dataclass).
    config.liquid_attn_logit_softcap = arch.attn_logit_softcap
    config.liquid_sliding_window = arch.sliding_window
    config.liquid_sliding_window_layers = arch.window_layers()
    return config


def layer_spec(arch: ModelArch, use_te: Optional[bool] = None):
    """Megatron layer spec for ``arch``: TE spec on GPU+TE for Llama/Qwen, local spec + our modules otherwise."""
    from megatron.core.models.gpt.gpt_layer_specs import (get_gpt_layer_local_spec,
                                                         get_gpt_layer_with_transformer_engine_spec)
    from megatron.core.transformer.spec_utils import ModuleSpec

    from liquid_train.models.layers import LiquidCoreAttention, RowParallelLinearWithPostNorm

    use_te = have_te_gpu() if use_te is None else use_te
    needs_own_attention = arch.attn_logit_softcap is not None or arch.sliding_window is not None
    if use_te and not needs_own_attention and not arch.post_norms:
        return get_gpt_layer_with_transformer_engine_spec()
    spec = copy.deepcopy(get_gpt_layer_local_spec(normalization="RMSNorm"))
    attn = spec.submodules.self_attention.submodules
    attn.core_attention = LiquidCoreAttention
    if arch.post_norms:
        attn.linear_proj = RowParallelLinearWithPostNorm
        mlp = spec.submodules.mlp
        mlp.submodules.linear_fc2 = RowParallelLinearWithPostNorm
    return spec


def _install_hooks(model, arch: ModelArch, rows: VocabRows) -> None:
    from megatron.core import parallel_state

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


def build_gpt_model(arch: ModelArch, vocab: Union[int, LiquidVocab, VocabRows], precision: str = "fp32",
                    pre_process: Optional[bool] = None, post_process: Optional[bool] = None,
                    vp_stage: Optional[int] = None, use_te: Optional[bool] = None, config=None,
                    **config_overrides):
    """A GPTModel for this rank's pipeline stage (or the given one); parallel state must be initialised."""
    from megatron.core import parallel_state
    from megatron.core.models.gpt import GPTModel

    tp = parallel_state.get_tensor_model_parallel_world_size()
    rows = resolve_vocab(vocab, tp)
    if rows.padded % tp:
        raise ValueError(f"padded vocabulary {rows.padded} is not divisible by tensor_parallel={tp}")
    config = config or transformer_config(arch, precision, **config_overrides)
    if pre_process is None:
        pre_process = parallel_state.is_pipeline_first_stage(ignore_virtual=False, vp_stage=vp_stage)
    if post_process is None:
        post_process = parallel_state.is_pipeline_last_stage(ignore_virtual=False, vp_stage=vp_stage)
    model = GPTModel(
        config=config, transformer_layer_spec=layer_spec(arch, use_te), vocab_size=rows.padded,
        max_sequence_length=arch.max_position_embeddings, pre_process=pre_process, post_process=post_process,
        parallel_output=True, share_embeddings_and_output_weights=arch.tie_embeddings,
        position_embedding_type="rope", rotary_base=int(arch.rope_theta),
        rope_scaling=arch.rope_scaling_factor is not None,
        rope_scaling_factor=arch.rope_scaling_factor or 8.0, vp_stage=vp_stage,
    )
    install_rope(model, arch)  # exact HF RoPE (any theta; linear / Llama-3 scaling with all its parameters)
    model.liquid_arch = arch
    model.liquid_vocab_rows = rows
    _install_hooks(model, arch, rows)
    return model


def build_model(arch: ModelArch, vocab: Union[int, LiquidVocab, VocabRows], precision: str = "fp32",
                **kwargs) -> Callable:
    """``model_provider(pre_process=None, post_process=None, vp_stage=None) -> GPTModel`` (megatron's factory).

    ``pre_process``/``post_process`` default to this rank's pipeline position; kwargs go to
    :func:`build_gpt_model` (``use_te``, TransformerConfig overrides such as ``recompute``).
    """

    def model_provider(pre_process: Optional[bool] = None, post_process: Optional[bool] = None,
                       vp_stage: Optional[int] = None):
        return build_gpt_model(arch, vocab, precision, pre_process=pre_process, post_process=post_process,
                               vp_stage=vp_stage, **kwargs)

    return model_provider


make_model_provider = build_model


def build_model_chunks(arch: ModelArch, vocab, precision: str = "fp32", **kwargs):
    """All model chunks of this rank (one per virtual pipeline stage, or a single one)."""
    from megatron.core import parallel_state

    vpp = parallel_state.get_virtual_pipeline_model_parallel_world_size()
    if not vpp or vpp == 1:
        return [build_gpt_model(arch, vocab, precision, **kwargs)]
    return [build_gpt_model(arch, vocab, precision, vp_stage=i, **kwargs) for i in range(vpp)]
