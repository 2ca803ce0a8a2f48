"""The Liquid vocabulary layout: one base LLM vocabulary extended with VQ image codes and three special tokens.

Every component that turns ids into meaning (sample templates, the model's embedding, the HF exporter, the sampler)
reads the same :class:`LiquidVocab`, so there is exactly one place that says where image codes start.

Layout (ids)::

    [0, base_vocab_size)                                 the base model's rows (text tokens, its own specials)
    [image_token_offset, image_token_offset + K)         image code c -> id image_token_offset + c
    boi_id, eoi_id, uncond_id                            reused reserved/unused base slots, or appended rows
    [vocab_size, padded_vocab_size)                      padding rows (TP divisibility); never sampled

``image_token_offset`` is explicit and never derived from ``len(tokenizer)`` (Qwen2.5's config vocabulary, 151936,
is larger than its tokenizer, ~151665).
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Tuple, Union

import numpy as np

from liquid_train.atomic import atomic_write_json

TASK_TEXT, TASK_T2I, TASK_I2T = 0, 1, 2
TASK_NAMES = ("text", "t2i", "i2t")
TASK_PAD = -1


def padded_rows(rows: int, tensor_parallel_size: int = 1, make_divisible_by: int = 128) -> int:
    """Embedding rows after TP padding: ``rows`` rounded up to a multiple of ``make_divisible_by * TP``."""
    multiple = make_divisible_by * tensor_parallel_size
    return ((rows + multiple - 1) // multiple) * multiple


@dataclass(frozen=True)
class LiquidVocab:
    base_vocab_size: int
    """Rows of the base model's embedding (its HF ``config.vocab_size``)."""
    image_token_offset: int
    """Token id of image code 0."""
    num_image_tokens: int
    """Codebook size K of the VQ tokenizer (8192 for Chameleon's VQGAN)."""
    vocab_size: int
    """Real (unpadded) rows after extension: everything a sampler may ever emit lies below this."""
    boi_id: int
    eoi_id: int
    uncond_id: int
    bos_id: int
    eos_id: int
    pad_id: int
    boi_token: str = "<boi>"
    eoi_token: str = "<eoi>"
    uncond_token: str = "<unconditional>"
    vq_tokenizer: str = "chameleon-vqgan"
    """Name of the VQ tokenizer (data_pipeline registry key) whose codes these ids hold."""

    def __post_init__(self) -> None:
        end = self.image_token_offset + self.num_image_tokens
        if self.image_token_offset < 0 or end > self.vocab_size:
            raise ValueError(
                f"image ids [{self.image_token_offset}, {end}) do not fit in vocab_size {self.vocab_size}"
            )
        for name in ("boi_id", "eoi_id", "uncond_id", "bos_id", "eos_id", "pad_id"):
            value = getattr(self, name)
            if not 0 <= value < self.vocab_size:
                raise ValueError(f"{name}={value} is outside the vocabulary [0, {self.vocab_size})")
            if self.image_token_offset <= value < end:
                raise ValueError(f"{name}={value} collides with the image-code range [{self.image_token_offset}, {end})")
        if len({self.boi_id, self.eoi_id, self.uncond_id}) != 3:
            raise ValueError("<boi>, <eoi> and <unconditional> must be three distinct ids")

    # --- ids <-> codes ---------------------------------------------------------------------------------------
    @property
    def image_token_end(self) -> int:
        return self.image_token_offset + self.num_image_tokens

    def codes_to_ids(self, codes: np.ndarray) -> np.ndarray:
        codes = np.asarray(codes)
        if codes.size and (codes.min() < 0 or codes.max() >= self.num_image_tokens):
            raise ValueError(f"image codes must lie in [0, {self.num_image_tokens}); got [{codes.min()}, {codes.max()}]")
        return codes.astype(np.int64) + self.image_token_offset

    def ids_to_codes(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size and (ids.min() < self.image_token_offset or ids.max() >= self.image_token_end):
            raise ValueError("ids_to_codes got ids outside the image-code range")
        return ids - self.image_token_offset

    def is_image_id(self, ids):
        return (ids >= self.image_token_offset) & (ids < self.image_token_end)

    def padded_vocab_size(self, tensor_parallel_size: int = 1, make_divisible_by: int = 128) -> int:
        """Rows of the embedding/output layer: ``vocab_size`` rounded up so every TP rank holds an equal slice."""
        return padded_rows(self.vocab_size, tensor_parallel_size, make_divisible_by)

    # --- persistence -------------------------------------------------------------------------------------------
    FILENAME = "liquid_vocab.json"

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, directory: str) -> str:
        """Write ``liquid_vocab.json`` atomically into ``directory``; returns the path."""
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, self.FILENAME)
        return atomic_write_json(path, self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def load(cls, path_or_dir: str) -> "LiquidVocab":
        path = path_or_dir
        if os.path.isdir(path):
            path = os.path.join(path, cls.FILENAME)
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path}: no {cls.FILENAME}; create it with the model's vocabulary extension step")
        with open(path) as f:
            data = json.load(f)
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"{path}: unknown fields {sorted(unknown)}")
        return cls(**data)


