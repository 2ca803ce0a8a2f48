"""A Hugging Face ``config.json`` read into the fields of a :class:`~liquid_train.models.families.ModelArch`.

Why: users bring fine-tunes, other sizes and unusual RoPE settings. The megatron model must compute what
``transformers`` computes for that config, so every key that changes the forward pass is read here, and a setting
the megatron model cannot reproduce is refused with one line naming it (:class:`HFConfigError`), never dropped.

Keys a ``config.json`` leaves out take the defaults of the ``transformers`` (v5) config class of its ``model_type``.
The shape keys (vocab, hidden, intermediate, layers, heads) must be present: a real checkpoint always has them.
This module knows nothing of the registry; :meth:`ModelArch.from_hf_config` builds the architecture from its output.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any, Dict, List, Optional, Tuple, Union

# transformers model_type -> liquid-train family name
FAMILY_OF_MODEL_TYPE = {"qwen2": "qwen2.5", "llama": "llama3.2", "gemma2": "gemma2", "gemma": "gemma"}

# Defaults of transformers' config classes for the keys read below (Qwen2Config, LlamaConfig, GemmaConfig,
# Gemma2Config); None = derived (num_key_value_heads -> num_attention_heads, head_dim -> hidden / heads).
_DEFAULTS: Dict[str, Dict[str, Any]] = {
    "qwen2": dict(num_key_value_heads=None, head_dim=None, hidden_act="silu", max_position_embeddings=32768,
                  rms_norm_eps=1e-6, tie_word_embeddings=False, use_sliding_window=False, sliding_window=4096,
                  max_window_layers=28, bos_token_id=None, eos_token_id=None, pad_token_id=None),
    "llama": dict(num_key_value_heads=None, head_dim=None, hidden_act="silu", max_position_embeddings=2048,
                  rms_norm_eps=1e-6, tie_word_embeddings=False, attention_bias=False, mlp_bias=False,
                  bos_token_id=1, eos_token_id=2, pad_token_id=None),
    "gemma": dict(num_key_value_heads=16, head_dim=256, hidden_act="gelu_pytorch_tanh", max_position_embeddings=8192,
                  rms_norm_eps=1e-6, tie_word_embeddings=True, attention_bias=False, bos_token_id=2, eos_token_id=1,
                  pad_token_id=0),
    "gemma2": dict(num_key_value_heads=4, head_dim=256, hidden_activation="gelu_pytorch_tanh",
                   max_position_embeddings=8192, rms_norm_eps=1e-6, tie_word_embeddings=True, attention_bias=False,
                   query_pre_attn_scalar=256, sliding_window=4096, final_logit_softcapping=30.0,
                   attn_logit_softcapping=50.0, bos_token_id=2, eos_token_id=1, pad_token_id=0),
}
_REQUIRED = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
# hidden_act -> the gated MLP megatron builds (F.silu / F.gelu(approximate="tanh"), exactly transformers' ACT2FN)
_ACTIVATIONS = {"silu": "swiglu", "swish": "swiglu", "gelu_pytorch_tanh": "geglu"}
ROPE_TYPES = ("default", "linear", "llama3")
# ModelArch field -> the config.json key it is read from (for messages)
HF_KEY_OF_FIELD = {
    "hf_model_type": "model_type", "num_layers": "num_hidden_layers", "ffn_hidden_size": "intermediate_size",
    "num_query_groups": "num_key_value_heads", "norm_eps": "rms_norm_eps", "tie_embeddings": "tie_word_embeddings",
    "activation": "hidden_act", "qkv_bias": "attention_bias", "rope_theta": "rope_theta",
    "rope_type": "rope_scaling.rope_type", "rope_scaling_factor": "rope_scaling.factor",
    "rope_low_freq_factor": "rope_scaling.low_freq_factor", "rope_high_freq_factor": "rope_scaling.high_freq_factor",
    "rope_original_max_position": "rope_scaling.original_max_position_embeddings",
    "attn_logit_softcap": "attn_logit_softcapping", "final_logit_softcap": "final_logit_softcapping",
    "sliding_window_layers": "layer_types",
}
_LAYER_TYPES = ("full_attention", "sliding_attention")


class HFConfigError(ValueError):
    """A config.json the megatron model cannot reproduce; the message names the file, the key and what to do."""


def read_config_json(path: str) -> dict:
    """``config.json`` (or a directory holding one) as a dict; a missing or corrupt file is one error naming it."""
    if os.path.isdir(path):
        path = os.path.join(path, "config.json")
    if not os.path.exists(path):
        raise HFConfigError(f"{path}: missing; point --hf-dir at a Hugging Face model directory")
    try:
        with open(path) as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HFConfigError(f"{path}: not valid JSON ({exc}); re-download or repair the file") from exc
    if not isinstance(data, dict):
        raise HFConfigError(f"{path}: holds a {type(data).__name__}, not a JSON object of config keys")
    return data


class _Reader:
    """Typed access to one config dict, with the model type's defaults and errors that name the key."""

    def __init__(self, cfg: dict, path: str):
        self.cfg, self.path = cfg, path
        self.model_type = cfg.get("model_type")
        self.defaults = _DEFAULTS[self.model_type]

    def fail(self, key: str, what: str) -> HFConfigError:
        return HFConfigError(f"{self.path}: {key}: {what}")

    def get(self, key: str, default: Any = "__class__") -> Any:
        if key in self.cfg:
            return self.cfg[key]
        return self.defaults.get(key) if default == "__class__" else default

    def integer(self, key: str, value: Any = "__read__", minimum: int = 1) -> int:
        value = self.get(key) if value == "__read__" else value
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.fail(key, f"{value!r} is not an integer >= {minimum}")
        return value

    def number(self, key: str, value: Any = "__read__", positive: bool = True) -> float:
        value = self.get(key) if value == "__read__" else value
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or (positive and value <= 0):
            raise self.fail(key, f"{value!r} is not a {'positive ' if positive else ''}number")
        return float(value)

    def flag(self, key: str) -> bool:
        value = self.get(key)
        if not isinstance(value, bool):
            raise self.fail(key, f"{value!r} is not true or false")
        return value

    def refuse_if(self, key: str, bad: bool, why: str) -> None:
        if bad:
            raise self.fail(key, why)


