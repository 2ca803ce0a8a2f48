"""``python -m liquid_train.quickstart [--out DIR] [--short]``: the whole system end to end on a CPU.

Stages (each timed; each reuses its output on a rerun):
  1. synthetic image-text pairs (img2dataset-style tars) + templated text corpus
  2. train the tiny VQGAN on the pairs (``data_pipeline.vq_train``: autoencoder warm-up, k-means codebook, VQ)
     -> vqgan.ckpt + vqgan.yaml
  3. train a byte-level BPE (``tokenizers``) in the qwen2.5 tiny layout (pieces, then <|endoftext|> ...) and extend
     it with ``plan_vocab`` exactly as a real base model is (``liquid_vocab.json``)
  4. ``python -m data_pipeline encode`` and ``build pairs`` / ``build text`` (the real CLI)
  5. mix-pretrain with the real trainer: 3 sizes at 1:1:1, the 1:2:1 and 1:1:2 ablations at the middle size,
     text-only runs at the smallest and largest size
  6. fit scaling curves (``tools/scaling_laws.py``)
  7. export each mixed run to HF (``tools/convert_checkpoint.py megatron-to-hf``), sample T2I/I2T from it and score
     with the analyser / caption parser (``evaluate.py``); one grid through ``tools/sample.py``
  8. answer the paper's three questions from the measured numbers -> ``results.md`` (``report.py``)
A stage whose component is not in the checkout fails with a message naming the missing file.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Dict, List

from rich.console import Console
from rich.markdown import Markdown
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from data_pipeline.vq import load_vq_tokenizer
from data_pipeline.vq.checkpoint import save_vqgan
from data_pipeline.vq.model import VQGANConfig
from data_pipeline.vq.registry import REGISTRY
from data_pipeline.vq_train import VQTrainConfig, build_tiny_model, load_images_from_tars, train_vq
from liquid_train.atomic import atomic_write_text
from liquid_train.models.families import get_model_arch
from liquid_train.models.vocab_extension import extend_tokenizer, plan_vocab
from liquid_train.quickstart.evaluate import EvalConfig, build_eval_set, chance_accuracy, evaluate_exported, vq_ceiling
from liquid_train.quickstart.report import answer_questions, attribute_mean, results_markdown
from liquid_train.quickstart.scene import GRID, all_scenes, caption
from liquid_train.quickstart.sizes import FAMILY
from liquid_train.quickstart.synthetic import SyntheticConfig, eval_scenes, write_pairs, write_text_corpus

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class StageMissing(RuntimeError):
    """A component the quickstart drives is not present in this checkout."""


@dataclass
class QuickstartConfig:
    out: str = "quickstart_out"
    short: bool = False
    num_pairs: int = 3000
    vq_steps: int = 780
    """~127 s at 1 thread on 2 cores (0.16 s/step at batch 8), the stage's budget (measured by
    ``benchmarks/vq_roundtrip.py``)."""
    vq_warmup_steps: int = 550
    """Autoencoder steps before the k-means codebook (see ``data_pipeline.vq_train``). The autoencoder, not the
    quantiser, limits the round trip: encoder -> decoder alone scored as low as the VQ (0.33 vs 0.32 mean attribute
    accuracy at 600/400 steps, lr 1e-3), so the extra steps go to the warm-up."""
    vq_lr: float = 4e-4
    """Not the CLI default 1e-3: on these flat, sparse scenes 1e-3 trains unstably (weighted L1 jumps 0.22 -> 0.85
    between steps 100 and 200 at batch 4) and 2e-3 / 3e-3 never got past the background in 400 steps. Warm-up
    autoencoder round trip at 400 / 500 steps: lr 1e-3 0.36 / -, 4e-4 0.45 / 0.48, 2e-4 0.41 / 0.51. Full VQ
    round trip (780 steps, 550 warm-up): 0.70 (colour 0.62, position 0.81) vs 0.32 before (600 / 400, lr 1e-3)."""
    vq_batch: int = 8
    vq_contrast_weight: float = 10.0
    train_iters: int = 300
    seq_length: int = 128
    eval_scenes: int = 48
    timings: Dict[str, float] = field(default_factory=dict)

    def shorten(self) -> None:
        self.short = True
        self.num_pairs, self.vq_steps, self.vq_warmup_steps, self.train_iters, self.eval_scenes = 300, 4, 2, 6, 8


def _stage(cfg: QuickstartConfig, name: str):
    class _Timer:
        def __enter__(self):
            print(f"\n=== [{name}] ===", flush=True)
            self.t = time.time()

        def __exit__(self, *exc):
            cfg.timings[name] = time.time() - self.t
            print(f"=== [{name}] {cfg.timings[name]:.1f}s ===", flush=True)

    return _Timer()


def _run(cmd: List[str]) -> None:
    print("$ " + " ".join(cmd), flush=True)
    env = dict(os.environ, WANDB_MODE="disabled", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    proc = subprocess.run(cmd, cwd=REPO, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"command failed with exit code {proc.returncode}: {' '.join(cmd)}")


def _require(path: str, what: str) -> str:
    full = os.path.join(REPO, path)
    if not os.path.exists(full):
        raise StageMissing(f"{what}: {path} is not in this checkout; this stage cannot run without it")
    return full


def stage_synthetic(cfg: QuickstartConfig, cell: int) -> None:
    scfg = SyntheticConfig(num_pairs=cfg.num_pairs, cell_size=cell, num_text_docs=cfg.num_pairs)
    write_pairs(scfg, os.path.join(cfg.out, "pairs"))
    write_text_corpus(scfg, os.path.join(cfg.out, "text", "corpus.jsonl"))


def vq_train_config(cfg: QuickstartConfig) -> VQTrainConfig:
    """The quickstart's VQ training settings (``benchmarks/vq_roundtrip.py`` trains with the same)."""
    return VQTrainConfig(steps=cfg.vq_steps, batch_size=cfg.vq_batch, lr=cfg.vq_lr, log_every=100,
                         ae_warmup_steps=cfg.vq_warmup_steps, contrast_weight=cfg.vq_contrast_weight)


