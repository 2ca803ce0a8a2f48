"""Every config problem is one line naming the key and where its value was set, exit 2, before any process group,
model or dataset exists (the CLI as a user runs it)."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import torch

from liquid_train import cli
from liquid_train.testing.runs import ensure_tiny_run_data, tiny_run_overrides

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return ensure_tiny_run_data(str(tmp_path_factory.mktemp("preflight") / "tiny_data"))


def _cli(capsys, argv):
    code = cli.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


def _ok_args(data, tmp_path):
    return [f"run_dir={tmp_path}/run", *tiny_run_overrides(data)]


CASES = [
    # (overrides, key in the message, a phrase of the message)
    (["model.size=13b"], "model.size", "unknown size"),
    (["model.family=mistral"], "model.family", "unknown model family"),
    (["model.arch.hidden_sizes=3"], "model.arch", "unknown field"),
    (["data.mixture={text: -1, t2i: 1}"], "data.mixture", ">= 0"),
    (["data.mixture={text: 0, t2i: 0, i2t: 0}"], "data.mixture", "positive sum"),
    (["data.pairs_path=/nonexistent/pairs"], "data.pairs_path", "/nonexistent/pairs.bin does not exist"),
    (["data.tokenizer=/nonexistent/tok"], "data.tokenizer", "not a directory"),
    (["data.seq_length=4096"], "data.seq_length", "exceeds the 1024 positions"),
    (["parallel.tensor_parallel=3"], "parallel.tensor_parallel", "does not divide"),
    (["model.precision=bf16"], "model.precision", "needs a GPU"),
    (["model.precision=fp8", "model.fp8.bf16_layers=0"], "model.precision", "FP8 needs a CUDA GPU"),
    (["model.precision=fp8"], "model.fp8.bf16_layers", "leaves no FP8 layer"),
    (["model.precision=fp8", "model.fp8.recipe=delayed"], "model.fp8.bf16_layers", "delayed scaling"),
    (["model.attention_backend=te"], "model.attention_backend", "no CUDA GPU"),
    (["model.attention_backend=flex"], "model.attention_backend", "no backward pass on CPU"),
    (["model.fusions=all"], "model.fusions", "needs a CUDA GPU"),
    (["model.recompute.granularity=some"], "model.recompute.granularity", "choose one of"),
    (["model.recompute.granularity=full", "model.recompute.method=every"], "model.recompute.method", "choose"),
    (["model.init_from=/nonexistent/ckpt"], "model.init_from", "not a directory"),
]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU answers")
@pytest.mark.parametrize("overrides,key,phrase", CASES, ids=[c[1] + ":" + c[0][-1] for c in CASES])
def test_one_line_naming_the_key_and_its_source(capsys, tmp_path, data, overrides, key, phrase):
    code, err = _cli(capsys, _ok_args(data, tmp_path) + overrides)
    assert code == 2, err
    assert len(err) == 1, err
    assert f"config key '{key}'" in err[0] and phrase in err[0], err[0]
    set_here = any(o.split("=")[0].startswith(key) or key.startswith(o.split("=")[0]) for o in overrides)
    assert ("(set on the command line)" if set_here else "(default)") in err[0], err[0]
    assert not os.path.exists(tmp_path / "run" / "metrics.jsonl")


def test_yaml_syntax_error_names_file_and_line(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("run_dir: x\ntrain:\n  iters: [1, 2\n")
    code, err = _cli(capsys, ["--config", str(bad)])
    assert code == 2 and len(err) == 1 and f"{bad}:" in err[0] and "not valid YAML" in err[0], err


def test_sweep_style_config_without_vocab_or_tokenizer(capsys, tmp_path):
    """A config composed without paths (as a sweep writes it) is refused on the first missing one, naming where
    the key was set."""
    cfg = tmp_path / "composed.yaml"
    cfg.write_text(f"run_dir: {tmp_path}/r\nmodel:\n  vocab: null\ndata:\n  tokenizer: null\n  seq_length: 128\n")
    code, err = _cli(capsys, ["--config", str(cfg)])
    assert code == 2 and len(err) == 1 and "config key 'model.vocab'" in err[0], err
    assert f"(set in {cfg})" in err[0], err


def test_every_rank_exits_2_and_only_rank0_speaks(tmp_path, data):
    """Two ranks of a job (the environment torchrun gives them), a missing data path: both exit 2 within seconds,
    before any process group, with one line in all and no traceback."""
    args = [sys.executable, "-m", "liquid_train.cli", f"run_dir={tmp_path}/run", *tiny_run_overrides(data),
            "data.text_path=/nonexistent/text"]
    start = time.time()
    procs = []
    for rank in (0, 1):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                   MASTER_PORT="1", OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
        procs.append(subprocess.Popen(args, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [2, 2], outs
    lines = [line for _, err in outs for line in err.strip().splitlines() if line]
    assert len(lines) == 1 and "config key 'data.text_path'" in lines[0], lines
    assert "Traceback" not in "".join(e for _, e in outs)
    assert time.time() - start < 60


# --- the tokenizer against the vocabulary, the image side against the data (checked before step 1) ----------------
def _vocab_file(tmp_path, data, **changes):
    import dataclasses
    import json

    from liquid_train.vocab import LiquidVocab

    vocab = dataclasses.replace(LiquidVocab.load(data.vocab), **changes)
    path = tmp_path / "vocab" / "liquid_vocab.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(vocab.to_dict()))
    return str(path)


def _pairs_copy(tmp_path, data, **meta_changes):
    import json
    import shutil

    out = tmp_path / "pairs_copy"
    out.mkdir(exist_ok=True)
    for suffix in (".bin", ".idx", ".meta.json"):
        shutil.copy(data.pairs + suffix, out / f"pairs{suffix}")
    meta = json.loads((out / "pairs.meta.json").read_text())
    meta.update(meta_changes)
    (out / "pairs.meta.json").write_text(json.dumps(meta))
    return str(out / "pairs")


def _tiny_vq(directory, codebook: int, seed: int) -> str:
    import torch as _torch

    from data_pipeline.vq import VQGANConfig, VQModel, save_vqgan

    _torch.manual_seed(seed)
    save_vqgan(VQModel(VQGANConfig(ch=32, ch_mult=(1, 1), num_res_blocks=1, resolution=16, z_channels=32,
                                   n_embed=codebook, embed_dim=8)), str(directory))
    return str(directory)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU answers")
def test_tokenizer_special_ids_must_match_the_vocabulary(capsys, tmp_path, data):
    vocab = _vocab_file(tmp_path, data, eos_id=5)  # a vocabulary planned for another tokenizer
    code, err = _cli(capsys, _ok_args(data, tmp_path) + [f"model.vocab={vocab}", f"data.vocab={vocab}"])
    assert code == 2 and len(err) == 1, err
    assert "config key 'data.tokenizer'" in err[0] and "eos_token '</s>' is id 2" in err[0], err[0]
    assert f"{vocab} has eos_id 5" in err[0] and "re-import the base model with --tokenizer" in err[0], err[0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU answers")
def test_pairs_codebook_must_be_the_vocabularys_image_range(capsys, tmp_path, data):
    pairs = _pairs_copy(tmp_path, data, codebook_size=512, vq_tokenizer="chameleon-vqgan-tiny")
    code, err = _cli(capsys, _ok_args(data, tmp_path) + [f"data.pairs_path={pairs}"])
    assert code == 2 and len(err) == 1, err
    assert "config key 'data.pairs_path'" in err[0] and "512-entry codebook" in err[0] and "64 image ids" in err[0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU answers")
def test_sampling_vq_is_checked_before_step_1(capsys, tmp_path, data, monkeypatch):
    from data_pipeline.vq import load_vq_tokenizer
    from liquid_train.training.config import load_config
    from liquid_train.training.preflight import preflight

    monkeypatch.setenv("HOME", str(tmp_path))  # no Chameleon weights anywhere
    monkeypatch.delenv("LIQUID_CHAMELEON_VQGAN_DIR", raising=False)
    args = _ok_args(data, tmp_path) + ["sampling.interval=5"]
    # a path that does not exist: one line, before any model or dataset (the run used to die at its first sample)
    code, err = _cli(capsys, args + ["sampling.vq_tokenizer=/nonexistent/vq"])
    assert code == 2 and len(err) == 1 and "config key 'sampling.vq_tokenizer' (set on the command line)" in err[0]
    assert "cannot be loaded" in err[0] and not os.path.exists(tmp_path / "run" / "metrics.jsonl"), err
    # no sampling.vq_tokenizer: the vocabulary's (chameleon-vqgan), whose weights are not placed
    code, err = _cli(capsys, args)
    assert code == 2 and len(err) == 1 and "config key 'sampling.interval'" in err[0] and "chameleon-vqgan" in err[0]
    # a VQ whose codebook is not the vocabulary's image range
    code, err = _cli(capsys, args + ["sampling.vq_tokenizer=chameleon-vqgan-tiny"])
    assert code == 2 and "has 512 codes but" in err[0] and "64 image ids" in err[0], err
    # the right codebook, other weights than the pairs were encoded with: refused; the same weights: accepted
    encoded, other = _tiny_vq(tmp_path / "vq_a", 64, seed=0), _tiny_vq(tmp_path / "vq_b", 64, seed=1)
    pairs = _pairs_copy(tmp_path, data, vq_tokenizer=encoded,
                        vq_identity=load_vq_tokenizer(encoded).identity)
    code, err = _cli(capsys, args + [f"data.pairs_path={pairs}", f"sampling.vq_tokenizer={other}"])
    assert code == 2 and len(err) == 1 and "other weights" in err[0] and "vq_b" in err[0], err
    cfg = load_config(None, args + [f"data.pairs_path={pairs}"])  # default: the VQ recorded with the pairs
    preflight(cfg, world_size=1)