def _special_id(r: _Reader, key: str) -> Optional[Union[int, List[int]]]:
    value = r.get(key)
    if value is None:
        return None
    values = value if isinstance(value, list) else [value]
    if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in values):
        raise r.fail(key, f"{value!r} is not a token id (or list of ids)")
    return value


def special_ids_in_config(cfg: dict, path: str = "config.json") -> Dict[str, Optional[Union[int, List[int]]]]:
    """``{"bos": id|None, "eos": id|[ids]|None, "pad": id|None}`` as transformers reads them (class defaults)."""
    r = _Reader(cfg, path)
    return {kind: _special_id(r, f"{kind}_token_id") for kind in ("bos", "eos", "pad")}


def _rope(r: _Reader, head_dim: int, max_pos: int) -> Dict[str, Any]:
    """RoPE theta, scaling type and every parameter of it, from ``rope_parameters`` (v5) or ``rope_scaling`` (v4)."""
    key = "rope_scaling" if r.cfg.get("rope_scaling") else "rope_parameters"
    params = r.cfg.get(key) or {}
    if not isinstance(params, dict):
        raise r.fail(key, f"{params!r} is not an object")
    nested = [k for k in params if k in _LAYER_TYPES]
    r.refuse_if(key, bool(nested), f"per-layer-type RoPE parameters ({nested}) are not supported; one RoPE for "
                "every layer is")
    theta = r.number(f"{key}.rope_theta", params.get("rope_theta", r.cfg.get("rope_theta", 10000.0)))
    rope_type = params.get("rope_type", params.get("type", "default"))
    r.refuse_if(f"{key}.rope_type", rope_type not in ROPE_TYPES,
                f"{rope_type!r} is not supported (megatron's rotary embedding here reproduces {', '.join(ROPE_TYPES)})")
    partial = params.get("partial_rotary_factor", r.cfg.get("partial_rotary_factor", 1.0))
    r.refuse_if("partial_rotary_factor", partial not in (None, 1, 1.0),
                f"{partial!r}: only full rotary embeddings (1.0) are supported")
    r.refuse_if("head_dim", head_dim % 2 != 0, f"{head_dim} is odd; RoPE needs an even head dimension")
    out: Dict[str, Any] = dict(rope_theta=theta, rope_type=rope_type, rope_scaling_factor=None)
    if rope_type in ("linear", "llama3"):
        out["rope_scaling_factor"] = r.number(f"{key}.factor", params.get("factor"))
    if rope_type == "llama3":
        missing = [k for k in ("low_freq_factor", "high_freq_factor") if k not in params]
        r.refuse_if(key, bool(missing), f"rope_type 'llama3' needs {missing}")
        low = r.number(f"{key}.low_freq_factor", params["low_freq_factor"])
        high = r.number(f"{key}.high_freq_factor", params["high_freq_factor"])
        r.refuse_if(f"{key}.high_freq_factor", high <= low, f"{high} must exceed low_freq_factor {low}")
        original = params.get("original_max_position_embeddings", r.cfg.get("original_max_position_embeddings",
                                                                            max_pos))
        out.update(rope_low_freq_factor=low, rope_high_freq_factor=high,
                   rope_original_max_position=r.integer(f"{key}.original_max_position_embeddings", original))
    return out


