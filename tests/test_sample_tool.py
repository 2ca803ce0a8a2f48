"""tools/sample.py and liquid_train.inference on a real export (tiny qwen2.5: HF -> megatron -> HF).

Oracles: an unbatched, uncached loop of plain forward passes for T2I CFG (one prompt at a time, no padding), and
``transformers``' own ``generate`` (greedy, suppressed ids) for I2T captioning and text; the training templates for
the prompt layouts.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from helpers_model import save_tiny_hf
from liquid_train.data.config import I2T_PROMPT, T2I_INSTRUCTIONS
from liquid_train.data.templates import LiquidTemplates
from liquid_train.inference.liquid_hf import LiquidModelError, load_liquid_hf
from liquid_train.inference.sampling import SamplingConfig
from liquid_train.inference.tasks import (i2t_prompt_ids, image_to_text, t2i_prompt_ids, text_banned_ids,
                                          text_to_image, uncond_prompt_ids)
from liquid_train.models.hf_conversion import hf_to_megatron, megatron_to_hf
from liquid_train.parallel import destroy_parallel, initialize_parallel

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CODEBOOK = 512  # the registry's chameleon-vqgan-tiny (seeded random weights)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("sample")
    hf_dir, ckpt, out = str(root / "hf"), str(root / "ckpt"), str(root / "export")
    save_tiny_hf("qwen2.5", hf_dir, seed=4)
    initialize_parallel(1, 1, seed=3)
    try:
        hf_to_megatron(hf_dir, ckpt, "qwen2.5", "tiny", num_image_tokens=CODEBOOK, vq_tokenizer="chameleon-vqgan-tiny")
        megatron_to_hf(ckpt, out)
    finally:
        destroy_parallel()
    return out


def _naive_cfg_greedy(lm, prompt, steps, scale):
    """One prompt, no padding, no cache: full forwards of cond and uncond, CFG, argmax over the image ids."""
    v = lm.vocab
    cond, uncond, drawn = list(prompt), uncond_prompt_ids(lm), []
    for _ in range(steps):
        with torch.no_grad():
            lc = lm.model(input_ids=torch.tensor([cond])).logits[0, -1]
            lu = lm.model(input_ids=torch.tensor([uncond])).logits[0, -1]
        guided = (lu + scale * (lc - lu))[v.image_token_offset:v.image_token_end]
        tok = int(guided.argmax()) + v.image_token_offset
        cond.append(tok)
        uncond.append(tok)
        drawn.append(tok - v.image_token_offset)
    return drawn


def test_t2i_batched_cfg_equals_unbatched_oracle(exported):
    lm = load_liquid_hf(exported)
    captions = ["t5 t9 t11", "t40", "t7 t8 t9 t10 t12 t13"]  # different lengths: left padding is exercised
    cfg = SamplingConfig(cfg_scale=3.0, temperature=0.0)
    codes = text_to_image(lm, captions, 6, cfg, batch_size=2, progress=False)
    assert codes.shape == (3, 6) and codes.min() >= 0 and codes.max() < CODEBOOK
    for row, cap in zip(codes, captions):
        assert row.tolist() == _naive_cfg_greedy(lm, t2i_prompt_ids(lm, cap), 6, 3.0)
    # sampled (not greedy): still only image codes, reproducible from the seed
    sampled = text_to_image(lm, captions, 6, SamplingConfig(cfg_scale=3.0, seed=5), progress=False)
    again = text_to_image(lm, captions, 6, SamplingConfig(cfg_scale=3.0, seed=5), progress=False)
    assert np.array_equal(sampled, again) and sampled.min() >= 0 and sampled.max() < CODEBOOK


def test_i2t_and_text_equal_transformers_generate(exported):
    lm = load_liquid_hf(exported)
    v = lm.vocab
    rng = np.random.default_rng(0)
    grids = rng.integers(0, CODEBOOK, (2, 16))
    captions = image_to_text(lm, grids, max_new_tokens=8, batch_size=2)
    banned = text_banned_ids(lm).tolist()
    for grid, got in zip(grids, captions):
        prompt = torch.tensor([i2t_prompt_ids(lm, grid)])
        ref = lm.model.generate(prompt, max_new_tokens=8, do_sample=False, suppress_tokens=banned,
                                eos_token_id=v.eos_id, pad_token_id=v.pad_id)[0, prompt.shape[1]:]
        assert got == lm.decode_text(ref.tolist()).strip()
        assert not any(v.is_image_id(np.array(ref)))


def test_prompts_match_training_templates(exported):
    lm = load_liquid_hf(exported)
    v = lm.vocab
    tok = lm.tokenizer
    tmpl = LiquidTemplates(v, tok, seq_length=64, seed=0, cfg_drop_prob=0.0, t2i_instructions=[T2I_INSTRUCTIONS[0]])
    caption_ids = np.array(lm.encode_text("t5 t9 t11"))
    codes = np.arange(16)
    t2i = tmpl.t2i(0, caption_ids, codes).tokens.tolist()
    assert t2i_prompt_ids(lm, "t5 t9 t11") == t2i[:t2i.index(v.boi_id) + 1]
    i2t = tmpl.i2t(0, caption_ids, codes).tokens.tolist()
    head = i2t_prompt_ids(lm, codes, I2T_PROMPT)
    assert head == i2t[:len(head)] and i2t[len(head):] == caption_ids.tolist() + [v.eos_id]
    assert uncond_prompt_ids(lm) == [v.bos_id, v.uncond_id, v.boi_id]


def test_cli_t2i_i2t_text(exported, tmp_path):
    from PIL import Image

    grid, codes = str(tmp_path / "grid.png"), str(tmp_path / "codes.npy")
    run = lambda *a: subprocess.run([sys.executable, os.path.join(REPO, "tools", "sample.py"), *a], cwd=REPO,  # noqa
                                    capture_output=True, text=True, timeout=300)
    proc = run("t2i", "--model", exported, "--vq", "chameleon-vqgan-tiny", "--resolution", "32", "--prompt", "t5 t9",
               "--prompt", "t40 t41", "--prompt", "t7", "--out", grid, "--save-codes", codes, "--cols", "3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = np.load(codes)
    assert saved.shape == (3, 16) and saved.min() >= 0 and saved.max() < CODEBOOK
    im = Image.open(grid)
    assert im.width > 3 * 128 and im.height > 128  # three tiles upscaled to >= 128 px, captions underneath
    Image.fromarray(np.full((48, 64, 3), 128, np.uint8)).save(tmp_path / "in.png")
    proc = run("i2t", "--model", exported, "--vq", "chameleon-vqgan-tiny", "--resolution", "32", "--image",
               str(tmp_path / "in.png"), "--max-new-tokens", "5")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["image"].endswith("in.png")
    proc = run("text", "--model", exported, "--prompt", "t3 t4", "--max-new-tokens", "4")
    assert proc.returncode == 0 and "continuation" in json.loads(proc.stdout.strip().splitlines()[-1])


def test_bad_inputs_give_clear_errors(exported, tmp_path):
    plain = str(tmp_path / "plain")
    save_tiny_hf("qwen2.5", plain)  # a base HF model: no image vocabulary
    with pytest.raises(LiquidModelError, match="liquid_vocab.json"):
        load_liquid_hf(plain)
    with pytest.raises(LiquidModelError, match="not a directory"):
        load_liquid_hf(str(tmp_path / "missing"))
    from data_pipeline.vq import REGISTRY, VQGANConfig, VQModel, save_vqgan

    other = str(tmp_path / "vq256")  # a VQ whose codebook is not the model's 512 image ids
    save_vqgan(VQModel(VQGANConfig(**{**REGISTRY["chameleon-vqgan-tiny"].params, "n_embed": 256})), other)
    proc = subprocess.run([sys.executable, os.path.join(REPO, "tools", "sample.py"), "t2i", "--model", exported,
                           "--vq", other, "--prompt", "t1", "--out", str(tmp_path / "x.png")],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "codebook 256" in proc.stderr and "512 image ids" in proc.stderr, \
        proc.stderr[-2000:]
    assert not os.path.exists(tmp_path / "x.png")


# --- the export's image record: defaults for sampling, and what the model cannot hold -----------------------------
@pytest.fixture(scope="module")
def trained_export(tmp_path_factory):
    """An export of a checkpoint whose ``liquid_model.json`` carries the image record the trainer stores (from a
    pairs dataset encoded at 32 px with the tiny VQ: 4x4 codes) and the run's tokenizer."""
    from data_pipeline.vq import load_vq_tokenizer
    from liquid_train import image_meta

    root = tmp_path_factory.mktemp("trained_export")
    hf_dir, ckpt, out = str(root / "hf"), str(root / "ckpt"), str(root / "export")
    save_tiny_hf("qwen2.5", hf_dir, seed=4)
    (root / "pairs.meta.json").write_text(json.dumps({
        "kind": "pairs", "image_grid": [4, 4], "codebook_size": CODEBOOK, "vq_tokenizer": "chameleon-vqgan-tiny",
        "vq_identity": load_vq_tokenizer("chameleon-vqgan-tiny").identity, "resolution": 32}))
    initialize_parallel(1, 1, seed=3)
    try:
        hf_to_megatron(hf_dir, ckpt, "qwen2.5", "tiny", num_image_tokens=CODEBOOK, vq_tokenizer="chameleon-vqgan")
        side = json.loads((root / "ckpt" / "liquid_model.json").read_text())
        side.update(image_meta.sidecar_entries({"pairs_path": str(root / "pairs"), "tokenizer": hf_dir,
                                                "i2t_prompt": "Caption:"}))
        (root / "ckpt" / "liquid_model.json").write_text(json.dumps(side))
        megatron_to_hf(ckpt, out)
    finally:
        destroy_parallel()
    return out


