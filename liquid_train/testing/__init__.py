"""Fixtures for the test suite and the benchmarks, in the real on-disk formats (no downloads): tiny tokenizers,
indexed datasets and run configs (:mod:`.runs`), the trainer driver that multi-process tests launch
(:mod:`.train_driver`), and one helper to launch such a driver under torchrun (:mod:`.distributed`).

Nothing in the production path imports this package.
"""