def stage_vq(cfg: QuickstartConfig, image_size: int) -> None:
    out = os.path.join(cfg.out, "vq")
    if os.path.exists(os.path.join(out, "vqgan.ckpt")):
        print("reusing", out)
        return
    images = load_images_from_tars(sorted(glob.glob(os.path.join(cfg.out, "pairs", "*.tar"))))
    model = build_tiny_model(resolution=image_size)
    result = train_vq(images, model, vq_train_config(cfg))
    save_vqgan(model, out)
    with open(os.path.join(out, "history.json"), "w") as f:
        json.dump(result["history"], f)


QWEN_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
"""Qwen2.5's first three specials, placed after the BPE pieces exactly as in the real tokenizer (bos = eos = pad =
<|endoftext|>), so the tiny tokenizer has the family's layout and the real vocabulary plan applies unchanged."""


def stage_tokenizer(cfg: QuickstartConfig, codebook: int) -> None:
    """A byte-level BPE in the qwen2.5 tiny layout, extended by ``plan_vocab`` as a real base model would be."""
    arch = get_model_arch(FAMILY, "tiny")
    vocab = plan_vocab(arch, codebook, vq_tokenizer=os.path.abspath(os.path.join(cfg.out, "vq")))
    tok_dir = os.path.join(cfg.out, "tokenizer")
    if not os.path.exists(os.path.join(tok_dir, "tokenizer.json")):
        pieces = arch.bos_token_id  # BPE pieces take ids [0, bos); the specials follow, as in Qwen2.5
        bpe = Tokenizer(models.BPE(unk_token="<unk>"))
        bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        bpe.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=pieces, special_tokens=["<unk>"],
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        corpus = [json.loads(line)["text"] for line in open(os.path.join(cfg.out, "text", "corpus.jsonl"))]
        bpe.train_from_iterator(corpus + [caption(s) for s in all_scenes()], trainer)
        filler = [AddedToken(f"<|unused_{i}|>", special=True) for i in range(pieces - bpe.get_vocab_size())]
        bpe.add_special_tokens(filler + [AddedToken(t, special=True) for t in QWEN_SPECIALS])
        tok = PreTrainedTokenizerFast(tokenizer_object=bpe, unk_token="<unk>", bos_token=QWEN_SPECIALS[0],
                                      eos_token=QWEN_SPECIALS[0], pad_token=QWEN_SPECIALS[0])
        if tok.convert_tokens_to_ids(QWEN_SPECIALS[0]) != arch.bos_token_id or len(tok) != arch.tokenizer_vocab_size:
            raise RuntimeError(f"quickstart tokenizer layout: {QWEN_SPECIALS[0]} at "
                               f"{tok.convert_tokens_to_ids(QWEN_SPECIALS[0])}, length {len(tok)}; the qwen2.5 tiny "
                               f"family needs {arch.bos_token_id} and {arch.tokenizer_vocab_size}")
        extend_tokenizer(tok, vocab)  # <boi>/<eoi>/<unconditional> at the planned ids
        tok.save_pretrained(tok_dir)
    vocab.save(os.path.join(cfg.out, "vocab"))


