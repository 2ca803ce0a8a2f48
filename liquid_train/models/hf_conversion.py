"""Hugging Face <-> megatron-core weights for every family, at any TP/PP layout.

Import reads the HF safetensors lazily (one tensor at a time through ``safe_open``), builds each megatron parameter of
this rank's stage from the HF tensors of the same layer (fused/interleaved QKV, fused gate+up, Gemma's (1+w) norms
folded into plain weights, vocabulary extended by :mod:`vocab_extension`), slices it for this TP rank, and saves a
megatron dist checkpoint (torch_dist): ``{"model": model.sharded_state_dict()}`` + ``liquid_vocab.json`` +
``liquid_model.json``. Run it under ``torchrun --nproc_per_node=TP*PP`` to split a large model over processes: each
process holds only its own shard. Export loads any layout (the dist checkpoint reshards) into a TP=1/PP=1 model and
writes HF safetensors shards layer by layer, with the padding rows removed, plus the tokenizer (always: refused
without one) and ``liquid_image_tokens.json`` (image ids, grid, resolution, VQ identity, templates).

The architecture is read from the checkpoint's own ``config.json`` (:meth:`ModelArch.from_hf_config`); a registry
``--size`` is only checked against it. The imported ``config.json`` is kept in ``liquid_model.json`` and written back
on export with only ``vocab_size`` changed (and the dtype key, when ``--dtype`` asks for another one). bos/eos/pad
come from the config and the tokenizer, checked against each other (:func:`liquid_train.vocab.resolve_special_ids`).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import replace
from typing import Callable, Dict, Iterator, Optional, Tuple

import torch
import torch.distributed as dist
from megatron.core import dist_checkpointing, parallel_state
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm import tqdm
from transformers import AutoTokenizer

from data_pipeline.vq import VQCheckpointError, vq_codebook_size
from liquid_train import image_meta
from liquid_train.atomic import atomic_path, atomic_write_json
from liquid_train.models.builder import VocabRows, build_gpt_model, check_divisibility
from liquid_train.models.families import FAMILY_ALIASES, ModelArch, get_model_arch, registry_size_of
from liquid_train.models.hf_config import (FAMILY_OF_MODEL_TYPE, HF_KEY_OF_FIELD, HFConfigError, arch_fields_from_hf,
                                           read_config_json, special_ids_in_config)
from liquid_train.models.sidecar import MODEL_SIDECAR, SidecarError, read_sidecar, sidecar_arch
from liquid_train.models.vocab_extension import extend_embedding, extend_tokenizer, plan_vocab
from liquid_train.vocab import SPECIAL_KINDS, LiquidVocab, resolve_special_ids

logger = logging.getLogger(__name__)

MODEL_TYPE_TO_FAMILY = FAMILY_OF_MODEL_TYPE
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")
_DTYPE_NAMES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
IMAGE_SIDECAR = image_meta.EXPORT_FILE
TOKENIZER_SUBDIR = "tokenizer"


class ConversionError(ValueError):
    """A bad input to conversion; the message names the file/field and what to do."""


# ---------------------------------------------------------------------------------------------------------------
# HF side: config and lazy safetensors access
# ---------------------------------------------------------------------------------------------------------------
def read_hf_config(hf_dir: str) -> dict:
    try:
        return read_config_json(os.path.join(hf_dir, "config.json"))
    except HFConfigError as exc:
        raise ConversionError(str(exc)) from None


def import_arch(hf_dir: str, family: Optional[str] = None, size: Optional[str] = None,
                cfg: Optional[dict] = None) -> ModelArch:
    """The architecture ``hf_dir/config.json`` describes; ``family`` / ``size``, when given, are checked against it.

    Without ``size`` the architecture is named after the registry size it equals, or ``custom``.
    """
    path = os.path.join(hf_dir, "config.json")
    cfg = read_hf_config(hf_dir) if cfg is None else cfg
    try:
        arch = ModelArch(size="custom", **arch_fields_from_hf(cfg, path))
    except HFConfigError as exc:
        raise ConversionError(str(exc)) from None
    if family is not None:
        want = FAMILY_ALIASES.get(family.lower(), family.lower())
        if want != arch.family:
            raise ConversionError(f"{path}: model_type {arch.hf_model_type!r} is a {arch.family} model, not {want}; "
                                  f"pass --family {arch.family} or leave --family out")
    if size is None:
        known = registry_size_of(arch)
        if known is None:
            return arch
        return replace(arch, size=known, tokenizer_vocab_size=get_model_arch(arch.family, known).tokenizer_vocab_size)
    try:
        registry = get_model_arch(arch.family, size)
    except KeyError as exc:
        raise ConversionError(f"--size {size}: {exc.args[0]}") from None
    have, want = arch.math(), registry.math()
    for key in want:
        if have[key] != want[key]:
            raise ConversionError(f"{path}: {HF_KEY_OF_FIELD.get(key, key)}: {have[key]!r} but {arch.family} "
                                  f"{registry.size} has {want[key]!r}; leave --size out to import the config as it is")
    return replace(arch, size=registry.size, tokenizer_vocab_size=registry.tokenizer_vocab_size)


def tokenizer_special_ids(tokenizer) -> Dict[str, Optional[Tuple[str, int]]]:
    """``{kind: (token, id) or None}`` for bos/eos/pad of a transformers tokenizer."""
    out = {}
    for kind in SPECIAL_KINDS:
        token, tid = getattr(tokenizer, f"{kind}_token", None), getattr(tokenizer, f"{kind}_token_id", None)
        out[kind] = (str(token), int(tid)) if token is not None and tid is not None else None
    return out


def settle_vocabulary(arch: ModelArch, cfg: dict, tokenizer, cfg_path: str, tok_path: Optional[str],
                      notify: Callable[[str], None]) -> ModelArch:
    """``arch`` with bos/eos/pad from config + tokenizer (checked against each other) and the tokenizer's length."""
    tok_name = tok_path or "(no tokenizer)"
    try:
        ids, notes = resolve_special_ids(special_ids_in_config(cfg, cfg_path),
                                         tokenizer_special_ids(tokenizer) if tokenizer is not None else None,
                                         cfg_path, tok_name)
    except ValueError as exc:
        raise ConversionError(str(exc)) from None
    for note in notes:
        notify(note)
    for kind, value in ids.items():
        if value >= arch.vocab_size:
            raise ConversionError(f"{cfg_path}: {kind} id {value} is outside vocab_size {arch.vocab_size}")
    tok_len = arch.tokenizer_vocab_size
    if tokenizer is not None:
        n = len(tokenizer)
        if n > arch.vocab_size:
            raise ConversionError(f"{tok_name}: {n} tokens, more than {cfg_path} vocab_size {arch.vocab_size}; the "
                                  "tokenizer does not belong to this model")
        tok_len = n if n < arch.vocab_size else None
    return replace(arch, bos_token_id=ids["bos"], eos_token_id=ids["eos"], pad_token_id=ids["pad"],
                   tokenizer_vocab_size=tok_len)


