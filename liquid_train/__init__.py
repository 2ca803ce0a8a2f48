"""liquid-train: megatron-core pretraining of Liquid unified multimodal models (text + VQ image tokens)."""
__version__ = "0.1.0"
