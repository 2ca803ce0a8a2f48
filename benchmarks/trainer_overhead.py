"""Trainer overhead: our step (``TrainModule.train_step``) vs a bare megatron-core forward/backward/optimizer loop
on the same model, the same packed THD micro-batches, in the same process.

Both use megatron's ``get_forward_backward_func``, DDP and optimizer, and the same model built by the one build path
from the tiny real data of ``liquid_train.testing.runs``; the difference is what the step adds (per-task stats,
z-loss / argmax in the chunked cross-entropy, the NaN check, the summary). Prints the ratio (target <= 1.03).

    python benchmarks/trainer_overhead.py [--steps 20] [--layers 4 --hidden 256 --seq 256 --mbs 4] [--z-loss 0]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
from megatron.core.pipeline_parallel import get_forward_backward_func
from megatron.core.tensor_parallel import vocab_parallel_cross_entropy

from liquid_train.parallel import destroy_parallel, initialize_parallel
from liquid_train.testing.runs import ensure_tiny_run_data, tiny_run_overrides
from liquid_train.training import data_adapter, load_config
from liquid_train.training.providers import default_model_provider
from liquid_train.training.train_module import TrainModule, to_device


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--mbs", type=int, default=4)
    ap.add_argument("--z-loss", type=float, default=0.0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    root = tempfile.mkdtemp(prefix="liquid-overhead-")
    data = ensure_tiny_run_data(f"{root}/tiny_data")
    cfg = load_config(overrides=tiny_run_overrides(data) + [
        f"run_dir={root}/run", f"data.seq_length={args.seq}", f"train.global_batch_size={2 * args.mbs}",
        f"train.micro_batch_size={args.mbs}", f"optimizer.z_loss_weight={args.z_loss}",
        f"model.arch.num_layers={args.layers}", f"model.arch.hidden_size={args.hidden}",
        f"model.arch.ffn_hidden_size={4 * args.hidden}", "model.arch.num_attention_heads=8",
        "model.arch.num_query_groups=4", f"model.arch.head_dim={args.hidden // 8}"])
    initialize_parallel(1, 1)
    try:
        provider = default_model_provider(cfg)
        module = TrainModule(cfg, provider)
        stream = data_adapter.build(cfg, provider.vocab).train_iterator(0, args.mbs, 0, 1)
        batches = [next(stream) for _ in range(2)]
        model, optimizer = module.model[0], module.optimizer
        forward_backward = get_forward_backward_func()

        def bare_forward_step(it, m):
            b = to_device(next(it), module.device)
            out = m(b["tokens"].reshape(1, -1), b["position_ids"].reshape(1, -1), None,
                    packed_seq_params=b["packed_seq_params"])

            def loss_func(output):
                mask = b["loss_mask"].reshape(1, -1)
                s = (vocab_parallel_cross_entropy(output.float(), b["labels"].reshape(1, -1)) * mask).sum()
                return s, mask.sum().to(torch.int), {"lm": s.detach()}
            return out, loss_func

        def bare_step():
            model.zero_grad_buffer()
            optimizer.zero_grad()
            forward_backward(forward_step_func=bare_forward_step, data_iterator=iter(batches), model=model,
                             num_microbatches=2, seq_length=args.mbs * args.seq, micro_batch_size=1,
                             forward_only=False)
            optimizer.step()

        def ours_step():
            module.train_step(batches)

        for fn in (bare_step, ours_step):  # warm-up
            fn()
        times = {"bare": [], "ours": []}
        for _ in range(args.steps):  # interleaved so machine noise hits both alike
            for name, fn in (("bare", bare_step), ("ours", ours_step)):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    finally:
        destroy_parallel()
    bare, ours = statistics.median(times["bare"]), statistics.median(times["ours"])
    tokens = 2 * args.mbs * args.seq
    print(f"model: {args.layers} layers, hidden {args.hidden}, seq {args.seq}, global batch {2 * args.mbs}, "
          f"vocab {provider.vocab.padded_vocab_size(1)}, fp32, z-loss {args.z_loss}, torch threads {args.threads}")
    print(f"bare megatron step: {bare * 1e3:.1f} ms ({tokens / bare:.0f} tokens/s)")
    print(f"liquid step: {ours * 1e3:.1f} ms ({tokens / ours:.0f} tokens/s)")
    print(f"overhead ratio (ours / bare, median of {args.steps}): {ours / bare:.3f}")


if __name__ == "__main__":
    main()