class SafetensorsReader:
    """Lazy access to HF weights (single file or sharded with an index); checks completeness up front."""

    def __init__(self, hf_dir: str):
        self.hf_dir = hf_dir
        index = os.path.join(hf_dir, "model.safetensors.index.json")
        single = os.path.join(hf_dir, "model.safetensors")
        if os.path.exists(index):
            try:
                with open(index) as f:
                    self.weight_map: Dict[str, str] = json.load(f)["weight_map"]
                if not isinstance(self.weight_map, dict):
                    raise TypeError("weight_map is not an object")
            except (ValueError, KeyError, TypeError) as exc:
                raise ConversionError(f"{index}: unreadable safetensors index ({type(exc).__name__}: {exc}); "
                                      "re-download it") from None
        elif os.path.exists(single):
            self.weight_map = None
        else:
            raise ConversionError(f"{hf_dir}: no model.safetensors or model.safetensors.index.json; export the "
                                  "model with save_pretrained(safe_serialization=True)")
        files = sorted(set(self.weight_map.values())) if self.weight_map else ["model.safetensors"]
        missing = [os.path.join(hf_dir, f) for f in files if not os.path.exists(os.path.join(hf_dir, f))]
        if missing:
            raise ConversionError(f"safetensors shards listed in {index} are missing: {', '.join(missing)}; "
                                  "download the complete checkpoint")
        self._handles = {}
        for fname in files:
            path = os.path.join(hf_dir, fname)
            try:
                self._handles[fname] = safe_open(path, framework="pt")
            except Exception as exc:  # truncated / corrupt file
                raise ConversionError(f"{path}: unreadable safetensors file ({exc}); re-download it") from exc
        if self.weight_map is None:
            self.weight_map = {k: "model.safetensors" for k in self._handles["model.safetensors"].keys()}
        else:
            for fname, handle in self._handles.items():
                have = set(handle.keys())
                listed = {k for k, v in self.weight_map.items() if v == fname}
                if listed - have:
                    raise ConversionError(f"{os.path.join(hf_dir, fname)}: partial shard, missing tensors "
                                          f"{sorted(listed - have)[:5]}; re-download it")

    def has(self, name: str) -> bool:
        return name in self.weight_map

    def get(self, name: str) -> torch.Tensor:
        if name not in self.weight_map:
            raise ConversionError(f"{self.hf_dir}: tensor {name!r} is missing from the safetensors files "
                                  "(partial checkpoint or a different architecture)")
        fname = self.weight_map[name]
        try:
            return self._handles[fname].get_tensor(name)
        except Exception as exc:  # header fine, data truncated or corrupt
            raise ConversionError(f"{os.path.join(self.hf_dir, fname)}: cannot read tensor {name!r} ({exc}); "
                                  "re-download the file") from None


