"""Sweeps and the shipped run configs are runnable: every composed config passes the trainer's preflight (files,
layout at the plan's world size, vocabulary, tokenizer ids, data, sampling VQ) once the required paths are given,
and a config whose required paths are not given is refused naming the key. The launch scripts match their configs.

The paths are stand-ins made here: for each base model a converted-checkpoint directory (``liquid_model.json`` of
the registry architecture + ``liquid_vocab.json`` as the importer plans it), a tokenizer with the family's special
tokens at the family's ids, indexed-dataset files and a ``pairs.meta.json`` recording a VQ whose weights are placed
where ``chameleon-vqgan`` is looked up (a small VQ with the 8192-entry codebook)."""
import os
import re
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from liquid_train.planning import sweeps
from liquid_train.training.config import ConfigError, load_config
from liquid_train.training.preflight import preflight

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPECIALS = {  # family -> (token, id, role) as in the public tokenizers
    "qwen2.5": [("<|endoftext|>", 151643, ("eos_token", "pad_token"))],
    "llama3.2": [("<|begin_of_text|>", 128000, ("bos_token",)), ("<|end_of_text|>", 128001, ("eos_token",))],
    "gemma": [("<pad>", 0, ("pad_token",)), ("<eos>", 1, ("eos_token",)), ("<bos>", 2, ("bos_token",))],
}
SPECIALS["gemma2"] = SPECIALS["gemma"]


def _tokenizer(family: str, directory: str) -> None:
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    specials = SPECIALS[family]
    size = max(i for _, i, _ in specials) + 1
    names = {i: t for t, i, _ in specials}
    vocab = {names.get(i, f"t{i}"): i for i in range(max(size, 8))}
    roles = {role: t for t, _, rs in specials for role in rs}
    fast = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="t3")),
                                   unk_token="t3", **roles)
    fast.save_pretrained(directory)


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    """Stand-in paths for every model of the sweeps and run configs; sets the chameleon-vqgan weights directory."""
    import json

    from data_pipeline.vq import VQGANConfig, VQModel, load_vq_tokenizer, save_vqgan
    from liquid_train.models.families import get_model_arch
    from liquid_train.models.vocab_extension import plan_vocab

    root = tmp_path_factory.mktemp("sweep_paths")
    vq_dir = str(root / "chameleon-vqgan")
    save_vqgan(VQModel(VQGANConfig(ch=32, ch_mult=(1, 1), num_res_blocks=1, resolution=32, z_channels=32,
                                   n_embed=8192, embed_dim=8)), vq_dir)
    mp = pytest.MonkeyPatch()
    mp.setenv("LIQUID_CHAMELEON_VQGAN_DIR", vq_dir)
    identity = load_vq_tokenizer("chameleon-vqgan").identity
    data = root / "data"
    data.mkdir()
    for name in ("pairs", "text"):
        for suffix in (".bin", ".idx"):
            (data / f"{name}{suffix}").write_bytes(b"")
    (data / "pairs.meta.json").write_text(json.dumps({"kind": "pairs", "vq_tokenizer": "chameleon-vqgan",
                                                      "codebook_size": 8192, "image_grid": [32, 32],
                                                      "vq_identity": identity, "resolution": 512}))
    models = {}
    for mfile in sorted(os.listdir(os.path.join(REPO, "configs/models"))):
        m = OmegaConf.load(os.path.join(REPO, "configs/models", mfile)).model
        arch = get_model_arch(m.family, m.size)
        ckpt = root / "ckpt" / mfile[:-5]
        ckpt.mkdir(parents=True)
        (ckpt / "liquid_model.json").write_text(json.dumps({"family": arch.family, "size": arch.size,
                                                            "arch": arch.to_dict()}))
        plan_vocab(arch, 8192, "chameleon-vqgan").save(str(ckpt))
        tok = root / "tok" / arch.family
        if not tok.exists():
            _tokenizer(arch.family, str(tok))
        models[mfile[:-5]] = (str(ckpt), str(tok))
    yield {"root": root, "models": models, "pairs": str(data / "pairs"), "text": str(data / "text")}
    mp.undo()


def _settings(paths):
    ckpts = os.path.dirname(next(iter(paths["models"].values()))[0])
    toks = os.path.dirname(next(iter(paths["models"].values()))[1])
    return [f"model.init_from={ckpts}/{{model}}", f"data.tokenizer={toks}/{{family}}",
            f"data.pairs_path={paths['pairs']}", f"data.text_path={paths['text']}"]


def test_paper_scaling_composes_and_every_config_passes_preflight(tmp_path, paths):
    runs = sweeps.expand(os.path.join(REPO, "configs/sweeps/paper_scaling.yaml"), str(tmp_path), "runs",
                         _settings(paths))
    assert len(runs) == 6 * 3 and all(not r.missing for r in runs)
    sweeps.check(runs)  # raises ConfigError naming the file and key on any problem
    cfg = load_config(str(tmp_path / "qwen2.5_32b__t2i_only.yaml"))
    assert dict(cfg.data.mixture) == {"text": 0, "t2i": 1, "i2t": 0}
    assert cfg.parallel.tensor_parallel == 4 and cfg.train.iters == 40000
    assert cfg.checkpoint.save_interval == 1000 and cfg.checkpoint.save_interval_minutes == 60
    assert cfg.model.init_from == paths["models"]["qwen2.5_32b"][0]
    assert cfg.data.tokenizer.endswith("/tok/qwen2.5")
    assert cfg.run_dir.endswith("paper_scaling/qwen2.5_32b__t2i_only")
    lines = (tmp_path / "commands.txt").read_text().splitlines()
    assert lines == [r.command for r in runs]
    assert (f"GPUS_PER_NODE=8 CONFIG={tmp_path}/qwen2.5_32b__mixed.yaml sbatch --nodes=4 --gpus-per-node=8 "
            "launch/pretrain.sh") in lines