def _activation(r: _Reader) -> str:
    if r.model_type == "gemma2":
        key, act = "hidden_activation", r.get("hidden_activation")
        other = r.cfg.get("hidden_act")
    else:
        key, act = "hidden_act", r.get("hidden_act")
        other = r.cfg.get("hidden_activation") if r.model_type == "gemma" else None
    if r.model_type == "gemma" and act == "gelu":  # legacy Gemma releases: "gelu" means the tanh approximation
        act = "gelu_pytorch_tanh"
    r.refuse_if(key, act not in _ACTIVATIONS, f"{act!r} is not supported (supported: {sorted(_ACTIVATIONS)})")
    other = "gelu_pytorch_tanh" if other == "gelu" else other
    r.refuse_if(key, other is not None and other != act and _ACTIVATIONS.get(other) != _ACTIVATIONS[act],
                f"{act!r} disagrees with the config's other activation key ({other!r}); keep one of them")
    return _ACTIVATIONS[act]


def _sliding_window(r: _Reader, num_layers: int) -> Tuple[Optional[int], Optional[Tuple[int, ...]]]:
    """(window, layers using it) as transformers builds the masks; (None, None) when no layer slides."""
    if r.model_type not in ("qwen2", "gemma2"):
        return None, None
    if r.model_type == "qwen2":
        window = r.get("sliding_window") if r.flag("use_sliding_window") else None
        default = ["sliding_attention" if window is not None and i >= r.integer("max_window_layers", minimum=0)
                   else "full_attention" for i in range(num_layers)]
    else:
        window = r.get("sliding_window")
        default = ["sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(num_layers)]
    types = r.cfg.get("layer_types") or default
    r.refuse_if("layer_types", not isinstance(types, list) or len(types) != num_layers
                or any(t not in _LAYER_TYPES for t in types),
                f"must list {num_layers} entries of {list(_LAYER_TYPES)}")
    layers = tuple(i for i, t in enumerate(types) if t == "sliding_attention")
    if not layers:
        return None, None
    why = "use_sliding_window is false" if r.model_type == "qwen2" else "sliding_window is null"
    r.refuse_if("layer_types", window is None, f"marks sliding layers {list(layers)} but {why}; make them agree")
    return r.integer("sliding_window", window), layers


def arch_fields_from_hf(cfg: dict, path: str = "config.json") -> Dict[str, Any]:
    """The ModelArch keyword arguments (all but ``size``) for an HF config dict; HFConfigError if not reproducible."""
    model_type = cfg.get("model_type")
    if model_type not in FAMILY_OF_MODEL_TYPE:
        raise HFConfigError(f"{path}: model_type {model_type!r} is not supported; supported model types: "
                            f"{sorted(FAMILY_OF_MODEL_TYPE)}")
    r = _Reader(cfg, path)
    missing = [k for k in _REQUIRED if k not in cfg]
    r.refuse_if(missing[0] if missing else "", bool(missing), "missing; a model config.json must give "
                f"{', '.join(_REQUIRED)}")
    auto = cfg.get("auto_map") or {}
    custom = sorted(k for k in auto if not str(k).startswith("AutoTokenizer")) if isinstance(auto, dict) else [auto]
    r.refuse_if("auto_map", bool(custom), f"custom modeling code ({custom}) is not supported; only the stock "
                "transformers model of each model_type is")
    r.refuse_if("quantization_config", cfg.get("quantization_config") is not None,
                "quantised checkpoints are not supported; import the unquantised weights")
    r.refuse_if("attention_dropout", cfg.get("attention_dropout", 0.0) not in (0, 0.0, None),
                f"{cfg.get('attention_dropout')!r}: liquid-train trains without attention dropout; set it to 0.0")
    r.refuse_if("use_bidirectional_attention", bool(cfg.get("use_bidirectional_attention")),
                "bidirectional attention is not supported (the model is a causal decoder)")
    if model_type != "qwen2":
        r.refuse_if("attention_bias", r.flag("attention_bias"), "q/k/v/o projection biases are not supported "
                    f"for {model_type} (megatron adds only q/k/v biases; Qwen2 has those)")
    if model_type == "llama":
        r.refuse_if("mlp_bias", r.flag("mlp_bias"), "MLP biases are not supported")

    hidden = r.integer("hidden_size")
    heads = r.integer("num_attention_heads")
    kv = r.get("num_key_value_heads")
    kv = heads if kv is None else r.integer("num_key_value_heads", kv)
    r.refuse_if("num_key_value_heads", heads % kv != 0, f"{kv} does not divide num_attention_heads={heads}")
    head_dim = r.get("head_dim")
    if head_dim is None:
        r.refuse_if("hidden_size", hidden % heads != 0, f"{hidden} is not a multiple of num_attention_heads={heads} "
                    "and no head_dim is given")
        head_dim = hidden // heads
    head_dim = r.integer("head_dim", head_dim)
    num_layers = r.integer("num_hidden_layers")
    max_pos = r.integer("max_position_embeddings")
    window, window_layers = _sliding_window(r, num_layers)
    gemma2 = model_type == "gemma2"
    caps = {}
    for key in ("attn_logit_softcapping", "final_logit_softcapping"):
        value = r.get(key) if gemma2 else None
        caps[key] = None if value is None else r.number(key, value)
    ids = special_ids_in_config(cfg, path)
    eos = ids["eos"][0] if isinstance(ids["eos"], list) else ids["eos"]
    fields = dict(
        family=FAMILY_OF_MODEL_TYPE[model_type], hf_model_type=model_type, num_layers=num_layers,
        hidden_size=hidden, ffn_hidden_size=r.integer("intermediate_size"), num_attention_heads=heads,
        num_query_groups=kv, head_dim=head_dim, vocab_size=r.integer("vocab_size"), max_position_embeddings=max_pos,
        norm_eps=r.number("rms_norm_eps"), tie_embeddings=r.flag("tie_word_embeddings"),
        activation=_activation(r), qkv_bias=model_type == "qwen2",
        embedding_scale=model_type.startswith("gemma"), norm_zero_centered=model_type.startswith("gemma"),
        post_norms=gemma2, attn_logit_softcap=caps["attn_logit_softcapping"],
        final_logit_softcap=caps["final_logit_softcapping"], sliding_window=window,
        sliding_window_layers=window_layers,
        query_pre_attn_scalar=r.number("query_pre_attn_scalar") if gemma2 else None,
        bos_token_id=ids["bos"] if ids["bos"] is not None else eos,
        eos_token_id=eos, pad_token_id=ids["pad"] if ids["pad"] is not None else eos,
    )
    fields.update(_rope(r, head_dim, max_pos))
    return fields
