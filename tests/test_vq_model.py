"""VQGAN: our taming-layout encoder vs transformers' independent ChameleonVQVAE; checkpoint format round trip."""
import pytest
import torch
from transformers import ChameleonVQVAE, ChameleonVQVAEConfig

from data_pipeline.vq import (REGISTRY, VQCheckpointError, VQGANConfig, VQModel, VQTokenizer, load_vq_tokenizer,
                              load_vqgan, save_vqgan)
from data_pipeline.vq.checkpoint import CKPT_NAME

# "full": every structural element of Chameleon's config (5 levels, 2 res blocks, mid attention), fewer channels.
CONFIGS = {
    "full-shape": dict(ch=32, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2, resolution=64, z_channels=64,
                       n_embed=256, embed_dim=64),
    "tiny": REGISTRY["chameleon-vqgan-tiny"].params,
}


def _hf_from_ours(cfg: VQGANConfig, ours: VQModel) -> ChameleonVQVAE:
    hf_cfg = ChameleonVQVAEConfig(
        embed_dim=cfg.embed_dim, num_embeddings=cfg.n_embed, double_latent=False, latent_channels=cfg.z_channels,
        resolution=cfg.resolution, in_channels=cfg.in_channels, base_channels=cfg.ch,
        channel_multiplier=list(cfg.ch_mult), num_res_blocks=cfg.num_res_blocks, attn_resolutions=None,
        dropout=0.0, attn_type="vanilla")
    hf = ChameleonVQVAE(hf_cfg).eval()
    ours_sd = ours.state_dict()
    hf_sd = hf.state_dict()
    # The key layouts agree (taming names); the HF model has only the encoder side.
    assert set(hf_sd) <= set(ours_sd), sorted(set(hf_sd) - set(ours_sd))[:5]
    assert all(k.startswith(("decoder.", "post_quant_conv.")) for k in set(ours_sd) - set(hf_sd))
    hf.load_state_dict({k: ours_sd[k] for k in hf_sd}, strict=True)
    return hf


