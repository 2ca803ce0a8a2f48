import pytest
import torch

from liquid_train.models.precision import FP8Config, fp8_available, fp8_transformer_config_kwargs


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU error path")
def test_fp8_without_gpu_is_a_clear_error():
    with pytest.raises(RuntimeError, match="FP8 needs a CUDA GPU"):
        fp8_transformer_config_kwargs(FP8Config(), num_layers=4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or fp8_available() is not None,
                    reason="needs a GPU with Transformer Engine FP8")
def test_fp8_te_forward_backward():
    from liquid_train.models.builder import build_model
    from liquid_train.models.families import get_model_arch
    from liquid_train.parallel import destroy_parallel, initialize_parallel
    from liquid_train.vocab import default_test_vocab

    initialize_parallel(1, 1)
    try:
        arch = get_model_arch("llama3.2", "tiny")
        kw = fp8_transformer_config_kwargs(FP8Config(bf16_layers=0), arch.num_layers)
        kw.pop("bf16")
        model = build_model(arch, default_test_vocab(512, 64), "bf16", **kw)().cuda()
        tokens = torch.randint(0, 500, (2, 64), device="cuda")
        loss = model(tokens, torch.arange(64, device="cuda").expand(2, 64), None, labels=tokens)
        loss.float().mean().backward()
        assert torch.isfinite(loss).all()
    finally:
        destroy_parallel()
