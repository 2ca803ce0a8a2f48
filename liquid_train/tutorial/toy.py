"""The inputs a person brings, in miniature and in their real on-disk formats: a Hugging Face base model (a Qwen2
of a shape no registry has, random weights, ``save_pretrained`` safetensors + ``config.json``) with its own
byte-level BPE tokenizer, image-text pairs as img2dataset tars of photos of mixed sizes, a text corpus as jsonl,
and one photo to caption.

Why real formats: the tutorial's commands are the ones a person runs on their own checkpoint and data, so the toy
inputs must go through exactly the same readers (``hf-to-megatron`` on ``config.json`` + safetensors, ``encode`` on
webdataset tars, ``build text`` on jsonl). The pictures are the quickstart's coloured-shape scenes, rendered at
several sizes and aspect ratios so the pipeline's resize and crop are exercised.
"""
from __future__ import annotations

import io
import json
import os
import random
import tarfile
from dataclasses import dataclass
from typing import Dict, List

import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

from liquid_train.atomic import atomic_path, atomic_write_text
from liquid_train.quickstart.scene import Scene, all_scenes, caption
from liquid_train.quickstart.synthetic import render, sample_scenes, text_documents

SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
"""Qwen2's first specials, after the BPE pieces as in the real tokenizer (bos = eos = pad = <|endoftext|>)."""
SIZES = ((64, 64), (96, 72), (72, 96), (128, 96), (80, 80))
"""(width, height) of the toy photos: square, landscape, portrait, larger than the VQ resolution."""


@dataclass
class ToyConfig:
    num_pairs: int = 240
    num_text_docs: int = 300
    bpe_pieces: int = 384
    spare_rows: int = 61
    """Embedding rows past the tokenizer (Qwen2 configs have them too; the image specials go there)."""
    hidden_size: int = 96
    num_layers: int = 3
    num_heads: int = 6
    num_kv_heads: int = 2
    intermediate_size: int = 192
    max_position_embeddings: int = 512
    seed: int = 0


def _jpeg(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=92)
    return buf.getvalue()


def write_photos(cfg: ToyConfig, out_dir: str) -> List[str]:
    """img2dataset-style shards (``{key}.jpg``, ``{key}.txt``, ``{key}.json``) of scenes at mixed sizes."""
    os.makedirs(out_dir, exist_ok=True)
    rng = random.Random(cfg.seed)
    path = os.path.join(out_dir, "00000.tar")
    with atomic_path(path) as tmp, tarfile.open(tmp, "w") as tar:
        for i, scene in enumerate(sample_scenes(cfg.num_pairs, cfg.seed)):
            img = render(scene, 16, rng).resize(SIZES[i % len(SIZES)])
            text = caption(scene)
            meta = {"caption": text, "width": img.width, "height": img.height}
            for ext, payload in (("jpg", _jpeg(img)), ("txt", text.encode()), ("json", json.dumps(meta).encode())):
                info = tarfile.TarInfo(f"{i:09d}.{ext}")
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    return [path]


def write_text(cfg: ToyConfig, path: str) -> str:
    lines = [json.dumps({"text": doc}) for doc in text_documents(cfg.num_text_docs, cfg.seed + 2)]
    return atomic_write_text(path, "\n".join(lines) + "\n")


def write_example_photo(cfg: ToyConfig, path: str) -> str:
    img = render(Scene("circle", "red", "center", 1, "white"), 16, random.Random(cfg.seed)).resize((96, 72))
    with atomic_path(path) as tmp:
        img.save(tmp, format="JPEG", quality=92)
    return path


def train_tokenizer(cfg: ToyConfig, corpus: List[str]):
    """A byte-level BPE with Qwen2's layout: pieces, then <|endoftext|>, <|im_start|>, <|im_end|>."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=cfg.bpe_pieces, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    bpe.train_from_iterator(corpus, trainer)
    bpe.add_special_tokens([AddedToken(t, special=True) for t in SPECIALS])
    return PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=SPECIALS[0], pad_token=SPECIALS[0])


def hf_config(cfg: ToyConfig, tokenizer) -> Dict:
    eos = tokenizer.convert_tokens_to_ids(SPECIALS[0])
    return {
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "vocab_size": len(tokenizer) + cfg.spare_rows,
        "hidden_size": cfg.hidden_size, "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_layers, "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads, "max_position_embeddings": cfg.max_position_embeddings,
        "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "tie_word_embeddings": True, "hidden_act": "silu",
        "bos_token_id": eos, "eos_token_id": eos, "use_sliding_window": False, "attention_dropout": 0.0,
        "torch_dtype": "float32",
    }


def write_base_model(cfg: ToyConfig, out_dir: str, corpus: List[str]) -> str:
    """A random-weight Qwen2 of ``cfg``'s shape + its tokenizer, as ``save_pretrained`` writes them."""
    tokenizer = train_tokenizer(cfg, corpus)
    os.makedirs(out_dir, exist_ok=True)
    config = AutoConfig.for_model(**hf_config(cfg, tokenizer))
    torch.manual_seed(cfg.seed)
    model = AutoModelForCausalLM.from_config(config).float()
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def write_toy_inputs(out: str, cfg: ToyConfig = ToyConfig()) -> Dict[str, str]:
    """``out/base`` (HF model + tokenizer), ``out/photos/*.tar``, ``out/text.jsonl``, ``out/example.jpg``."""
    paths = {"base": os.path.join(out, "base"), "photos": os.path.join(out, "photos"),
             "text": os.path.join(out, "text.jsonl"), "example": os.path.join(out, "example.jpg")}
    write_photos(cfg, paths["photos"])
    write_text(cfg, paths["text"])
    write_example_photo(cfg, paths["example"])
    corpus = text_documents(cfg.num_text_docs, cfg.seed + 2) + [caption(s) for s in all_scenes()]
    write_base_model(cfg, paths["base"], corpus)
    return paths
