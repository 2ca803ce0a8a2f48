"""``python -m liquid_train.quickstart [--out DIR] [--short] [--seeds N] [--steps N]``: the system end to end on CPU.

Stages (each timed; each reuses its output on a rerun):
  1. synthetic image-text pairs (img2dataset-style tars) + templated text corpus
  2. train the tiny VQGAN on the pairs (``data_pipeline.vq_train``: autoencoder warm-up, k-means codebook, VQ)
     -> vqgan.ckpt + vqgan.yaml
  3. train a byte-level BPE (``tokenizers``) in the qwen2.5 tiny layout (pieces, then <|endoftext|> ...) and extend
     it with ``plan_vocab`` exactly as a real base model is (``liquid_vocab.json``)
  4. ``python -m data_pipeline encode`` and ``build pairs`` / ``build text`` (the real CLI)
  5. mix-pretrain with the real ``liquid-train`` CLI (``plan.py``): 3 sizes at 1:1:1, the 1:2:1 and 1:1:2
     ablations at the middle size, text-only runs at the smallest and largest size, each once per seed
  6. fit scaling curves (``tools/scaling_laws.py``)
  7. export each mixed run's mid-run and final checkpoints to HF (``tools/convert_checkpoint.py megatron-to-hf``),
     sample T2I (CFG 1, 3, 7) / I2T from them and score with the analyser / caption parser (``evaluate.py``);
     one grid through ``tools/sample.py``
  8. answer the paper's questions from seed-paired intervals -> ``results.md`` (``report.py``)
The console shows stage headers, progress bars and the final tables; every child command's output (megatron's INFO
lines, the trainer's steps) goes to ``<out>/logs/`` (``console.py``). A stage whose component is not in the
checkout fails with a message naming the missing file.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys
from typing import Dict, List, Optional

from rich.markdown import Markdown
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from data_pipeline.threads import available_cores
from data_pipeline.vq import load_vq_tokenizer
from data_pipeline.vq.checkpoint import save_vqgan
from data_pipeline.vq.model import VQGANConfig
from data_pipeline.vq.registry import REGISTRY
from data_pipeline.vq_train import build_tiny_model, load_images_from_tars, train_vq
from liquid_train.atomic import atomic_write_json, atomic_write_text
from liquid_train.data.config import I2T_PROMPT, T2I_INSTRUCTIONS
from liquid_train.models.families import get_model_arch
from liquid_train.models.vocab_extension import extend_tokenizer, plan_vocab
from liquid_train.quickstart.config import QuickstartConfig, vq_train_config
from liquid_train.quickstart.console import CommandFailed, QuickstartConsole
from liquid_train.quickstart.evaluate import (CFG_SCALES, EvalConfig, build_eval_set, chance_accuracy,
                                              evaluate_exported, vq_ceiling)
from liquid_train.quickstart.figures import accuracy_vs_loss_figure
from liquid_train.quickstart.plan import MIX_1_1_1, RunSpec, process_slots
from liquid_train.quickstart.report import ANSWER_CFG, ANSWER_SCALE, answer_questions, attribute_mean, results_markdown
from liquid_train.quickstart.scene import GRID, all_scenes, caption
from liquid_train.quickstart.sizes import BASE_SIZE, FAMILY, QUICKSTART_SIZES
from liquid_train.quickstart.stats import linear_fit
from liquid_train.quickstart.synthetic import SyntheticConfig, eval_scenes, write_pairs, write_text_corpus
from liquid_train.training.checkpoint import checkpoint_dir, iter_dirname, read_latest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHILD_ENV = {"WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
STAGES = 8


class StageMissing(RuntimeError):
    """A component the quickstart drives is not present in this checkout."""


def _require(path: str, what: str) -> str:
    full = os.path.join(REPO, path)
    if not os.path.exists(full):
        raise StageMissing(f"{what}: {path} is not in this checkout; this stage cannot run without it")
    return full


def stage_synthetic(cfg: QuickstartConfig, cell: int) -> None:
    scfg = SyntheticConfig(num_pairs=cfg.num_pairs, cell_size=cell, num_text_docs=cfg.num_pairs)
    write_pairs(scfg, os.path.join(cfg.out, "pairs"))
    write_text_corpus(scfg, os.path.join(cfg.out, "text", "corpus.jsonl"))


def stage_vq(cfg: QuickstartConfig, con: QuickstartConsole, image_size: int) -> None:
    out = os.path.join(cfg.out, "vq")
    if os.path.exists(os.path.join(out, "vqgan.ckpt")):
        con.note(f"reusing {out}")
        return
    images = load_images_from_tars(sorted(glob.glob(os.path.join(cfg.out, "pairs", "*.tar"))))
    model = build_tiny_model(resolution=image_size)
    result = train_vq(images, model, vq_train_config(cfg), log=con.note)
    save_vqgan(model, out)
    atomic_write_json(os.path.join(out, "history.json"), result["history"])


QWEN_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
"""Qwen2.5's first three specials, placed after the BPE pieces exactly as in the real tokenizer (bos = eos = pad =
<|endoftext|>), so the tiny tokenizer has the family's layout and the real vocabulary plan applies unchanged."""