# ---------------------------------------------------------------------------------------------------------------
# name/layout mapping
# ---------------------------------------------------------------------------------------------------------------
def _norm_in(w: torch.Tensor, arch: ModelArch) -> torch.Tensor:
    return (w.float() + 1.0).to(w.dtype) if arch.norm_zero_centered else w


def _norm_out(w: torch.Tensor, arch: ModelArch) -> torch.Tensor:
    return (w.float() - 1.0).to(w.dtype) if arch.norm_zero_centered else w


def fuse_qkv(q, k, v, arch: ModelArch) -> torch.Tensor:
    """HF q/k/v -> megatron's per-query-group interleaved [ng, (np/ng + 2) * hn, ...] layout."""
    ng, hn = arch.num_query_groups, arch.head_dim
    rest = q.shape[1:]
    q = q.reshape(ng, -1, *rest)
    k = k.reshape(ng, hn, *rest)
    v = v.reshape(ng, hn, *rest)
    return torch.cat([q, k, v], dim=1).reshape(-1, *rest)


def split_qkv(qkv, arch: ModelArch) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    ng, hn = arch.num_query_groups, arch.head_dim
    per = arch.num_attention_heads // ng * hn
    rest = qkv.shape[1:]
    x = qkv.reshape(ng, per + 2 * hn, *rest)
    q, k, v = torch.split(x, [per, hn, hn], dim=1)
    return q.reshape(-1, *rest), k.reshape(-1, *rest), v.reshape(-1, *rest)


def _hf_norm_names(arch: ModelArch) -> Dict[str, str]:
    """megatron suffix -> HF suffix for the per-layer norms."""
    if arch.post_norms:
        return {"input_layernorm.weight": "input_layernorm.weight",
                "self_attention.linear_proj.post_norm.weight": "post_attention_layernorm.weight",
                "pre_mlp_layernorm.weight": "pre_feedforward_layernorm.weight",
                "mlp.linear_fc2.post_norm.weight": "post_feedforward_layernorm.weight"}
    return {"input_layernorm.weight": "input_layernorm.weight",
            "pre_mlp_layernorm.weight": "post_attention_layernorm.weight"}


def megatron_layer_tensor(get: Callable[[str], torch.Tensor], arch: ModelArch, layer: int, suffix: str):
    """Full (unsharded) megatron tensor ``decoder.layers.<layer>.<suffix>`` from HF tensors via ``get``."""
    p = f"model.layers.{layer}."
    norms = _hf_norm_names(arch)
    if suffix in norms:
        return _norm_in(get(p + norms[suffix]), arch)
    if suffix == "self_attention.linear_qkv.weight":
        return fuse_qkv(get(p + "self_attn.q_proj.weight"), get(p + "self_attn.k_proj.weight"),
                        get(p + "self_attn.v_proj.weight"), arch)
    if suffix == "self_attention.linear_qkv.bias":
        return fuse_qkv(get(p + "self_attn.q_proj.bias"), get(p + "self_attn.k_proj.bias"),
                        get(p + "self_attn.v_proj.bias"), arch)
    if suffix == "self_attention.linear_proj.weight":
        return get(p + "self_attn.o_proj.weight")
    if suffix == "mlp.linear_fc1.weight":
        return torch.cat([get(p + "mlp.gate_proj.weight"), get(p + "mlp.up_proj.weight")], dim=0)
    if suffix == "mlp.linear_fc2.weight":
        return get(p + "mlp.down_proj.weight")
    raise ConversionError(f"no HF mapping for megatron parameter decoder.layers.{layer}.{suffix}")


