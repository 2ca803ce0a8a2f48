"""Offline data pipeline: image-text pairs -> VQ code shards -> megatron-core indexed datasets.

Subpackages/modules: ``vq`` (VQ image tokenizers and their registry), ``readers`` / ``preprocess`` (inputs and
Liquid's image preprocessing), ``encode`` (distributed, resumable VQ encoding), ``build`` (tokenised indexed
datasets), ``inspect_data`` (stats and sample grids). Formats: docs/data_format.md; usage: docs/data_pipeline.md.
"""