def tokenizer_training_text(cfg: QuickstartConfig) -> List[str]:
    """What the BPE learns from: the text the model will read, in proportion. The text corpus, the captions, and
    the task templates the data loader adds to every image sample (the T2I instructions, the I2T prompt), each
    about as often as the training stream carries it.

    Why the templates: trained on corpus and captions alone, the 497-piece BPE had never seen "Generate an image
    based on this description." and spelled it in 34 mostly single-letter pieces, against 10 for the caption. Every
    T2I sample then put 34 tokens between the caption and its image codes, a third of a 128-token row, and the
    models barely used the caption (measured on the largest 1:1:1 model: eval-scene code loss 2.10 with the right
    caption, 2.19 with a shuffled one, 2.21 unconditional). A real base tokenizer spells these words in a few
    tokens, so the fix is the tokenizer's training text, not the template."""
    corpus = [json.loads(line)["text"] for line in open(os.path.join(cfg.out, "text", "corpus.jsonl"))]
    per_template = max(1, cfg.num_pairs // len(T2I_INSTRUCTIONS))  # each pair is a T2I sample with one of them
    return (corpus + [caption(s) for s in all_scenes()] + list(T2I_INSTRUCTIONS) * per_template
            + [I2T_PROMPT] * cfg.num_pairs)


def stage_tokenizer(cfg: QuickstartConfig, codebook: int) -> None:
    """A byte-level BPE in the qwen2.5 tiny layout, extended by ``plan_vocab`` as a real base model would be."""
    arch = get_model_arch(FAMILY, BASE_SIZE)
    vocab = plan_vocab(arch, codebook, vq_tokenizer=os.path.abspath(os.path.join(cfg.out, "vq")))
    tok_dir = os.path.join(cfg.out, "tokenizer")
    if not os.path.exists(os.path.join(tok_dir, "tokenizer.json")):
        pieces = arch.bos_token_id  # BPE pieces take ids [0, bos); the specials follow, as in Qwen2.5
        bpe = Tokenizer(models.BPE(unk_token="<unk>"))
        bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        bpe.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=pieces, special_tokens=["<unk>"], show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        bpe.train_from_iterator(tokenizer_training_text(cfg), trainer)
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


def stage_data(cfg: QuickstartConfig, con: QuickstartConsole, image_size: int) -> None:
    py = sys.executable
    out = cfg.out
    if not os.path.exists(os.path.join(out, "shards", "summary.json")):
        con.run([py, "-m", "data_pipeline", "encode", os.path.join(out, "pairs"), "-o", os.path.join(out, "shards"),
                 "--vq", os.path.join(out, "vq"), "--resolution", str(image_size), "--device", "cpu",
                 "--num-workers", "0", "--batch-size", "64", "--no-progress"], "encode")
    tok = os.path.join(out, "tokenizer")
    if not os.path.exists(os.path.join(out, "data", "pairs.meta.json")):
        con.run([py, "-m", "data_pipeline", "build", "pairs", os.path.join(out, "shards"), "-t", tok,
                 "-o", os.path.join(out, "data", "pairs"), "--no-progress"], "build_pairs")
    if not os.path.exists(os.path.join(out, "data", "text.meta.json")):
        con.run([py, "-m", "data_pipeline", "build", "text", os.path.join(out, "text", "corpus.jsonl"), "-t", tok,
                 "-o", os.path.join(out, "data", "text"), "--no-progress"], "build_text")


def _train_cmd(cfg: QuickstartConfig, spec: RunSpec, seed: int, base_cfg: str,
               path: Optional[str] = None) -> List[str]:
    """The trainer command of ``spec`` at ``seed`` on ``cfg.out``'s data, into ``path`` (default: its run dir)."""
    out = os.path.abspath(cfg.out)
    iters = cfg.iters(spec)
    vocab = f"{out}/vocab/liquid_vocab.json"
    return [sys.executable, "-m", "liquid_train.cli", "--config", base_cfg,
            f"run_dir={path or run_dir(cfg, spec, seed)}",
            *spec.overrides(seed), f"model.vocab={vocab}", f"data.vocab={vocab}", f"data.tokenizer={out}/tokenizer",
            f"data.pairs_path={out}/data/pairs", f"data.text_path={out}/data/text",
            f"data.seq_length={cfg.seq_length}", f"train.iters={iters}", f"train.eval_interval={iters // 4}",
            f"checkpoint.save_interval={iters // 2}", "checkpoint.keep_last=2"]


def run_benchmark_parser(description: str, steps: int) -> argparse.ArgumentParser:
    """``--out --size --steps`` of the benchmarks that train quickstart runs on a built output directory."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--out", default="quickstart_out", help="a quickstart output directory with its data built")
    p.add_argument("--size", default="qs-l", choices=sorted(QUICKSTART_SIZES))
    p.add_argument("--steps", type=int, default=steps)
    return p


def parse_run_benchmark_args(p: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """Parse; a directory without built data exits 2 with one line saying how to build it."""
    args = p.parse_args(argv)
    if not os.path.exists(os.path.join(args.out, "data", "pairs.meta.json")):
        p.exit(2, f"{p.prog}: --out {args.out}: no built data (data/pairs.meta.json); run "
                  f"python -m liquid_train.quickstart --out {args.out} first\n")
    return args


def schedule_clash(cfg: QuickstartConfig) -> Optional[str]:
    """Why ``cfg.out`` cannot take this run's schedule, or None (and the schedule is recorded there).

    Runs are reused and resumed by name, so one output directory holds one schedule: a 300-step run must not be
    resumed as a 600-step one (its learning-rate schedule ended at 300). ``schedule.json`` records the steps and
    whether the directory is ``--short``; a directory with runs but no record holds the default schedule."""
    path = os.path.join(cfg.out, "schedule.json")
    mine = {"steps": cfg.train_iters, "short": cfg.short}
    if os.path.exists(path):
        with open(path) as f:
            theirs = json.load(f)
    elif os.path.isdir(os.path.join(cfg.out, "runs")):
        theirs = {"steps": QuickstartConfig.train_iters, "short": cfg.short}
    else:
        theirs = mine
    if theirs != mine:
        what = lambda s: "--short" if s["short"] else f"{s['steps']}-step"  # noqa: E731
        return (f"--out {cfg.out} holds {what(theirs)} runs ({path}); give this {what(mine)} run another --out")
    atomic_write_json(path, mine)
    return None


def run_dir(cfg: QuickstartConfig, spec: RunSpec, seed: int) -> str:
    return os.path.join(os.path.abspath(cfg.out), "runs", spec.run_name(seed))


def _done(path: str, iters: int) -> bool:
    ckpt_dir = checkpoint_dir(path)
    latest = read_latest(ckpt_dir) if os.path.isdir(ckpt_dir) else None
    return latest is not None and os.path.basename(latest) == iter_dirname(iters)


def base_config() -> str:
    """The quickstart's run template (``configs/quickstart/base.yaml``), which every run's command starts from."""
    return _require("configs/quickstart/base.yaml", "quickstart run config")


def converter() -> str:
    return _require("tools/convert_checkpoint.py", "HF export (megatron-to-hf)")


def export_cmd(ckpt: str, hf_dir: str, tokenizer_dir: str) -> List[str]:
    """The real converter CLI: megatron checkpoint ``ckpt`` -> HF directory ``hf_dir``."""
    convert = converter()
    return [sys.executable, convert, "megatron-to-hf", "--ckpt", ckpt, "--out", hf_dir, "--tokenizer-dir",
            tokenizer_dir]


def stage_train(cfg: QuickstartConfig, con: QuickstartConsole, vocab_rows: int) -> None:
    """Every run of every seed; a finished run is reused, a partial one resumes. Runs train several at once, one
    per core, longest first (``plan.process_slots``), so the last to start are the shortest."""
    base_cfg = base_config()
    todo = [(spec, seed) for seed in range(cfg.seeds) for spec in cfg.specs
            if not _done(run_dir(cfg, spec, seed), cfg.iters(spec))]
    todo.sort(key=lambda job: -job[0].cost(cfg.iters(job[0]), cfg.seq_length, vocab_rows))
    workers, threads = process_slots(available_cores(), len(todo))
    if todo:
        con.note(f"{len(todo)} runs, {workers} at a time with {threads} torch thread(s) each")
    con.run_parallel([(_train_cmd(cfg, spec, seed, base_cfg), f"train_{spec.run_name(seed)}") for spec, seed in todo],
                     workers, "training", env={"OMP_NUM_THREADS": str(threads)})


def stage_scaling(cfg: QuickstartConfig, con: QuickstartConsole) -> None:
    """Loss-vs-FLOPs power laws and plots over the mixed 1:1:1 runs (every seed), by the real scaling tool."""
    tool = _require("tools/scaling_laws.py", "scaling-law fits")
    runs = [run_dir(cfg, spec, seed) for spec in cfg.specs for seed in range(cfg.seeds)
            if spec.mix == MIX_1_1_1 and os.path.isdir(run_dir(cfg, spec, seed))]
    con.run([sys.executable, tool, *runs, "--out", os.path.join(cfg.out, "scaling"), "--bootstrap", "20"], "scaling")


def _valid_at(path: str, step: int) -> Optional[dict]:
    """The validation record of run ``path`` at ``step`` (None if there is none)."""
    for line in open(os.path.join(path, "metrics.jsonl")):
        rec = json.loads(line)
        if rec.get("kind") == "valid" and rec.get("step") == step:
            return rec
    return None


def stage_export_sample(cfg: QuickstartConfig, con: QuickstartConsole, cell: int) -> dict:
    """Each mixed run's final checkpoint -> HF dir (the real converter CLI) -> T2I at every guidance scale and I2T;
    its mid-run checkpoint -> T2I at the answer scale (the accuracy-vs-loss points); one grid by ``tools/sample.py``.
    Returns {"accuracy": run -> scores, "ceiling": VQ round-trip scores, "points": accuracy-vs-loss points}."""
    converter()  # a checkout without the converter fails here, before any scoring
    sample = _require("tools/sample.py", "T2I / I2T sampling")
    ecfg = EvalConfig(num_scenes=cfg.eval_scenes)
    scenes = eval_scenes(ecfg.num_scenes)
    vq = load_vq_tokenizer(os.path.abspath(os.path.join(cfg.out, "vq")))
    evalset = build_eval_set(vq, scenes, cell)
    ceiling = vq_ceiling(vq, evalset)
    con.note(f"VQ round trip of the {len(scenes)} evaluation scenes (the T2I ceiling): mean of attributes "
             f"{attribute_mean(ceiling):.3f} (" + ", ".join(f"{k} {v:.2f}" for k, v in ceiling.items() if k != "all") + ")")
    accuracy: Dict[str, dict] = {}
    points: List[dict] = []
    jobs = [(spec, seed, when) for seed in range(cfg.seeds) for spec in cfg.specs if spec.mixed
            for when in ("final", "mid")]

    def where(spec: RunSpec, seed: int, when: str):
        step = cfg.iters(spec) if when == "final" else cfg.iters(spec) // 2
        name = spec.run_name(seed)
        return step, os.path.join(cfg.out, "exports", name if when == "final" else f"{name}_step{step}")

    # Exports first, several at once: each is a converter process that spends most of its ~6 s importing on one
    # core, so on two cores two at a time halve the stage's export time.
    exports = []
    for spec, seed, when in jobs:
        step, hf_dir = where(spec, seed, when)
        if not os.path.exists(os.path.join(hf_dir, "config.json")):
            exports.append((export_cmd(os.path.join(checkpoint_dir(run_dir(cfg, spec, seed)), iter_dirname(step)),
                                       hf_dir, os.path.join(cfg.out, "tokenizer")), f"export_{os.path.basename(hf_dir)}"))
    workers, threads = process_slots(available_cores(), len(exports))
    con.run_parallel(exports, workers, "export", env={"OMP_NUM_THREADS": str(threads)})
    for spec, seed, when in con.progress(jobs, "score"):
        name, path = spec.run_name(seed), run_dir(cfg, spec, seed)
        step, hf_dir = where(spec, seed, when)
        scores = evaluate_exported(hf_dir, vq, evalset, os.path.join(cfg.out, "eval", os.path.basename(hf_dir)),
                                   ecfg, CFG_SCALES if when == "final" else (ANSWER_SCALE,), with_i2t=when == "final")
        if when == "final":
            accuracy[name] = scores
        valid = _valid_at(path, step)
        if valid is not None and valid.get("val_loss/t2i") is not None:
            points.append({"run": name, "spec": spec.name, "size": spec.size, "step": step,
                           "val_t2i": valid["val_loss/t2i"], "t2i": attribute_mean(scores["t2i"][ANSWER_CFG])})
    largest = next((s for s in ("l_1-1-1", "m_1-1-1", "s_1-1-1") if f"{s}_seed0" in accuracy), None)
    if largest:
        prompts = [caption(s) for s in scenes[:8]]
        con.run([sys.executable, sample, "t2i", "--model", os.path.join(cfg.out, "exports", f"{largest}_seed0"),
                 "--resolution", str(GRID * cell), "--out", os.path.join(cfg.out, "pictures", f"t2i_{largest}.png"),
                 *[a for p in prompts for a in ("--prompt", p)]], "sample_grid")
    result = {"accuracy": accuracy, "ceiling": ceiling, "points": points}
    atomic_write_json(os.path.join(cfg.out, "eval", "accuracy.json"), result)
    return result


def collect_runs(cfg: QuickstartConfig) -> Dict[str, dict]:
    """Final train loss and last validation losses of every run that exists."""
    rows = {}
    for spec in cfg.specs:
        for seed in range(cfg.seeds):
            path = os.path.join(run_dir(cfg, spec, seed), "metrics.jsonl")
            if not os.path.exists(path):
                continue
            lines = [json.loads(x) for x in open(path)]
            train = [x for x in lines if x.get("kind") == "train"]
            valid = [x for x in lines if x.get("kind") == "valid"]
            last_v = valid[-1] if valid else {}
            rows[spec.run_name(seed)] = {
                "steps": train[-1]["step"] if train else None, "loss": train[-1]["loss"] if train else None,
                "val": last_v.get("val_loss"), **{k: last_v.get(f"val_loss/{k}") for k in ("text", "t2i", "i2t")}}
    return rows


def summarise(cfg: QuickstartConfig, con: QuickstartConsole, evaluation: dict) -> None:
    """Print the tables, write ``results.md`` (the README's numbers come from it), ``summary.json`` and the
    accuracy-vs-loss picture."""
    rows = collect_runs(cfg)
    seeds = list(range(cfg.seeds))
    accuracy = evaluation.get("accuracy", {})
    answers = answer_questions(rows, accuracy, seeds)
    points = evaluation.get("points", [])
    fit = None
    if len(points) >= 3:
        fit = linear_fit([p["val_t2i"] for p in points], [p["t2i"] for p in points])
        accuracy_vs_loss_figure(points, fit, os.path.join(cfg.out, "pictures", "t2i_accuracy_vs_val_loss.png"),
                                ANSWER_CFG)
    text = results_markdown(rows, accuracy, answers, con.timings, chance_accuracy(), seeds,
                            evaluation.get("ceiling"), fit)
    con.console.rule("results", align="left")
    con.console.print(Markdown(text))
    atomic_write_text(os.path.join(cfg.out, "results.md"), text)
    atomic_write_json(os.path.join(cfg.out, "summary.json"),
                      {"seeds": cfg.seeds, "runs": rows, "evaluation": evaluation, "answers": answers,
                       "accuracy_vs_loss_fit": fit, "timings": con.timings})
    con.console.print(f"\nwrote {os.path.join(cfg.out, 'results.md')}; pictures under {cfg.out}/pictures, "
                      f"{cfg.out}/eval/*/ and {cfg.out}/scaling/; logs under {cfg.out}/logs/")

def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m liquid_train.quickstart", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="quickstart_out")
    p.add_argument("--short", action="store_true", help="CI-sized: few pairs, few steps, two runs")
    p.add_argument("--seeds", type=int, default=1,
                   help="train every run with this many seeds (data order and init); answers need >= 2 for an "
                        "interval (the full study: --seeds 3)")
    p.add_argument("--steps", type=int, default=None,
                   help=f"steps of each 1:1:1 and text-only run; the 1:2:1 / 1:1:2 runs train 4/3 of them (default "
                        f"{QuickstartConfig.train_iters}, the 12-minute quickstart; the long study: --steps 800)")
    args = p.parse_args(argv)
    if args.seeds < 1:
        print("quickstart: --seeds must be >= 1", file=sys.stderr)
        return 2
    if args.steps is not None and args.steps < 8:
        print("quickstart: --steps must be >= 8 (validation at every quarter, checkpoints at the half)",
              file=sys.stderr)
        return 2
    cfg = QuickstartConfig(out=args.out, seeds=args.seeds)
    if args.short:
        cfg.shorten()
    if args.steps is not None:
        cfg.train_iters = args.steps
    os.makedirs(cfg.out, exist_ok=True)
    clash = schedule_clash(cfg)
    if clash:
        print(f"quickstart: {clash}", file=sys.stderr)
        return 2
    con = QuickstartConsole(cfg.out, REPO, CHILD_ENV)
    vq_cfg = VQGANConfig(**REGISTRY["chameleon-vqgan-tiny"].params)
    cell = vq_cfg.downsample_factor
    image_size = GRID * cell
    rc = 0
    evaluation: dict = {}
    try:
        with con.stage("synthetic data", STAGES):
            stage_synthetic(cfg, cell)
        with con.stage("VQ training", STAGES):
            stage_vq(cfg, con, image_size)
        with con.stage("BPE tokenizer + vocabulary", STAGES):
            stage_tokenizer(cfg, vq_cfg.n_embed)
        with con.stage("encode + build", STAGES):
            stage_data(cfg, con, image_size)
        with con.stage("mix-pretraining", STAGES):
            stage_train(cfg, con, vq_cfg.n_embed + get_model_arch(FAMILY, BASE_SIZE).vocab_size)
        with con.stage("scaling fits", STAGES):
            stage_scaling(cfg, con)
        with con.stage("HF export + T2I/I2T sampling", STAGES):
            evaluation = stage_export_sample(cfg, con, cell)
    except StageMissing as err:
        con.console.print(f"\nquickstart: STAGE NOT AVAILABLE: {err}", style="red")
        rc = 4
    except CommandFailed as err:
        con.console.print(f"\nquickstart: {err}", style="red")
        rc = 1
    with con.stage("report", STAGES):
        summarise(cfg, con, evaluation)
    return rc


if __name__ == "__main__":
    sys.exit(main())
