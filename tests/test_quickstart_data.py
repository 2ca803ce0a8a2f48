"""Quickstart pieces: the scene grammar round-trips, the analyser is exact on clean renders, shards are readable,
and one VQ training step saves a checkpoint the real loader accepts."""
import io
import random
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from liquid_train.quickstart.analyser import analyse
from liquid_train.quickstart.config import QuickstartConfig, vq_train_config
from liquid_train.quickstart.scene import ATTRIBUTES, Scene, all_scenes, caption, parse_caption, score
from liquid_train.quickstart.synthetic import SyntheticConfig, render, write_pairs, write_text_corpus


def test_caption_parse_round_trip_every_scene():
    for scene in all_scenes():
        assert score(parse_caption(caption(scene)), scene)["all"] == 1.0


def test_parse_caption_partial_credit():
    got = parse_caption("two red triangles somewhere weird")
    assert got == {"count": 2, "kind": "triangle", "colour": "red"}
    truth = Scene("triangle", "blue", "left", 2, "white")
    row = score(got, truth)
    assert row["count"] == 1.0 and row["kind"] == 1.0 and row["colour"] == 0.0 and row["all"] == 0.0


@pytest.mark.parametrize("cell", [8, 16])
def test_analyser_exact_on_clean_renders(cell):
    rng = random.Random(cell)
    scenes = all_scenes()
    rows = [score(analyse(render(s, cell, rng)), s) for s in scenes]
    for attr in ATTRIBUTES + ("all",):
        assert np.mean([r[attr] for r in rows]) == 1.0, attr


def test_analyser_detects_wrong_attributes():
    rng = random.Random(0)
    img = render(Scene("circle", "red", "left", 3, "white"), 8, rng)
    assert score(analyse(img), Scene("square", "blue", "top", 1, "black"))["all"] == 0.0
    blank = Image.new("RGB", (40, 40), (15, 15, 15))
    assert analyse(blank) == {"background": "black"}


def test_pairs_are_img2dataset_style(tmp_path):
    cfg = SyntheticConfig(num_pairs=30, cell_size=8, shard_size=16, num_text_docs=5)
    paths = write_pairs(cfg, str(tmp_path / "pairs"))
    assert len(paths) == 2
    with tarfile.open(paths[0]) as tar:
        names = tar.getnames()
        assert names[:3] == ["000000000.png", "000000000.txt", "000000000.json"]
        img = Image.open(io.BytesIO(tar.extractfile("000000000.png").read()))
        text = tar.extractfile("000000000.txt").read().decode()
    assert img.size == (40, 40)
    assert score(analyse(img), Scene(**{k: v for k, v in parse_caption(text).items()}))["all"] == 1.0
    corpus = write_text_corpus(cfg, str(tmp_path / "text.jsonl"))
    assert sum(1 for _ in open(corpus)) == 5


def test_vq_train_step_and_checkpoint_loads(tmp_path):
    from data_pipeline.vq import load_vq_tokenizer
    from data_pipeline.vq.checkpoint import save_vqgan
    from data_pipeline.vq_train import VQTrainConfig, build_tiny_model, restart_dead_codes, train_step

    torch.manual_seed(0)
    model = build_tiny_model(resolution=16)
    images = torch.rand(4, 3, 16, 16) * 2 - 1
    cfg = VQTrainConfig(lr=1e-3)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    first = train_step(model, opt, images, cfg)
    assert np.isfinite(first["loss"]) and first["indices"].shape == (4, 2, 2)
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith("encoder.") for k in changed) and any(k.startswith("decoder.") for k in changed)
    used = torch.zeros(model.codebook_size, dtype=torch.long)
    used[0] = 1
    assert restart_dead_codes(model, images, used, torch.Generator().manual_seed(0)) == model.codebook_size - 1
    save_vqgan(model, tmp_path / "vq")
    tok = load_vq_tokenizer(str(tmp_path / "vq"))
    model.eval()
    assert torch.equal(tok.encode(images), model.encode_indices(images))


