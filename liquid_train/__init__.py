"""liquid-train: megatron-core pretraining of Liquid unified multimodal models (text + VQ image tokens).

Importing the package silences one family of warnings: megatron-core warns at import time, from several modules,
that Transformer Engine or Apex is not installed and that it uses torch's own kernels instead. That is the expected
state on CPU machines and it says nothing a user can act on, yet it would bury every one-line CLI error under eight
lines. It is not a silent fallback: where a run asks for TE (``model.attention_backend: te``, FP8, fused kernels),
``liquid_train.models`` refuses in one line when TE cannot run. The filter is installed here because the package is
imported before any of its modules import megatron (``data_pipeline`` imports it first for the same reason).
"""
import warnings

__version__ = "0.1.0"

warnings.filterwarnings("ignore", message=r"(Transformer Engine and )?Apex (is|are) not installed", category=UserWarning)
