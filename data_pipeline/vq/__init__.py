"""VQ image tokenizers: Chameleon's VQGAN (taming layout), checkpoint I/O, and the name registry."""
from .checkpoint import VQCheckpointError, load_vqgan, save_vqgan
from .model import VQGANConfig, VQModel
from .registry import (REGISTRY, VQSpec, VQTokenizer, build_vq_module, load_vq_tokenizer, register_architecture,
                       register_vq_tokenizer, vq_codebook_size)

__all__ = ["VQCheckpointError", "load_vqgan", "save_vqgan", "VQGANConfig", "VQModel", "REGISTRY", "VQSpec",
           "VQTokenizer", "build_vq_module", "load_vq_tokenizer", "register_architecture", "register_vq_tokenizer",
           "vq_codebook_size"]