def _randomise(model: VQModel, seed: int) -> None:
    """Non-trivial weights everywhere (GroupNorm affine included) and a codebook at the latents' scale."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name == "quantize.embedding.weight":
                continue
            scale = 0.2 if p.dim() > 1 else 0.1
            p.copy_(torch.randn(p.shape, generator=g) * scale + (1.0 if name.endswith("norm1.weight") else 0.0))


@pytest.mark.parametrize("cfg_name", sorted(CONFIGS))
def test_encoder_codes_equal_transformers_chameleon_vqvae(cfg_name):
    cfg = VQGANConfig(**CONFIGS[cfg_name])
    torch.manual_seed(1)
    ours = VQModel(cfg).eval()
    _randomise(ours, seed=2)
    x = torch.rand(3, 3, cfg.resolution, cfg.resolution, generator=torch.Generator().manual_seed(3)) * 2 - 1
    with torch.no_grad():
        z = ours.encode_latents(x)
        # codebook spread like the latents so the argmin is a real decision, not one dominant code
        flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        idx = torch.randint(0, flat.shape[0], (cfg.n_embed,), generator=torch.Generator().manual_seed(4))
        base = flat[idx]
        ours.quantize.embedding.weight.copy_(base + 0.05 * torch.randn(base.shape, generator=torch.Generator().manual_seed(5)))
    hf = _hf_from_ours(cfg, ours)
    with torch.no_grad():
        hf_codes = hf.encode(x).image_tokens.view(x.shape[0], -1)
        hf_latent = hf.encode(x).last_hidden_state
    tok = VQTokenizer(ours, name="test", device="cpu")
    our_codes = tok.encode(x)
    grid = cfg.resolution // cfg.downsample_factor
    assert our_codes.shape == (3, grid, grid) and our_codes.dtype == torch.long
    torch.testing.assert_close(ours.encoder(x), hf_latent, rtol=0, atol=0)
    assert torch.equal(our_codes.view(3, -1), hf_codes)
    assert len(torch.unique(our_codes)) > 8, "degenerate test: codes collapse to a few entries"
    # raster order: codes of a horizontally flipped image are not a flip of the codes in general, but the
    # per-position mapping must be row-major: compare with an explicit per-position argmin.
    lat = ours.quant_conv(ours.encoder(x)).detach()
    e = ours.quantize.embedding.weight.detach()
    for r, c in [(0, 0), (0, grid - 1), (grid - 1, 0)]:
        d = ((lat[0, :, r, c][None, :] - e) ** 2).sum(1)
        assert int(our_codes[0, r, c]) == int(torch.argmin(d))


def test_checkpoint_round_trip_and_decode(tmp_path):
    cfg = VQGANConfig(**CONFIGS["tiny"])
    torch.manual_seed(7)
    model = VQModel(cfg)
    _randomise(model, seed=8)
    save_vqgan(model, tmp_path / "vq")
    # the on-disk format is taming's: {"state_dict": ...} + model.params yaml
    blob = torch.load(tmp_path / "vq" / CKPT_NAME, weights_only=True)
    assert set(blob) == {"state_dict"} and set(blob["state_dict"]) == set(model.state_dict())
    # a taming training checkpoint also carries loss.* weights; those are ignored
    blob["state_dict"]["loss.discriminator.main.0.weight"] = torch.zeros(2)
    torch.save(blob, tmp_path / "vq" / CKPT_NAME)
    loaded = load_vqgan(tmp_path / "vq")
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    tok = load_vq_tokenizer(tmp_path / "vq")
    assert tok.codebook_size == 512 and tok.downsample_factor == 8
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    codes = tok.encode(x)
    assert torch.equal(codes, VQModelEncode(model, x))
    img = tok.decode(codes)
    assert img.shape == (2, 3, 64, 64) and img.min() >= -1 and img.max() <= 1
    with torch.no_grad():
        ref = model.decoder(model.post_quant_conv(model.quantize.embedding(codes).permute(0, 3, 1, 2))).clamp(-1, 1)
    torch.testing.assert_close(img, ref)


def VQModelEncode(model, x):
    with torch.no_grad():
        return model.encode_indices(x)


def test_strict_key_errors(tmp_path):
    cfg = VQGANConfig(**CONFIGS["tiny"])
    model = VQModel(cfg)
    save_vqgan(model, tmp_path)
    blob = torch.load(tmp_path / CKPT_NAME, weights_only=True)
    sd = blob["state_dict"]
    del sd["encoder.mid.attn_1.q.weight"]
    sd["encoder.extra.weight"] = torch.zeros(1)
    torch.save(blob, tmp_path / CKPT_NAME)
    with pytest.raises(VQCheckpointError) as e:
        load_vqgan(tmp_path)
    msg = str(e.value)
    assert "encoder.mid.attn_1.q.weight" in msg and "encoder.extra.weight" in msg and "missing" in msg
    # yaml of another size: shapes differ
    save_vqgan(VQModel(VQGANConfig(**{**CONFIGS["tiny"], "n_embed": 256})), tmp_path / "other")
    (tmp_path / "other" / CKPT_NAME).write_bytes((tmp_path / CKPT_NAME).read_bytes())
    with pytest.raises(VQCheckpointError):
        load_vqgan(tmp_path / "other")
    (tmp_path / "trunc").mkdir()
    (tmp_path / "trunc" / "vqgan.yaml").write_text((tmp_path / "vqgan.yaml").read_text())
    (tmp_path / "trunc" / CKPT_NAME).write_bytes((tmp_path / CKPT_NAME).read_bytes()[:1000])
    with pytest.raises(VQCheckpointError, match="cannot be read"):
        load_vqgan(tmp_path / "trunc")
    with pytest.raises(VQCheckpointError, match="neither a registered name"):
        load_vq_tokenizer(tmp_path / "nope")


def test_registry_full_size_needs_weights(monkeypatch, tmp_path):
    monkeypatch.setenv("LIQUID_CHAMELEON_VQGAN_DIR", str(tmp_path / "absent"))
    monkeypatch.setattr(REGISTRY["chameleon-vqgan"], "default_weights_dir", str(tmp_path / "absent2"))
    with pytest.raises(VQCheckpointError, match="LIQUID_CHAMELEON_VQGAN_DIR"):
        load_vq_tokenizer("chameleon-vqgan")
    full = VQModel(VQGANConfig())
    assert sum(p.numel() for p in full.parameters()) == 68_718_467  # ~68.7M, Chameleon's VQGAN
    assert full.downsample_factor == 16 and full.codebook_size == 8192


def test_training_path_reduces_reconstruction_loss():
    """forward() is what a VQ training loop uses: straight-through codes, gradients into encoder and codebook."""
    torch.manual_seed(0)
    model = VQModel(VQGANConfig(**{**CONFIGS["tiny"], "resolution": 32})).train()
    ramp = torch.linspace(-1, 1, 32)
    x = torch.stack([torch.stack([ramp[None, :].expand(32, 32) * s, ramp[:, None].expand(32, 32) * -s,
                                  torch.full((32, 32), s - 0.5)]) for s in (0.2, 0.5, 0.8, 1.0)])
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(25):
        rec, vq_loss, idx = model(x)
        loss = (rec - x).abs().mean() + vq_loss
        opt.zero_grad()
        loss.backward()
        assert model.encoder.conv_in.weight.grad is not None and model.quantize.embedding.weight.grad is not None
        opt.step()
        losses.append(float((rec - x).abs().mean()))
    assert idx.shape == (4, 4, 4)
    assert losses[-1] < 0.5 * losses[0], losses