def stage_data(cfg: QuickstartConfig, image_size: int) -> None:
    py = sys.executable
    out = cfg.out
    if not os.path.exists(os.path.join(out, "shards", "summary.json")):
        _run([py, "-m", "data_pipeline", "encode", os.path.join(out, "pairs"), "-o", os.path.join(out, "shards"),
              "--vq", os.path.join(out, "vq"), "--resolution", str(image_size), "--device", "cpu",
              "--num-workers", "0", "--batch-size", "64", "--no-progress"])
    tok = os.path.join(out, "tokenizer")
    if not os.path.exists(os.path.join(out, "data", "pairs.meta.json")):
        _run([py, "-m", "data_pipeline", "build", "pairs", os.path.join(out, "shards"), "-t", tok,
              "-o", os.path.join(out, "data", "pairs"), "--no-progress"])
    if not os.path.exists(os.path.join(out, "data", "text.meta.json")):
        _run([py, "-m", "data_pipeline", "build", "text", os.path.join(out, "text", "corpus.jsonl"), "-t", tok,
              "-o", os.path.join(out, "data", "text"), "--no-progress"])


RUNS = [  # (name, size, mixture, iteration multiplier: extra data means extra steps, as in the paper's Table 1)
    ("s_1-1-1", "qs-s", {"text": 1, "t2i": 1, "i2t": 1}, 1.0),
    ("m_1-1-1", "qs-m", {"text": 1, "t2i": 1, "i2t": 1}, 1.0),
    ("l_1-1-1", "qs-l", {"text": 1, "t2i": 1, "i2t": 1}, 1.0),
    ("m_1-2-1", "qs-m", {"text": 1, "t2i": 2, "i2t": 1}, 4 / 3),
    ("m_1-1-2", "qs-m", {"text": 1, "t2i": 1, "i2t": 2}, 4 / 3),
    ("s_text", "qs-s", {"text": 1, "t2i": 0, "i2t": 0}, 1.0),
    ("l_text", "qs-l", {"text": 1, "t2i": 0, "i2t": 0}, 1.0),
]


def stage_train(cfg: QuickstartConfig) -> None:
    base_cfg = _require("configs/quickstart/base.yaml", "quickstart run config")
    out = os.path.abspath(cfg.out)
    runs = RUNS[:2] if cfg.short else RUNS
    for name, size, mixture, mult in runs:
        run_dir = os.path.join(out, "runs", name)
        iters = max(2, int(round(cfg.train_iters * mult)))
        _run([sys.executable, "-m", "liquid_train.quickstart.train_entry", "--config", base_cfg,
              f"run_dir={run_dir}", f"model.size={size}", f"model.vocab={out}/vocab/liquid_vocab.json",
              f"data.vocab={out}/vocab/liquid_vocab.json", f"data.tokenizer={out}/tokenizer",
              f"data.pairs_path={out}/data/pairs", f"data.text_path={out}/data/text", *[f"data.mixture.{k}={v}" for k, v in mixture.items()],
              f"data.seq_length={cfg.seq_length}", f"train.iters={iters}",
              f"train.eval_interval={max(2, iters // 5)}", f"checkpoint.save_interval={iters}"])


def stage_scaling(cfg: QuickstartConfig) -> None:
    """Loss-vs-FLOPs power laws and plots over the mixed 1:1:1 runs, by the real scaling tool."""
    tool = _require("tools/scaling_laws.py", "scaling-law fits")
    runs = [os.path.join(cfg.out, "runs", name) for name, _, mix, _ in RUNS
            if mix == {"text": 1, "t2i": 1, "i2t": 1} and os.path.exists(os.path.join(cfg.out, "runs", name))]
    _run([sys.executable, tool, *runs, "--out", os.path.join(cfg.out, "scaling"), "--bootstrap", "20"])


EVAL_RUNS = ("s_1-1-1", "m_1-1-1", "l_1-1-1", "m_1-2-1", "m_1-1-2")
"""Mixed runs whose exported models are sampled and scored (text-only runs cannot draw images)."""