def _args(model, **kw):
    from types import SimpleNamespace

    base = dict(model=model, device="cpu", dtype=None, prompt=["t5 t9"], prompts_file=None, vq=None, resolution=None,
                cfg_scale=3.0, batch_size=8, cols=None, temperature=0.0, top_k=0, top_p=1.0, seed=0, save_codes=None,
                max_new_tokens=4, image=None)
    base.update(kw)
    return SimpleNamespace(**base)


def test_export_records_the_image_side(trained_export):
    rec = json.loads(open(os.path.join(trained_export, "liquid_image_tokens.json")).read())
    assert rec["image_grid"] == [4, 4] and rec["resolution"] == 32 and rec["codebook_size"] == CODEBOOK
    assert rec["vq_tokenizer"] == "chameleon-vqgan-tiny"  # the data's VQ, not the vocabulary's chameleon-vqgan
    assert rec["vq_identity"].startswith("sha256:") and rec["i2t_prompt"] == "Caption:"
    assert rec["t2i_instructions"] == T2I_INSTRUCTIONS


def test_t2i_at_the_trained_grid_needs_no_flags(trained_export, tmp_path, capsys):
    from liquid_train.inference.commands import t2i

    codes = str(tmp_path / "codes.npy")
    assert t2i(_args(trained_export, out=str(tmp_path / "g.png"), save_codes=codes)) == 0
    assert np.load(codes).shape == (1, 16) and "4x4 codes each, 32 px" in capsys.readouterr().out
    # another resolution the positions hold (8x8 codes) is honoured
    assert t2i(_args(trained_export, out=str(tmp_path / "g2.png"), save_codes=codes, resolution=64)) == 0
    assert np.load(codes).shape == (1, 64)


