"""Trainer overhead: our ``Trainer.train_step`` (+ the loop's per-step bookkeeping) vs a bare megatron-core
forward/backward/optimizer loop on the same model, same micro-batches, same process.

Both use megatron's get_forward_backward_func, DDP and optimizer; the difference is what the trainer adds
(per-task stats, z-loss/argmax reductions, NaN check, metrics record). Prints the ratio (target <= 1.03).
Usage: python benchmarks/trainer_overhead.py [--steps 30] [--layers 4 --hidden 256 --seq 256 --mbs 4]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--mbs", type=int, default=4)
    args = ap.parse_args()

    import test_train_fixtures as fx
    fx.SEQ = args.seq
    fx.MODEL.update(layers=args.layers, hidden=args.hidden, heads=8, groups=4)
    from megatron.core.pipeline_parallel import get_forward_backward_func
    from megatron.core.tensor_parallel import vocab_parallel_cross_entropy

    from liquid_train.training import ModelProvider, Trainer, load_config
    from liquid_train.vocab import default_test_vocab

    fx.init_parallel()
    vocab = default_test_vocab(base_vocab_size=4096, num_image_tokens=1024)
    cfg = load_config(overrides=fx.BASE_OVERRIDES + [
        "run_dir=/tmp/liquid_bench_overhead", f"train.global_batch_size={2 * args.mbs}",
        f"train.micro_batch_size={args.mbs}", "checkpoint.save_at_end=false", "optimizer.z_loss_weight=0"])
    data = fx.synthetic_data(vocab)
    trainer = Trainer(cfg, ModelProvider(fx.tiny_provider(vocab.padded_vocab_size(1)), vocab), data)
    batches = [fx.synthetic_batch(i, args.mbs, vocab, args.seq) for i in range(2)]
    model, optimizer = trainer.model[0], trainer.optimizer
    fb = get_forward_backward_func()

    def bare_forward_step(it, m):
        b = next(it)
        out = m(b["tokens"], b["position_ids"], b["attention_mask"])

        def loss_func(output):
            ce = vocab_parallel_cross_entropy(output.float(), b["labels"])
            mask = b["loss_mask"]
            s = (ce * mask).sum()
            return s, mask.sum().to(torch.int), {"lm": s.detach()}
        return out, loss_func

    def bare_step():
        model.zero_grad_buffer()
        optimizer.zero_grad()
        fb(forward_step_func=bare_forward_step, data_iterator=iter(batches), model=model, num_microbatches=2,
           seq_length=args.seq, micro_batch_size=args.mbs, forward_only=False)
        optimizer.step()

    def ours_step():
        summary = trainer.train_step(batches)
        return {k: v for k, v in summary.items()}  # the loop's record building is dict work of this size

    for fn in (bare_step, ours_step):  # warm-up
        fn()
    times = {"bare": [], "ours": []}
    for _ in range(args.steps):  # interleaved so machine noise hits both alike
        for name, fn in (("bare", bare_step), ("ours", ours_step)):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    bare, ours = statistics.median(times["bare"]), statistics.median(times["ours"])
    tokens = 2 * args.mbs * args.seq
    print(f"model: {args.layers} layers, hidden {args.hidden}, seq {args.seq}, global batch {2 * args.mbs}, "
          f"vocab {vocab.padded_vocab_size(1)}, fp32, torch threads {torch.get_num_threads()}")
    print(f"bare megatron step: {bare * 1e3:.1f} ms ({tokens / bare:.0f} tokens/s)")
    print(f"liquid trainer step: {ours * 1e3:.1f} ms ({tokens / ours:.0f} tokens/s)")
    print(f"overhead ratio (ours / bare, median of {args.steps}): {ours / bare:.3f}")
    fx.destroy_parallel()


if __name__ == "__main__":
    main()