def stage_export_sample(cfg: QuickstartConfig, cell: int) -> Dict[str, dict]:
    """Each mixed run -> HF dir (the real converter CLI) -> T2I/I2T accuracy; one T2I grid by ``tools/sample.py``."""
    convert = _require("tools/convert_checkpoint.py", "HF export (megatron-to-hf)")
    sample = _require("tools/sample.py", "T2I / I2T sampling")
    ecfg = EvalConfig(num_scenes=cfg.eval_scenes)
    scenes = eval_scenes(ecfg.num_scenes)
    vq = load_vq_tokenizer(os.path.abspath(os.path.join(cfg.out, "vq")))
    evalset = build_eval_set(vq, scenes, cell)
    results: Dict[str, dict] = {}
    for name in EVAL_RUNS:
        run_dir = os.path.join(cfg.out, "runs", name)
        if not os.path.isdir(run_dir):
            continue
        hf_dir = os.path.join(cfg.out, "exports", name)
        if not os.path.exists(os.path.join(hf_dir, "config.json")):
            _run([sys.executable, convert, "megatron-to-hf", "--ckpt", run_dir, "--out", hf_dir,
                  "--tokenizer-dir", os.path.join(cfg.out, "tokenizer")])
        results[name] = evaluate_exported(hf_dir, vq, evalset, os.path.join(cfg.out, "eval", name), ecfg)
        t2i, i2t = results[name]["t2i"], results[name]["i2t"]
        print(f"{name}: T2I attribute accuracy {attribute_mean(t2i):.3f} (all-correct {t2i['all']:.3f}); "
              f"I2T {attribute_mean(i2t):.3f} (all-correct {i2t['all']:.3f})", flush=True)
    largest = next((n for n in ("l_1-1-1", "m_1-1-1", "s_1-1-1") if n in results), None)
    if largest:
        prompts = [caption(s) for s in scenes[:8]]
        _run([sys.executable, sample, "t2i", "--model", os.path.join(cfg.out, "exports", largest),
              "--resolution", str(GRID * cell), "--out", os.path.join(cfg.out, "pictures", f"t2i_{largest}.png"),
              *[a for p in prompts for a in ("--prompt", p)]])
    results["vq_ceiling"] = {"t2i": vq_ceiling(vq, evalset)}
    os.makedirs(os.path.join(cfg.out, "eval"), exist_ok=True)
    with open(os.path.join(cfg.out, "eval", "accuracy.json"), "w") as f:
        json.dump(results, f, indent=1)
    return results


def collect_runs(cfg: QuickstartConfig) -> Dict[str, dict]:
    """Final train loss and last validation losses of every run that exists."""
    rows = {}
    for name, *_ in RUNS:
        path = os.path.join(cfg.out, "runs", name, "metrics.jsonl")
        if not os.path.exists(path):
            continue
        lines = [json.loads(x) for x in open(path)]
        train = [x for x in lines if x.get("kind") == "train"]
        valid = [x for x in lines if x.get("kind") == "valid"]
        last_v = valid[-1] if valid else {}
        rows[name] = {"steps": train[-1]["step"] if train else None, "loss": train[-1]["loss"] if train else None,
                      "val": last_v.get("val_loss"), **{k: last_v.get(f"val_loss/{k}") for k in ("text", "t2i", "i2t")}}
    return rows


def summarise(cfg: QuickstartConfig, accuracy: Dict[str, dict]) -> None:
    """Print the tables, write ``results.md`` (the README's numbers come from it) and ``summary.json``."""
    rows = collect_runs(cfg)
    answers = answer_questions(rows, accuracy)
    text = results_markdown(rows, accuracy, answers, cfg.timings, chance_accuracy())
    Console(width=160).print(Markdown(text))
    for name, payload in (("results.md", text), ("summary.json", json.dumps(
            {"runs": rows, "accuracy": accuracy, "answers": answers, "timings": cfg.timings}, indent=1))):
        atomic_write_text(os.path.join(cfg.out, name), payload)
    print(f"\nwrote {os.path.join(cfg.out, 'results.md')}; pictures under {cfg.out}/pictures, {cfg.out}/eval/*/ "
          f"and {cfg.out}/scaling/", flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m liquid_train.quickstart", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="quickstart_out")
    p.add_argument("--short", action="store_true", help="CI-sized: few pairs, few steps, two runs")
    args = p.parse_args(argv)
    cfg = QuickstartConfig(out=args.out)
    if args.short:
        cfg.shorten()
    os.makedirs(cfg.out, exist_ok=True)


    vq_cfg = VQGANConfig(**REGISTRY["chameleon-vqgan-tiny"].params)
    cell = vq_cfg.downsample_factor
    image_size = GRID * cell
    rc = 0
    accuracy: Dict[str, dict] = {}
    try:
        with _stage(cfg, "synthetic data"):
            stage_synthetic(cfg, cell)
        with _stage(cfg, "VQ training"):
            stage_vq(cfg, image_size)
        with _stage(cfg, "BPE tokenizer + vocabulary"):
            stage_tokenizer(cfg, vq_cfg.n_embed)
        with _stage(cfg, "encode + build"):
            stage_data(cfg, image_size)
        with _stage(cfg, "mix-pretraining"):
            stage_train(cfg)
        with _stage(cfg, "scaling fits"):
            stage_scaling(cfg)
        with _stage(cfg, "HF export + T2I/I2T sampling"):
            accuracy = stage_export_sample(cfg, cell)
    except StageMissing as err:
        print(f"\nquickstart: STAGE NOT AVAILABLE: {err}", file=sys.stderr)
        rc = 4
    summarise(cfg, accuracy)
    return rc


if __name__ == "__main__":
    sys.exit(main())