def hf_layer_tensors(mtensors: Dict[str, torch.Tensor], arch: ModelArch, layer: int) -> Dict[str, torch.Tensor]:
    """Inverse of :func:`megatron_layer_tensor` for one layer (full tensors keyed by megatron suffix)."""
    p = f"model.layers.{layer}."
    out = {}
    for msuf, hsuf in _hf_norm_names(arch).items():
        out[p + hsuf] = _norm_out(mtensors[msuf], arch)
    q, k, v = split_qkv(mtensors["self_attention.linear_qkv.weight"], arch)
    out.update({p + "self_attn.q_proj.weight": q, p + "self_attn.k_proj.weight": k, p + "self_attn.v_proj.weight": v})
    if arch.qkv_bias:
        q, k, v = split_qkv(mtensors["self_attention.linear_qkv.bias"], arch)
        out.update({p + "self_attn.q_proj.bias": q, p + "self_attn.k_proj.bias": k, p + "self_attn.v_proj.bias": v})
    out[p + "self_attn.o_proj.weight"] = mtensors["self_attention.linear_proj.weight"]
    gate, up = torch.chunk(mtensors["mlp.linear_fc1.weight"], 2, dim=0)
    out[p + "mlp.gate_proj.weight"], out[p + "mlp.up_proj.weight"] = gate, up
    out[p + "mlp.down_proj.weight"] = mtensors["mlp.linear_fc2.weight"]
    return out


def _tp_slice(full: torch.Tensor, param: torch.Tensor, suffix: str) -> torch.Tensor:
    """This TP rank's slice of a full tensor, following the parameter's partition attributes."""
    if not getattr(param, "tensor_model_parallel", False):
        return full
    tp = parallel_state.get_tensor_model_parallel_world_size()
    rank = parallel_state.get_tensor_model_parallel_rank()
    dim = param.partition_dim
    if suffix.endswith("linear_fc1.weight"):  # gated: each rank holds [gate_r; up_r]
        gate, up = torch.chunk(full, 2, dim=0)
        return torch.cat([torch.chunk(gate, tp, 0)[rank], torch.chunk(up, tp, 0)[rank]], 0)
    return torch.chunk(full, tp, dim=dim)[rank]


def _iter_model_params(model) -> Iterator[Tuple[str, torch.Tensor, Optional[int], str]]:
    """(name, param, global layer index or None, suffix) for every parameter of a GPTModel stage."""
    layer_offset = {}
    if hasattr(model, "decoder"):
        for j, layer in enumerate(model.decoder.layers):
            layer_offset[j] = layer.layer_number - 1
    for name, param in model.named_parameters():
        if name.startswith("decoder.layers."):
            rest = name[len("decoder.layers."):]
            j, suffix = rest.split(".", 1)
            yield name, param, layer_offset[int(j)], suffix
        else:
            yield name, param, None, name


# ---------------------------------------------------------------------------------------------------------------
# import
# ---------------------------------------------------------------------------------------------------------------
def load_hf_into_model(model, reader: SafetensorsReader, arch: ModelArch, vocab: LiquidVocab, seed: int = 0):
    """Fill this rank's GPTModel stage from HF weights (streamed tensor by tensor)."""
    rows = model.liquid_vocab_rows.padded
    cache: Dict[str, torch.Tensor] = {}

    def embedding_full(hf_name: str) -> torch.Tensor:
        if hf_name not in cache:
            cache[hf_name] = extend_embedding(reader.get(hf_name), arch, vocab, rows, seed=seed)
        return cache[hf_name]

    with torch.no_grad():
        for name, param, layer, suffix in _iter_model_params(model):
            if layer is not None:
                full = megatron_layer_tensor(reader.get, arch, layer, suffix)
            elif name == "embedding.word_embeddings.weight":
                full = embedding_full("model.embed_tokens.weight")
            elif name == "output_layer.weight":  # only built when the embeddings are not tied
                full = embedding_full("lm_head.weight")
            elif name == "decoder.final_layernorm.weight":
                full = _norm_in(reader.get("model.norm.weight"), arch)
            else:
                raise ConversionError(f"no HF mapping for megatron parameter {name}")
            local = _tp_slice(full, param, suffix)
            if local.shape != param.shape:
                raise ConversionError(f"{name}: HF gives shape {tuple(local.shape)} for this rank, the model has "
                                      f"{tuple(param.shape)}")
            param.copy_(local.to(param.dtype))


def save_model_checkpoint(model, ckpt_dir: str, vocab: LiquidVocab, arch: ModelArch, extra_sidecar=None,
                          tokenizer=None) -> None:
    """Megatron dist checkpoint (contract 4): ``{"model": sharded_state_dict}`` + vocab/model sidecars (+ the
    tokenizer in ``tokenizer/``); atomic."""
    rank = dist.get_rank() if dist.is_initialized() else 0
    tmp = ckpt_dir.rstrip("/") + ".tmp"
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp, exist_ok=True)
    if dist.is_initialized():
        dist.barrier()
    dist_checkpointing.save({"model": model.sharded_state_dict()}, tmp)
    if dist.is_initialized():
        dist.barrier()
    if rank == 0:
        vocab.save(tmp)
        sidecar = {"family": arch.family, "size": arch.size, "arch": arch.to_dict()}
        sidecar.update(extra_sidecar or {})
        with open(os.path.join(tmp, MODEL_SIDECAR), "w") as f:
            json.dump(sidecar, f, indent=2)
        if tokenizer is not None:
            tokenizer.save_pretrained(os.path.join(tmp, TOKENIZER_SUBDIR))
        if os.path.exists(ckpt_dir):
            shutil.rmtree(ckpt_dir)
        os.replace(tmp, ckpt_dir)
    if dist.is_initialized():
        dist.barrier()


