"""The GPU suite (``benchmarks/gpu_suite.py``): one command that runs every GPU-only claim of the project on one
GPU in under 8 minutes and writes JSON and a markdown table, and the same code on CPU at tiny shapes
(``--dry-run``) so the test suite keeps it from rotting.

Sections, each in its own module and each reported ``ran``, ``skipped: <reason>`` or ``failed: <error>``:

* :mod:`.numerics`: megatron's local spec against TE's spec (same weights, bf16, packed THD batches), and a packed
  micro-batch's loss and gradients against its samples run alone, for every attention backend present;
* :mod:`.fp8`: tensorwise FP8 against BF16 from the same init on the same batches (TE only);
* :mod:`.mfu`: tokens/s and MFU by :mod:`liquid_train.accounting`'s formula, peak memory against the planner;
* :mod:`.vq`: images/s of the full Chameleon VQGAN encoder at 512 px by batch size, the one-image-per-call
  baseline, and the host decode rate with N workers;
* :mod:`.attention`: Gemma 2 core attention at seq 4096, FlexAttention against the exact path.

Everything runs through the production code (the build path, the Trainer's step, the encoder, the core attention
modules); the suite adds only synthetic inputs, timing and the comparisons. :mod:`.wheels` lists (and downloads)
the pure-Python wheels a bare GPU machine needs, and prints the command that runs the suite there.
"""
