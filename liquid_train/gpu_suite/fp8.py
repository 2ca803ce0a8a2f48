"""FP8 section (Transformer Engine only): tensorwise (current-scaling) FP8 against BF16, same init, same batches.

qwen2.5-0.5b, packed seq 2048, 4 rows per step, about 100 optimizer steps each on the suite's learnable synthetic
stream; the first and last transformer layer stay BF16 (``model.fp8.bf16_layers: 1``), as the build path does by
default. The loss curves must agree:

* the mean loss of the last 20 steps within 3% (relative) of BF16's;
* every step from step 10 on within 10% of BF16's at the same step.

The tokens/s ratio (median step time, step 10 on) is reported against the published 1.26-1.32x (OLMo-core) and
1.28x (torchtitan). A dry run trains two fp32 copies of a tiny model through the same code.
"""
from __future__ import annotations

import os
import statistics
from typing import Dict, List

import numpy as np
import torch

from liquid_train.gpu_suite.context import Context, Skip, check, free_memory
from liquid_train.gpu_suite.harness import MarkovText, make_trainer, packed_micro_batch, train_steps, unwrap
from liquid_train.models.families import get_model_arch
from liquid_train.models.options import BuildOptions, FP8Config
from liquid_train.models.precision import fp8_available
from liquid_train.models.vocab_extension import plan_vocab

FINAL_WINDOW, FINAL_TOL, STEP_FROM, STEP_TOL = 20, 0.03, 10, 0.10


def compare_curves(reference: List[float], candidate: List[float]) -> Dict:
    n = min(len(reference), len(candidate))
    ref, cand = np.asarray(reference[:n]), np.asarray(candidate[:n])
    window = slice(max(0, n - FINAL_WINDOW), n)
    final = abs(cand[window].mean() - ref[window].mean()) / ref[window].mean()
    late = slice(min(STEP_FROM, n - 1), n)
    per_step = float(np.max(np.abs(cand[late] - ref[late]) / ref[late]))
    return {"steps": n, "final_reference": float(ref[window].mean()), "final_candidate": float(cand[window].mean()),
            "checks": {"final_loss": check(final, FINAL_TOL, f"mean loss of the last {FINAL_WINDOW} steps, rel."),
                       "per_step": check(per_step, STEP_TOL, f"worst step from step {STEP_FROM}, rel.")}}


def _median_from(seconds: List[float], start: int) -> float:
    tail = seconds[start:] if len(seconds) > start + 1 else seconds[1:] or seconds
    return statistics.median(tail)


def run(ctx: Context) -> Dict:
    reason = fp8_available()
    if reason and not ctx.dry_run:
        raise Skip(reason)
    if ctx.dry_run:
        arch, steps, rows, seq, docs, images = get_model_arch("qwen2.5", "tiny"), 6, 2, 32, (3, 12), 64
        precisions = ("fp32", "fp32")
        backend = "local"
    else:
        arch, steps, rows, seq, docs, images = get_model_arch("qwen2.5", "0.5b"), 100, 4, 2048, (64, 2048), 8192
        precisions = ("bf16", "fp8")
        backend = "te"
    vocab = plan_vocab(arch, images)
    stream, rng = MarkovText(vocab.base_vocab_size, seed=3), np.random.default_rng(3)
    batches = [packed_micro_batch(stream, rng, rows, seq, docs, vocab.pad_id) for _ in range(steps)]
    curves, init = {}, None
    budget = max(10.0, min(45.0, ctx.left() / 2 - 5))
    for precision in precisions:
        ctx.say(f"fp8: {steps} steps of {arch.family} {arch.size} at {precision}")
        options = BuildOptions(precision=precision, attention_backend=backend,
                               fp8=FP8Config(recipe="tensorwise", bf16_layers=1))
        trainer = make_trainer(arch, vocab, options, seq=seq, micro_batch_size=rows,
                               run_dir=os.path.join(ctx.work_dir, f"fp8-{precision}"), seed=11)
        model = unwrap(trainer.model[0])
        if init is None:
            init = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()
                    if torch.is_tensor(v) and not k.endswith("_extra_state")}
        else:  # the same initial weights (and fp32 master copies) as the reference run
            model.load_state_dict(init, strict=False)
            trainer.optimizer.reload_model_params()
        curves[precision if precision not in curves else f"{precision} (2)"] = train_steps(ctx, trainer, batches,
                                                                                          budget)
        del trainer, model
        free_memory(ctx)
    (ref_name, ref), (cand_name, cand) = curves.items()
    out = compare_curves(ref["losses"], cand["losses"])
    ratio = _median_from(ref["step_s"], STEP_FROM) / _median_from(cand["step_s"], STEP_FROM)
    tokens = rows * seq
    out.update({"arch": arch.size, "seq": seq, "rows": rows, "reference": ref_name, "candidate": cand_name,
                "tokens_per_s": {name: tokens / _median_from(c["step_s"], STEP_FROM) for name, c in curves.items()},
                "tokens_per_s_ratio": ratio, "anchors": "OLMo-core 1.26-1.32x, torchtitan 1.28x",
                "losses": {name: [round(x, 5) for x in c["losses"]] for name, c in curves.items()}})
    if reason:
        raise Skip(reason, out)
    return out