def _read_sidecar(ckpt_dir: str) -> dict:
    try:
        return read_sidecar(ckpt_dir)
    except SidecarError as err:
        raise ConversionError(str(err)) from None


def recorded_hf_config(ckpt_dir: str) -> Optional[dict]:
    """The ``config.json`` the checkpoint was imported from (kept in its sidecar), or None."""
    return _read_sidecar(ckpt_dir).get("hf_config")


def read_model_sidecar(ckpt_dir: str) -> Tuple[ModelArch, LiquidVocab]:
    return sidecar_arch(_read_sidecar(ckpt_dir)), LiquidVocab.load(ckpt_dir)


def load_model_checkpoint(model, ckpt_dir: str) -> None:
    """Load the ``"model"`` key of a dist checkpoint (model or trainer checkpoint) into a GPTModel stage."""
    if not os.path.isdir(ckpt_dir) or not os.path.exists(os.path.join(ckpt_dir, "metadata.json")):
        raise ConversionError(f"{ckpt_dir}: not a megatron dist checkpoint (no metadata.json)")
    state = dist_checkpointing.load({"model": model.sharded_state_dict()}, ckpt_dir)
    missing, unexpected = model.load_state_dict(state["model"], strict=False)
    missing = [k for k in missing if not k.endswith("_extra_state")]
    if missing:
        raise ConversionError(f"{ckpt_dir}: checkpoint lacks model tensors {missing[:5]}")


def find_tokenizer_dir(*candidates: Optional[str]) -> Optional[str]:
    """The first directory holding tokenizer files, or None."""
    for path in candidates:
        if path and any(os.path.exists(os.path.join(path, f)) for f in TOKENIZER_FILES):
            return path
    return None


DEFAULT_VQ = "chameleon-vqgan"


def image_rows(vq_tokenizer: Optional[str], num_image_tokens: Optional[int]) -> Tuple[str, int]:
    """(VQ name recorded in the vocabulary, image rows): the rows default to the VQ's codebook size; a count that
    disagrees with a VQ named explicitly is refused. A VQ directory is recorded by its absolute path, so the
    checkpoint names it from anywhere."""
    name = vq_tokenizer or DEFAULT_VQ
    if os.path.exists(os.path.expanduser(name)):
        name = os.path.abspath(os.path.expanduser(name))
    try:
        codebook = vq_codebook_size(name)
    except VQCheckpointError as exc:
        if vq_tokenizer is not None:
            raise ConversionError(f"--vq-tokenizer {vq_tokenizer}: {exc}") from None
        codebook = None
    if num_image_tokens is None:
        if codebook is None:
            raise ConversionError(f"--vq-tokenizer {name}: its codebook size cannot be read without loading it; "
                                  "pass --num-image-tokens K")
        return name, codebook
    if vq_tokenizer is not None and codebook is not None and codebook != num_image_tokens:
        raise ConversionError(f"--num-image-tokens {num_image_tokens} but --vq-tokenizer {vq_tokenizer} has "
                              f"{codebook} codes; leave --num-image-tokens out")
    return name, num_image_tokens