def test_ratio_ablation_expands_and_passes(tmp_path, paths):
    runs = sweeps.expand(os.path.join(REPO, "configs/sweeps/ratio_ablation.yaml"), str(tmp_path), "runs",
                         _settings(paths))
    sweeps.check(runs)
    mix = {n: dict(OmegaConf.load(tmp_path / f"gemma_7b__{n}.yaml").data.mixture)
           for n in ("r1_1_1", "r1_2_1", "r1_1_2")}
    assert mix["r1_2_1"] == {"text": 1, "t2i": 2, "i2t": 1} and mix["r1_1_2"] == {"text": 1, "t2i": 1, "i2t": 2}


def test_unset_required_fields_are_marked_and_refused(tmp_path, paths):
    runs = sweeps.expand(os.path.join(REPO, "configs/sweeps/paper_scaling.yaml"), str(tmp_path))
    text_only = next(r for r in runs if r.name == "qwen2.5_0.5b__text_only")
    assert text_only.missing == ["model.init_from", "data.tokenizer", "data.text_path"]  # no pairs for text only
    assert "Required before launch" in open(text_only.path).read()
    with pytest.raises(ConfigError, match=r"config key 'data.text_path'.*is required.*also required: "
                                          r"data.tokenizer, model.init_from"):
        load_config(text_only.path)
    with pytest.raises(ConfigError, match=r"qwen2.5_0.5b__text_only.yaml.*is required"):
        sweeps.check([text_only])
    # the CLI: a note lists what is unset; --check refuses in one line, exit 2
    proc = subprocess.run([sys.executable, os.path.join(REPO, "tools", "sweep.py"),
                           os.path.join(REPO, "configs/sweeps/ratio_ablation.yaml"), "--out", str(tmp_path / "cli"),
                           "--check"], capture_output=True, text=True, timeout=120)
    err = [line for line in proc.stderr.splitlines() if line.startswith(("note:", "error:"))]
    assert proc.returncode == 2 and len(err) == 2, proc.stderr
    assert "data.pairs_path, data.text_path, data.tokenizer, model.init_from" in err[0]
    assert "gemma_7b__r1_1_1.yaml" in err[1] and "is required" in err[1] and "model.init_from" in err[1]


def test_a_wrong_path_fails_the_check_naming_the_key(tmp_path, paths):
    settings = _settings(paths)
    settings[-1] = "data.text_path=/nonexistent/text"
    runs = sweeps.expand(os.path.join(REPO, "configs/sweeps/ratio_ablation.yaml"), str(tmp_path), "runs", settings)
    with pytest.raises(ConfigError, match=r"data.text_path.*/nonexistent/text.bin does not exist"):
        sweeps.check(runs)


RUN_CONFIGS = {"qwen2.5_0.5b_mixed": ("qwen2.5_0.5b", "pretrain_0.5b.sh"),
               "qwen2.5_7b_mixed": ("qwen2.5_7b", "pretrain_7b.sh"),
               "qwen2.5_32b_mixed": ("qwen2.5_32b", "pretrain_32b.sh"),
               "gemma_7b_mixed": ("gemma_7b", "pretrain_gemma_7b.sh")}


@pytest.mark.parametrize("run", sorted(RUN_CONFIGS))
def test_shipped_run_configs_match_their_model_and_launcher_and_pass_preflight(run, paths):
    model, launcher = RUN_CONFIGS[run]
    path = os.path.join(REPO, "configs/runs", f"{run}.yaml")
    mcfg = OmegaConf.load(os.path.join(REPO, "configs/models", f"{model}.yaml"))
    with pytest.raises(ConfigError, match="is required"):  # the paths are marked, not guessed
        load_config(path)
    ckpt, tok = paths["models"][model]
    cfg = load_config(path, [f"model.init_from={ckpt}", f"data.tokenizer={tok}", f"data.pairs_path={paths['pairs']}",
                             f"data.text_path={paths['text']}"])
    for key in ("model.family", "model.size", "model.recompute.granularity", "parallel.tensor_parallel",
                "parallel.pipeline_parallel", "parallel.sequence_parallel", "train.global_batch_size",
                "train.micro_batch_size", "optimizer.clip_grad", "optimizer.z_loss_weight"):
        assert OmegaConf.select(cfg, key) == OmegaConf.select(mcfg, key), key
    assert cfg.data.seq_length == 2048 and dict(cfg.data.mixture) == {"text": 1, "t2i": 1, "i2t": 1}  # included
    assert cfg.sampling.interval > 0 and cfg.checkpoint.save_interval == 1000
    preflight(cfg, mcfg.plan.nodes * mcfg.plan.gpus_per_node, machine=False)
    text = open(os.path.join(REPO, "launch", launcher)).read()
    assert re.search(rf"^#SBATCH --nodes={mcfg.plan.nodes}$", text, re.M)
    assert f'CONFIG="${{CONFIG:-$repo/configs/runs/{run}.yaml}}"' in text
    assert text.splitlines()[1].startswith(f"# {model} on {mcfg.plan.nodes} node(s)")