def test_what_the_model_cannot_hold_or_was_not_trained_with_is_refused(trained_export, exported, tmp_path):
    from data_pipeline.vq import REGISTRY, VQGANConfig, VQModel, save_vqgan
    from liquid_train.inference.commands import i2t, t2i

    with pytest.raises(ValueError, match=r"--resolution 512 \(64x64 = 4096 codes.*needs 4\d\d\d positions but the "
                                         r"model has 1024.*trained on 4x4 codes at 32 px"):
        t2i(_args(trained_export, out=str(tmp_path / "x.png"), resolution=512))
    from PIL import Image

    Image.fromarray(np.full((40, 40, 3), 90, np.uint8)).save(tmp_path / "in.png")
    with pytest.raises(ValueError, match=r"--max-new-tokens 2000 after a prompt of \d+ positions.*use at most"):
        i2t(_args(trained_export, image=[str(tmp_path / "in.png")], max_new_tokens=2000))
    other = str(tmp_path / "vq_other")  # same architecture and codebook, other weights
    torch.manual_seed(7)
    save_vqgan(VQModel(VQGANConfig(**REGISTRY["chameleon-vqgan-tiny"].params)), other)
    with pytest.raises(ValueError, match="not the ones the training data was encoded with"):
        t2i(_args(trained_export, out=str(tmp_path / "x.png"), vq=other))
    with pytest.raises(ValueError, match="records no image grid.*pass --resolution"):  # an import, never trained
        t2i(_args(exported, out=str(tmp_path / "x.png"), vq="chameleon-vqgan-tiny"))
    assert not os.path.exists(tmp_path / "x.png")
    proc = subprocess.run([sys.executable, os.path.join(REPO, "tools", "sample.py"), "t2i", "--model", trained_export,
                           "--resolution", "512", "--prompt", "t1", "--out", str(tmp_path / "x.png")],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    err = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(err) == 1 and "positions" in err[0], proc.stderr[-2000:]