def hf_to_megatron(hf_dir: str, out_dir: str, family: Optional[str] = None, size: Optional[str] = None, tp: int = 1,
                   pp: int = 1, num_image_tokens: int = 8192, vq_tokenizer: str = "chameleon-vqgan",
                   precision: str = "fp32", seed: int = 0, tokenizer_dir: Optional[str] = None,
                   notify: Optional[Callable[[str], None]] = None) -> LiquidVocab:
    """Convert; parallel state must be initialised at (tp, pp) (all ranks call this).

    The architecture comes from ``hf_dir/config.json`` (``family``/``size`` are only checked against it); the
    tokenizer from ``tokenizer_dir`` or ``hf_dir``. ``notify`` receives one-line notes for the person converting
    (no tokenizer, a pad id chosen); default: the module logger.
    """
    notify = notify or logger.warning
    cfg_path = os.path.join(hf_dir, "config.json")
    cfg = read_hf_config(hf_dir)
    arch = import_arch(hf_dir, family, size, cfg=cfg)
    check_divisibility(arch, tp, pp)
    reader = SafetensorsReader(hf_dir)
    if num_image_tokens < 0:
        raise ConversionError(f"--num-image-tokens {num_image_tokens}: must be >= 0")
    if tokenizer_dir is not None and find_tokenizer_dir(tokenizer_dir) is None:
        raise ConversionError(f"{tokenizer_dir}: no tokenizer files ({', '.join(TOKENIZER_FILES)})")
    tok_dir = find_tokenizer_dir(tokenizer_dir, hf_dir)
    tokenizer = _load_tokenizer(tok_dir) if tok_dir else None
    if tokenizer is None:
        notify(f"no tokenizer in {hf_dir}: bos/eos/pad come from config.json alone and {out_dir} gets no "
               "tokenizer/ (its export will need --tokenizer-dir); pass --tokenizer DIR to check the ids and save "
               "an extended tokenizer")
    arch = settle_vocabulary(arch, cfg, tokenizer, cfg_path, tok_dir, notify)
    try:
        vocab = plan_vocab(arch, num_image_tokens, vq_tokenizer)
        if tokenizer is not None:  # checked before the weights are touched
            extend_tokenizer(tokenizer, vocab)
    except ValueError as exc:
        raise ConversionError(f"{tok_dir or cfg_path}: {exc}") from None
    if not arch.tie_embeddings and not reader.has("lm_head.weight"):
        raise ConversionError(f"{hf_dir}: tie_word_embeddings is false but the safetensors files have no "
                              "lm_head.weight; the checkpoint is incomplete")
    model = build_gpt_model(arch, vocab, precision)
    load_hf_into_model(model, reader, arch, vocab, seed=seed)
    rank = dist.get_rank() if dist.is_initialized() else 0
    save_model_checkpoint(model, out_dir, vocab, arch, tokenizer=tokenizer if rank == 0 else None,
                          extra_sidecar={"source": os.path.abspath(hf_dir), "hf_config": cfg})
    return vocab


def _load_tokenizer(path: str):
    try:
        return AutoTokenizer.from_pretrained(path)
    except Exception as exc:  # corrupt or incomplete tokenizer files
        raise ConversionError(f"{path}: cannot load the tokenizer ({type(exc).__name__}: {exc})") from None


# ---------------------------------------------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------------------------------------------
def hf_config_dict(arch: ModelArch, vocab: LiquidVocab, dtype: str = "float32") -> dict:
    """A transformers config generated from ``arch`` (for checkpoints with no recorded config.json, e.g. trained
    from scratch), with the extended (unpadded) vocabulary; :meth:`ModelArch.from_hf_config` reads it back to
    the same forward pass."""
    rope = {"rope_type": arch.rope_type, "rope_theta": arch.rope_theta}
    if arch.rope_type in ("linear", "llama3"):
        rope["factor"] = arch.rope_scaling_factor
    if arch.rope_type == "llama3":
        rope.update(low_freq_factor=arch.rope_low_freq_factor, high_freq_factor=arch.rope_high_freq_factor,
                    original_max_position_embeddings=arch.rope_original_max_position)
    arch_name = {"qwen2": "Qwen2ForCausalLM", "llama": "LlamaForCausalLM", "gemma2": "Gemma2ForCausalLM",
                 "gemma": "GemmaForCausalLM"}[arch.hf_model_type]
    cfg = dict(
        architectures=[arch_name], model_type=arch.hf_model_type, vocab_size=vocab.vocab_size,
        hidden_size=arch.hidden_size, intermediate_size=arch.ffn_hidden_size, num_hidden_layers=arch.num_layers,
        num_attention_heads=arch.num_attention_heads, num_key_value_heads=arch.num_query_groups,
        head_dim=arch.head_dim, max_position_embeddings=arch.max_position_embeddings, rms_norm_eps=arch.norm_eps,
        rope_parameters=rope, tie_word_embeddings=arch.tie_embeddings, bos_token_id=vocab.bos_id,
        eos_token_id=vocab.eos_id, pad_token_id=vocab.pad_id, dtype=dtype, attention_dropout=0.0,
    )
    act = "silu" if arch.activation == "swiglu" else "gelu_pytorch_tanh"
    cfg["hidden_activation" if arch.hf_model_type == "gemma2" else "hidden_act"] = act
    if arch.hf_model_type == "gemma2":
        cfg["hidden_act"] = act
    if arch.hf_model_type in ("llama", "gemma", "gemma2"):
        cfg["attention_bias"] = False
    if arch.hf_model_type == "llama":
        cfg["mlp_bias"] = False
    layer_types = ["sliding_attention" if i in arch.window_layers() else "full_attention"
                   for i in range(arch.num_layers)]
    if arch.hf_model_type == "qwen2":
        cfg.update(use_sliding_window=arch.sliding_window is not None, sliding_window=arch.sliding_window,
                   max_window_layers=arch.num_layers, layer_types=layer_types)
    if arch.hf_model_type == "gemma2":
        qpas = arch.query_pre_attn_scalar
        cfg.update(query_pre_attn_scalar=int(qpas) if float(qpas).is_integer() else qpas,
                   sliding_window=arch.sliding_window,
                   attn_logit_softcapping=arch.attn_logit_softcap,
                   final_logit_softcapping=arch.final_logit_softcap, layer_types=layer_types)
    return cfg


