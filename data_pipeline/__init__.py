"""Offline data pipeline: image-text pairs -> VQ code shards -> megatron-core indexed datasets.

Subpackages/modules: ``vq`` (VQ image tokenizers and their registry), ``readers`` / ``preprocess`` / ``rgb`` (inputs,
Liquid's image preprocessing, any image mode -> upright RGB), ``encode`` (distributed, resumable VQ encoding) with
``settings`` (what an output was made with, checked on reruns) and ``threads``, ``build`` / ``text_sources``
(tokenised indexed datasets, streaming corpus readers), ``inspect_data`` (stats and sample grids), ``vq_train`` (a
small VQ) and ``errors`` (the one-line CLI error). Formats: docs/data_format.md; usage:
docs/data_pipeline.md.
"""
import liquid_train  # noqa: F401  (first: it quiets megatron's import-time TE/Apex notes, see its docstring)
