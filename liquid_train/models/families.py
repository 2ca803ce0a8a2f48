"""Registry of base-model architectures: the real Hugging Face hyperparameters of every supported family and size.

Each :class:`ModelArch` carries everything that changes the math of the forward pass (GQA, qkv bias, RoPE theta and
Llama-3 scaling, norm epsilon, tied embeddings, SwiGLU vs GeGLU, Gemma's sqrt(hidden) embedding scale and (1+w) norms,
Gemma 2's soft-capping, post-norms, sliding window and its layers, query_pre_attn_scalar), so the builder and the
HF converter never guess. Registry values are copied from each model's public ``config.json``; ``tiny`` sizes keep
the family's math with a few hundred thousand parameters, for tests and the CPU quickstart. Any other checkpoint of
the four families comes in through :meth:`ModelArch.from_hf_config`, which reads its ``config.json`` as it is.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields, replace
from typing import Dict, Optional, Tuple, Union

from liquid_train.models.hf_config import arch_fields_from_hf, read_config_json


@dataclass(frozen=True)
class ModelArch:
    family: str
    size: str
    hf_model_type: str  # transformers `model_type`: qwen2 / llama / gemma2 / gemma
    num_layers: int
    hidden_size: int
    ffn_hidden_size: int
    num_attention_heads: int
    num_query_groups: int
    head_dim: int
    vocab_size: int  # base model's embedding rows (HF config.vocab_size)
    max_position_embeddings: int
    rope_theta: float
    norm_eps: float
    tie_embeddings: bool
    activation: str = "swiglu"  # "swiglu" (silu-gated) or "geglu" (gelu tanh-gated)
    qkv_bias: bool = False
    # RoPE scaling as in HF `rope_parameters`: rope_type "default" (none), "linear" (inv_freq / factor) or "llama3"
    # (factor, low/high freq factors, original context). A factor with rope_type "default" means "llama3" (the
    # registry's and older checkpoints' spelling).
    rope_scaling_factor: Optional[float] = None
    rope_low_freq_factor: float = 1.0
    rope_high_freq_factor: float = 4.0
    rope_original_max_position: int = 8192
    rope_type: str = "default"
    embedding_scale: bool = False  # Gemma: embeddings multiplied by sqrt(hidden_size)
    norm_zero_centered: bool = False  # Gemma: HF norm weight w means (1 + w); converted at import
    post_norms: bool = False  # Gemma 2: post-attention and post-feedforward norms
    attn_logit_softcap: Optional[float] = None
    final_logit_softcap: Optional[float] = None
    sliding_window: Optional[int] = None
    # 0-based layers that use the window; None = 0, 2, 4, ... (Gemma 2's default, HF layer_idx % 2 == 0)
    sliding_window_layers: Optional[Tuple[int, ...]] = None
    query_pre_attn_scalar: Optional[float] = None  # softmax scale = query_pre_attn_scalar ** -0.5
    bos_token_id: Optional[int] = 1
    eos_token_id: Optional[int] = 2
    pad_token_id: Optional[int] = 0
    tokenizer_vocab_size: Optional[int] = None  # real tokenizer length when smaller than vocab_size (Qwen2.5)

    def __post_init__(self) -> None:
        if self.rope_scaling_factor is not None and self.rope_type == "default":
            object.__setattr__(self, "rope_type", "llama3")
        if self.sliding_window_layers is not None:  # JSON gives a list
            object.__setattr__(self, "sliding_window_layers", tuple(int(i) for i in self.sliding_window_layers))

    @classmethod
    def from_hf_config(cls, path_or_dict: Union[str, dict], size: str = "custom") -> "ModelArch":
        """The architecture a Hugging Face ``config.json`` (path, its directory, or the dict) describes.

        Every key that changes the forward pass is read; one the megatron model cannot reproduce raises
        :class:`~liquid_train.models.hf_config.HFConfigError` naming the file and key.
        """
        if isinstance(path_or_dict, dict):
            cfg, path = path_or_dict, "config.json"
        else:
            path = path_or_dict if not os.path.isdir(path_or_dict) else os.path.join(path_or_dict, "config.json")
            cfg = read_config_json(path)
        return cls(size=size, **arch_fields_from_hf(cfg, path))

    def window_layers(self) -> Tuple[int, ...]:
        """0-based layers with sliding-window attention (empty without a window)."""
        if self.sliding_window is None:
            return ()
        if self.sliding_window_layers is None:
            return tuple(range(0, self.num_layers, 2))
        return self.sliding_window_layers

    def math(self) -> dict:
        """The fields that change the forward pass, normalised (unused RoPE parameters and window layouts dropped):
        two architectures compute the same function exactly when these agree."""
        names = [f.name for f in fields(self) if f.name not in _NOT_MATH and f.name != "rope_type"]
        names.insert(names.index("rope_scaling_factor"), "rope_type")  # the type first: its parameters follow it
        out = {name: getattr(self, name) for name in names}
        out["sliding_window_layers"] = self.window_layers()
        if self.rope_type == "default":
            out["rope_scaling_factor"] = None
        if self.rope_type != "llama3":
            for key in ("rope_low_freq_factor", "rope_high_freq_factor", "rope_original_max_position"):
                out.pop(key)
        return out

    @property
    def softmax_scale(self) -> float:
        base = self.query_pre_attn_scalar if self.query_pre_attn_scalar is not None else self.head_dim
        return float(base) ** -0.5

    def to_dict(self) -> dict:
        return asdict(self)


# Names, vocabulary bookkeeping and the nominal context: not part of the forward pass.
_NOT_MATH = ("family", "size", "max_position_embeddings", "bos_token_id", "eos_token_id", "pad_token_id",
             "tokenizer_vocab_size")


def _qwen(size, L, h, f, heads, kv, vocab, tied, eps, max_pos):
    return ModelArch("qwen2.5", size, "qwen2", L, h, f, heads, kv, h // heads, vocab, max_pos, 1_000_000.0, eps,
                     tied, "swiglu", qkv_bias=True, bos_token_id=151643, eos_token_id=151643,
                     pad_token_id=151643, tokenizer_vocab_size=151665)


def _llama(size, L, h, f, heads, kv, head_dim):
    return ModelArch("llama3.2", size, "llama", L, h, f, heads, kv, head_dim, 128256, 131072, 500_000.0, 1e-5,
                     True, "swiglu", rope_scaling_factor=32.0, bos_token_id=128000, eos_token_id=128001,
                     pad_token_id=128004)


def _gemma2(size, L, h, f, heads, kv, head_dim, qscalar):
    return ModelArch("gemma2", size, "gemma2", L, h, f, heads, kv, head_dim, 256000, 8192, 10_000.0, 1e-6, True,
                     "geglu", embedding_scale=True, norm_zero_centered=True, post_norms=True,
                     attn_logit_softcap=50.0, final_logit_softcap=30.0, sliding_window=4096,
                     query_pre_attn_scalar=qscalar, bos_token_id=2, eos_token_id=1, pad_token_id=0)


FAMILIES: Dict[str, Dict[str, ModelArch]] = {
    "qwen2.5": {
        "0.5b": _qwen("0.5b", 24, 896, 4864, 14, 2, 151936, True, 1e-6, 32768),
        "1.5b": _qwen("1.5b", 28, 1536, 8960, 12, 2, 151936, True, 1e-6, 131072),
        "3b": _qwen("3b", 36, 2048, 11008, 16, 2, 151936, True, 1e-6, 32768),
        "7b": _qwen("7b", 28, 3584, 18944, 28, 4, 152064, False, 1e-6, 131072),
        "14b": _qwen("14b", 48, 5120, 13824, 40, 8, 152064, False, 1e-5, 131072),
        "32b": _qwen("32b", 64, 5120, 27648, 40, 8, 152064, False, 1e-5, 131072),
    },
    "llama3.2": {
        "1b": _llama("1b", 16, 2048, 8192, 32, 8, 64),
        "3b": _llama("3b", 28, 3072, 8192, 24, 8, 128),
    },
    "gemma2": {
        "2b": _gemma2("2b", 26, 2304, 9216, 8, 4, 256, 256.0),
        "9b": _gemma2("9b", 42, 3584, 14336, 16, 8, 256, 256.0),
        "27b": _gemma2("27b", 46, 4608, 36864, 32, 16, 128, 144.0),
    },
    "gemma": {
        "7b": ModelArch("gemma", "7b", "gemma", 28, 3072, 24576, 16, 16, 256, 256000, 8192, 10_000.0, 1e-6, True,
                        "geglu", embedding_scale=True, norm_zero_centered=True, bos_token_id=2, eos_token_id=1,
                        pad_token_id=0),
    },
}

# Tiny sizes: same family math, small shapes and a 512-row base vocabulary (test tokenizers are built to match).
_TINY_SHAPE = dict(num_layers=2, hidden_size=64, ffn_hidden_size=128, num_attention_heads=4, num_query_groups=2,
                   head_dim=16, vocab_size=512, max_position_embeddings=1024)
FAMILIES["qwen2.5"]["tiny"] = replace(FAMILIES["qwen2.5"]["0.5b"], size="tiny", **_TINY_SHAPE, bos_token_id=497,
                                      eos_token_id=497, pad_token_id=497, tokenizer_vocab_size=500)
FAMILIES["llama3.2"]["tiny"] = replace(FAMILIES["llama3.2"]["1b"], size="tiny", **_TINY_SHAPE, bos_token_id=256,
                                       eos_token_id=257, pad_token_id=260)
FAMILIES["gemma2"]["tiny"] = replace(FAMILIES["gemma2"]["2b"], size="tiny", **_TINY_SHAPE, sliding_window=4,
                                     query_pre_attn_scalar=24.0)
FAMILIES["gemma"]["tiny"] = replace(FAMILIES["gemma"]["7b"], size="tiny", **_TINY_SHAPE)

FAMILY_ALIASES = {"qwen": "qwen2.5", "qwen2": "qwen2.5", "llama": "llama3.2", "llama3": "llama3.2",
                  "gemma-2": "gemma2", "gemma1": "gemma"}


def list_families() -> Dict[str, Tuple[str, ...]]:
    return {fam: tuple(sizes) for fam, sizes in FAMILIES.items()}


def get_model_arch(family: str, size: str) -> ModelArch:
    """Look up an architecture; one clear error listing what exists when the name is unknown."""
    fam = FAMILY_ALIASES.get(family.lower(), family.lower())
    if fam not in FAMILIES:
        raise KeyError(f"unknown model family {family!r}; known: {sorted(FAMILIES)}")
    key = size.lower()
    if key not in FAMILIES[fam]:
        raise KeyError(f"unknown size {size!r} for family {fam!r}; known: {sorted(FAMILIES[fam])}")
    return FAMILIES[fam][key]


def registry_size_of(arch: ModelArch) -> Optional[str]:
    """The registry size of ``arch``'s family whose forward pass is exactly ``arch``'s, if any."""
    for size, known in FAMILIES.get(arch.family, {}).items():
        if known.math() == arch.math():
            return size
    return None


def arch_from_dict(data: dict) -> ModelArch:
    """A ModelArch from a plain dict of its fields (sidecars, run configs); unknown keys are ignored."""
    return ModelArch(**{k: v for k, v in data.items() if k in ModelArch.__dataclass_fields__})