def exported_hf_config(original: dict, vocab: LiquidVocab, dtype: Optional[str] = None) -> dict:
    """The imported ``config.json`` as it was, with the extended vocabulary; ``dtype`` (a dtype asked for on export,
    e.g. "bfloat16") is written to its dtype keys (``dtype`` when it has none)."""
    cfg = dict(original)
    cfg["vocab_size"] = vocab.vocab_size
    if dtype is not None:
        for key in [k for k in ("dtype", "torch_dtype") if k in cfg] or ["dtype"]:
            cfg[key] = dtype
    return cfg


def recorded_dtype(cfg: Optional[dict]) -> Optional[torch.dtype]:
    """The torch dtype a config.json names (``dtype`` or ``torch_dtype``), if it is a float type."""
    for key in ("dtype", "torch_dtype"):
        if cfg and cfg.get(key) in _DTYPE_NAMES:
            return _DTYPE_NAMES[cfg[key]]
    return None


def _atomic_save_safetensors(tensors: Dict[str, torch.Tensor], path: str) -> None:
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, tmp, metadata={"format": "pt"})


def export_model_to_hf(model, arch: ModelArch, vocab: LiquidVocab, out_dir: str, tokenizer=None,
                       layers_per_shard: int = 4, dtype: Optional[torch.dtype] = None,
                       hf_config: Optional[dict] = None, image: Optional[dict] = None) -> None:
    """Write a TP=1/PP=1 GPTModel as an HF directory, one safetensors shard per ``layers_per_shard`` layers.

    ``hf_config``: the config.json to write (:func:`exported_hf_config` of the imported one); without it a config is
    generated from ``arch``. ``image``: the checkpoint's image record (:mod:`liquid_train.image_meta`), written with
    the image ids to ``liquid_image_tokens.json``."""
    os.makedirs(out_dir, exist_ok=True)
    real = vocab.vocab_size
    params = dict(model.named_parameters())
    cast = (lambda t: t.detach().to(dtype)) if dtype is not None else (lambda t: t.detach())
    weight_map: Dict[str, str] = {}
    shards = []
    head = {"model.embed_tokens.weight": cast(params["embedding.word_embeddings.weight"][:real]),
            "model.norm.weight": cast(_norm_out(params["decoder.final_layernorm.weight"], arch))}
    if not arch.tie_embeddings:
        head["lm_head.weight"] = cast(params["output_layer.weight"][:real])
    shards.append(head)
    n_shards = 1 + (arch.num_layers + layers_per_shard - 1) // layers_per_shard
    names = [f"model-{i + 1:05d}-of-{n_shards:05d}.safetensors" for i in range(n_shards)]

    def flush(idx: int, tensors: Dict[str, torch.Tensor]) -> None:
        _atomic_save_safetensors(tensors, os.path.join(out_dir, names[idx]))
        weight_map.update({k: names[idx] for k in tensors})

    flush(0, head)
    current: Dict[str, torch.Tensor] = {}
    for layer in tqdm(range(arch.num_layers), desc="export layers", disable=arch.num_layers < 8):
        prefix = f"decoder.layers.{layer}."
        mt = {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}
        current.update({k: cast(v) for k, v in hf_layer_tensors(mt, arch, layer).items()})
        if (layer + 1) % layers_per_shard == 0 or layer == arch.num_layers - 1:
            flush(1 + layer // layers_per_shard, current)
            current = {}
    index = {"metadata": {"total_size": 0}, "weight_map": weight_map}
    _write_json(os.path.join(out_dir, "model.safetensors.index.json"), index)
    dtype_name = str(dtype or params["decoder.final_layernorm.weight"].dtype).replace("torch.", "")
    _write_json(os.path.join(out_dir, "config.json"),
                hf_config if hf_config is not None else hf_config_dict(arch, vocab, dtype_name))
    _write_json(os.path.join(out_dir, IMAGE_SIDECAR), image_meta.export_record(vocab, image))
    vocab.save(out_dir)
    if tokenizer is not None:
        extend_tokenizer(tokenizer, vocab)
        tokenizer.save_pretrained(out_dir)


def _write_json(path: str, data) -> None:
    atomic_write_json(path, data, indent=2)


def megatron_to_hf(ckpt_dir: str, out_dir: str, tokenizer_dir: Optional[str] = None,
                   dtype: Optional[str] = None, notify: Optional[Callable[[str], None]] = None) -> None:
    """Any-layout model or trainer checkpoint -> HF directory. Parallel state must be TP=1/PP=1.

    The recorded config.json is written back; the shards take its dtype unless ``dtype`` (fp32/bf16/fp16) is given.
    """
    notify = notify or logger.warning
    arch, vocab = read_model_sidecar(ckpt_dir)
    original = recorded_hf_config(ckpt_dir)
    if original is not None:
        try:
            recorded = ModelArch.from_hf_config(original).math()
        except HFConfigError as exc:
            raise ConversionError(f"{os.path.join(ckpt_dir, MODEL_SIDECAR)}: recorded hf_config: {exc}") from None
        for key, value in arch.math().items():
            if recorded[key] != value:
                raise ConversionError(f"{os.path.join(ckpt_dir, MODEL_SIDECAR)}: arch {key}={value!r} but the "
                                      f"recorded config.json says {recorded[key]!r}; the sidecar was edited")
    else:
        notify(f"{ckpt_dir}: no imported config.json recorded; writing one generated from the architecture")
    padded = _checkpoint_vocab_rows(ckpt_dir)
    export_tokenizer_dir(ckpt_dir, tokenizer_dir)  # refused before the weights are read
    model = build_gpt_model(arch, VocabRows(vocab.vocab_size, padded or vocab.padded_vocab_size(1)), "fp32")
    load_model_checkpoint(model, ckpt_dir)
    tok_src = export_tokenizer_dir(ckpt_dir, tokenizer_dir)
    tokenizer = _load_tokenizer(tok_src)
    torch_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32, None: None}[dtype]
    config = None
    if original is not None:
        config = exported_hf_config(original, vocab, str(torch_dtype).replace("torch.", "") if torch_dtype else None)
        torch_dtype = torch_dtype or recorded_dtype(original)
    try:
        export_model_to_hf(model, arch, vocab, out_dir, tokenizer=tokenizer, dtype=torch_dtype, hf_config=config,
                           image=_read_sidecar(ckpt_dir).get(image_meta.SIDECAR_KEY))
    except ValueError as exc:  # a tokenizer that does not take the planned special ids
        raise ConversionError(f"{tok_src}: {exc}") from None


