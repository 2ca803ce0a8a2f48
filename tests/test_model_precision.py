"""What the run config asks for reaches megatron's TransformerConfig through the one build path: FP8 (recipe,
format, BF16 end layers), sequence parallelism, recompute, fusions, the attention backend. On CPU the FP8 fields are
checked on the TransformerConfig kwargs the build path adds (a GPU without TE refuses FP8 up front)."""
import pytest
import torch

from liquid_train.models.builder import options_from_run_config, resolve_attention_backend, transformer_config
from liquid_train.models.families import get_model_arch
from liquid_train.models.options import BuildOptions, FP8Config, RecomputeConfig
from liquid_train.models.precision import check_fp8_config, fp8_available, fp8_transformer_config_kwargs
from liquid_train.training.config import load_config

ARCH = get_model_arch("llama3.2", "tiny")


def _cfg(*overrides):
    return load_config(overrides=["run_dir=/tmp/x", "model.family=llama3.2", *overrides])


def test_run_config_fp8_block_becomes_the_fp8_fields():
    opts = options_from_run_config(_cfg("model.precision=fp8", "model.fp8.bf16_layers=0"))
    assert opts.precision == "fp8" and opts.fp8.recipe == "tensorwise"  # the default recipe
    kw = fp8_transformer_config_kwargs(opts.fp8, ARCH.num_layers)
    assert kw["fp8"] == "hybrid" and kw["fp8_recipe"] == "tensorwise" and kw["first_last_layers_bf16"] is False
    four = fp8_transformer_config_kwargs(FP8Config(recipe="tensorwise", format="e4m3", bf16_layers=1), 4)
    assert four["fp8"] == "e4m3" and four["first_last_layers_bf16"] is True
    assert four["num_layers_at_start_in_bf16"] == four["num_layers_at_end_in_bf16"] == 1


def test_fp8_settings_that_never_work_are_refused():
    with pytest.raises(ValueError, match="delayed scaling cannot keep"):
        check_fp8_config(FP8Config(recipe="delayed", bf16_layers=1), 8)
    with pytest.raises(ValueError, match="leaves no FP8 layer"):
        check_fp8_config(FP8Config(bf16_layers=1), 2)
    with pytest.raises(ValueError, match="fp8.recipe"):
        check_fp8_config(FP8Config(recipe="bogus"), 8)
    check_fp8_config(FP8Config(recipe="delayed", bf16_layers=0), 8)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU answers")
def test_fp8_on_cpu_is_one_error_from_the_build_path():
    assert "CUDA GPU" in fp8_available()
    with pytest.raises(ValueError, match="precision=fp8: FP8 needs a CUDA GPU"):
        transformer_config(ARCH, BuildOptions(precision="fp8", tensor_parallel=1, fp8=FP8Config(bf16_layers=0)))


def test_sequence_parallel_and_recompute_reach_the_transformer_config():
    sp = transformer_config(ARCH, options_from_run_config(_cfg("parallel.tensor_parallel=2",
                                                               "parallel.sequence_parallel=true")))
    assert sp.sequence_parallel is True and sp.tensor_model_parallel_size == 2
    full = transformer_config(ARCH, options_from_run_config(_cfg("model.recompute.granularity=full",
                                                                 "model.recompute.method=block",
                                                                 "model.recompute.num_layers=2")))
    assert (full.recompute_granularity, full.recompute_method, full.recompute_num_layers) == ("full", "block", 2)
    sel = transformer_config(ARCH, options_from_run_config(_cfg("model.recompute.granularity=selective",
                                                                "model.recompute.modules=[core_attn,mlp]")))
    assert sel.recompute_granularity == "selective" and list(sel.recompute_modules) == ["core_attn", "mlp"]
    none = transformer_config(ARCH, BuildOptions(tensor_parallel=1, recompute=RecomputeConfig()))
    assert none.recompute_granularity is None and none.sequence_parallel is False


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU answers")
def test_cpu_resolutions_fusions_off_and_local_attention():
    cfg = transformer_config(ARCH, BuildOptions(tensor_parallel=1))
    assert cfg.liquid_attention_backend == "local"
    assert not any(getattr(cfg, f) for f in ("bias_dropout_fusion", "bias_activation_fusion", "apply_rope_fusion",
                                             "gradient_accumulation_fusion", "masked_softmax_fusion"))
    with pytest.raises(ValueError, match="fusions=all: bias_dropout_fusion needs a CUDA GPU"):
        transformer_config(ARCH, BuildOptions(tensor_parallel=1, fusions="all"))
    assert resolve_attention_backend(get_model_arch("gemma2", "tiny"), "flex", training=False) == "flex"
    with pytest.raises(ValueError, match="soft-cap"):
        resolve_attention_backend(get_model_arch("gemma2", "tiny"), "te")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or fp8_available() is not None,
                    reason="needs a GPU with Transformer Engine FP8")
def test_fp8_te_forward_backward():
    from liquid_train.models.builder import build_model
    from liquid_train.parallel import destroy_parallel, initialize_parallel
    from liquid_train.vocab import default_test_vocab

    initialize_parallel(1, 1)
    try:
        model = build_model(ARCH, default_test_vocab(512, 64), "fp8", attention_backend="te",
                            fp8=FP8Config(bf16_layers=0))().cuda()
        tokens = torch.randint(0, 500, (2, 64), device="cuda")
        loss = model(tokens, torch.arange(64, device="cuda").expand(2, 64), None, labels=tokens)
        loss.float().mean().backward()
        assert torch.isfinite(loss).all()
    finally:
        destroy_parallel()