def test_kmeans_codebook_and_contrast_weights():
    from data_pipeline.vq_train import VQTrainConfig, build_tiny_model, kmeans_codebook, pixel_weights, train_vq

    torch.manual_seed(0)
    model = build_tiny_model(resolution=16).eval()
    images = torch.rand(6, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        z = model.encode_latents(images).permute(0, 2, 3, 1).reshape(-1, model.quantize.embed_dim)

    def quant_error():
        with torch.no_grad():
            return torch.cdist(z, model.quantize.embedding.weight).min(1).values.pow(2).mean().item()

    before = quant_error()
    live = kmeans_codebook(model, images, iters=10, generator=torch.Generator().manual_seed(0))
    # 24 latents, 512 codes: k-means puts a code on every latent (error ~0) where the random init is far away
    assert live == 24 and quant_error() < 1e-6 * max(before, 1.0) and before > 1e-3

    # a flat image with one 4x4 square: the square's pixels weigh (1 + w) / mean, the rest 1 / mean; mean 1
    img = torch.full((1, 3, 16, 16), -0.5)
    img[:, :, 4:8, 4:8] = 0.8
    w = pixel_weights(img, 9.0)
    assert torch.allclose(w.mean(), torch.tensor(1.0))
    assert torch.allclose(w[0, 0, 5, 5] / w[0, 0, 0, 0], torch.tensor(10.0))
    assert torch.equal(pixel_weights(img, 0.0), torch.ones_like(img[:, :1]))

    # the warm-up phase trains without quantisation, then the VQ phase starts from the k-means codebook
    model = build_tiny_model(resolution=16)
    logs = []
    result = train_vq(images.numpy(), model, VQTrainConfig(steps=4, batch_size=2, ae_warmup_steps=2, log_every=1,
                                                           contrast_weight=2.0), log=logs.append)
    assert [h["phase"] for h in result["history"]] == ["autoencoder"] * 2 + ["vq"] * 2
    assert any("k-means" in line for line in logs) and all(np.isfinite(h["loss"]) for h in result["history"])


def test_codebook_usage_counts_contents_that_share_a_code():
    """The round-trip diagnostic (benchmarks/vq_roundtrip.py): a code given to two cell contents is reported."""
    from liquid_train.quickstart.evaluate import EvalSet, codebook_usage
    from liquid_train.quickstart.scene import GRID, Scene

    scenes = [Scene("circle", "red", "left", 1, "white"), Scene("square", "blue", "left", 1, "white")]
    codes = np.zeros((2, GRID * GRID), dtype=np.int64)  # background cells: code 0
    cell = scenes[0].cells()[0][0] * GRID + scenes[0].cells()[0][1]
    codes[0, cell], codes[1, cell] = 1, 2
    usage = codebook_usage(EvalSet(scenes, [], codes))
    assert usage == {"codes_used": 3, "shape_contents": 2, "shape_codes": 2, "codes_shared_by_contents": 0,
                     "contents_sharing_a_code": 0}
    codes[1, cell] = 1  # red circle and blue square get one code: the decoder cannot tell them apart
    usage = codebook_usage(EvalSet(scenes, [], codes))
    assert usage["shape_codes"] == 1 and usage["codes_shared_by_contents"] == 1
    assert usage["contents_sharing_a_code"] == 2


def test_quickstart_vq_settings_reach_train_vq():
    """stage_vq and benchmarks/vq_roundtrip.py train with QuickstartConfig's VQ settings, the diagnosed lr included
    (1e-3 trained unstably on the quickstart scenes)."""
    qs = QuickstartConfig()
    tcfg = vq_train_config(qs)
    assert (tcfg.steps, tcfg.ae_warmup_steps, tcfg.batch_size, tcfg.lr, tcfg.contrast_weight) == (
        qs.vq_steps, qs.vq_warmup_steps, qs.vq_batch, qs.vq_lr, qs.vq_contrast_weight)
    assert tcfg.lr < 1e-3 and tcfg.ae_warmup_steps < tcfg.steps