def export_tokenizer_dir(ckpt_dir: str, tokenizer_dir: Optional[str] = None) -> str:
    """The tokenizer an export carries: ``tokenizer_dir``, else the checkpoint's ``tokenizer/`` (an import), else its
    run directory's, else the run's ``data.tokenizer`` recorded in ``liquid_model.json``. None of them: refused,
    saying which to pass (an export without a tokenizer cannot be sampled from)."""
    if tokenizer_dir is not None:
        if find_tokenizer_dir(tokenizer_dir) is None:
            raise ConversionError(f"{tokenizer_dir}: no tokenizer files ({', '.join(TOKENIZER_FILES)})")
        return tokenizer_dir
    run_dir = os.path.dirname(os.path.dirname(ckpt_dir.rstrip("/")))
    recorded = _read_sidecar(ckpt_dir).get(image_meta.TOKENIZER_KEY)
    found = find_tokenizer_dir(os.path.join(ckpt_dir, TOKENIZER_SUBDIR), os.path.join(run_dir, TOKENIZER_SUBDIR),
                               recorded)
    if found is not None:
        return found
    if recorded:
        raise ConversionError(f"{ckpt_dir}: the run's tokenizer {recorded} (data.tokenizer) has no tokenizer files "
                              "any more; pass --tokenizer-dir with the tokenizer that built the run's datasets")
    raise ConversionError(f"{ckpt_dir}: no tokenizer in the checkpoint or recorded for it; pass --tokenizer-dir "
                          "with the base model's tokenizer (the one that built the datasets)")


def _checkpoint_vocab_rows(ckpt_dir: str) -> Optional[int]:
    """Padded embedding rows as stored in the checkpoint (the layout it was saved at decides the padding)."""
    try:
        meta = dist_checkpointing.load_tensors_metadata(ckpt_dir)
    except (OSError, ValueError, KeyError, RuntimeError):  # no readable metadata: the caller falls back to the vocab
        return None
    for key in ("model.embedding.word_embeddings.weight", "embedding.word_embeddings.weight"):
        if key in meta:
            return int(meta[key].global_shape[0])
    return None