SPECIAL_KINDS = ("bos", "eos", "pad")


def resolve_special_ids(config_ids: Dict[str, Union[int, List[int], None]],
                        tokenizer_ids: Optional[Dict[str, Optional[Tuple[str, int]]]],
                        config_name: str = "config.json", tokenizer_name: str = "the tokenizer"
                        ) -> Tuple[Dict[str, int], List[str]]:
    """bos/eos/pad ids from a model config and its tokenizer, checked against each other.

    ``config_ids`` maps each kind to the config's ``<kind>_token_id`` (eos may be a list: generation stops at any of
    them); ``tokenizer_ids`` maps each kind to the tokenizer's ``(token, id)`` or None, and is None without a
    tokenizer. Where both give an id they must agree (the tokenizer's eos must be one of the config's); a kind only
    one of them names takes that id. A missing bos or pad becomes eos, and each such choice is returned as a note
    for the person converting. Raises ValueError naming both sources when they disagree or no eos exists.
    """
    ids: Dict[str, int] = {}
    notes: List[str] = []
    for kind in SPECIAL_KINDS:
        from_cfg = config_ids.get(kind)
        cfg_list = from_cfg if isinstance(from_cfg, list) else ([] if from_cfg is None else [from_cfg])
        from_tok = (tokenizer_ids or {}).get(kind)
        if from_tok is not None and cfg_list:
            token, tid = from_tok
            if tid not in cfg_list:
                raise ValueError(f"{config_name} has {kind}_token_id={from_cfg} but {tokenizer_name} has "
                                 f"{kind}_token {token!r} at id {tid}; the tokenizer does not belong to this model, "
                                 f"or one of them needs fixing")
            ids[kind] = tid
        elif from_tok is not None:
            ids[kind] = from_tok[1]
        elif cfg_list:
            ids[kind] = cfg_list[0]
    if "eos" not in ids:
        raise ValueError(f"no eos token: {config_name} has no eos_token_id and {tokenizer_name} no eos_token; set "
                         "eos_token_id in the config")
    for kind in ("bos", "pad"):
        if kind not in ids:
            ids[kind] = ids["eos"]
            notes.append(f"no {kind} token in {config_name} or {tokenizer_name}: {kind} id = eos id {ids['eos']}")
    return ids, notes


def default_test_vocab(base_vocab_size: int = 256, num_image_tokens: int = 64, bos_id: int = 1, eos_id: int = 2,
                       pad_id: Optional[int] = 0) -> LiquidVocab:
    """A small layout for tests: image codes appended after the base vocabulary, then <boi>, <eoi>, <unconditional>."""
    offset = base_vocab_size
    boi = offset + num_image_tokens
    return LiquidVocab(
        base_vocab_size=base_vocab_size,
        image_token_offset=offset,
        num_image_tokens=num_image_tokens,
        vocab_size=boi + 3,
        boi_id=boi,
        eoi_id=boi + 1,
        uncond_id=boi + 2,
        bos_id=bos_id,
        eos_id=eos_id,
        pad_id=pad_id if pad_id is not None else eos_id,
    )
