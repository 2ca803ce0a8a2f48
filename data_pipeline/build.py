"""``python -m data_pipeline build``: VQ shards and text corpora -> megatron-core indexed datasets.

``pairs``: one document per image-text pair made of two sequences (caption tokens, then raw image codes), so
text-to-image and image-to-text samples are two views of one copy of the data. ``text``: one sequence per document.
Both int32, no bos/eos (templates add them). Written under temporary names and renamed (``atomic.py``), meta last.
``pairs`` refuses an unfinished encode (fewer finished shards than ``encode_settings.json`` plans) unless told.
"""
from __future__ import annotations

import glob
import json
import os
from typing import Dict, List, Optional, Sequence

import numpy as np
from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder
from tqdm import tqdm
from transformers import AutoTokenizer

from liquid_train.atomic import AtomicFile, atomic_write_json

from .errors import DataError
from .settings import SETTINGS_FILE, settings_path
from .shards import finished_shards, iter_shard, read_sidecar
from .text_sources import TEXT_SUFFIXES, iter_text_documents
from .vq.checkpoint import read_yaml_config
from .vq.registry import REGISTRY, VQGANConfig


def load_hf_tokenizer(path: str):
    """A local Hugging Face tokenizer directory (no network: the base model's tokenizer files)."""
    if not os.path.isdir(path):
        raise DataError(f"-t {path}: tokenizer directory not found (pass the base model's local HF directory)")
    return AutoTokenizer.from_pretrained(path, local_files_only=True)


def _tokenize_batch(tokenizer, texts: List[str]) -> List[List[int]]:
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


class _AtomicIndexedWriter:
    """IndexedDatasetBuilder on temp files, renamed onto ``<prefix>.bin/.idx`` by :meth:`finalize`."""

    def __init__(self, prefix: str):
        self.bin, self.idx = AtomicFile(prefix + ".bin"), AtomicFile(prefix + ".idx")
        self.builder = IndexedDatasetBuilder(self.bin.tmp, dtype=np.int32)

    def add_document(self, seqs: Sequence[np.ndarray]) -> None:
        self.builder.add_document(np.concatenate(seqs).astype(np.int32), [len(s) for s in seqs])

    def finalize(self) -> None:
        self.builder.finalize(self.idx.tmp)
        self.bin.commit()
        self.idx.commit()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:  # failed build: leave nothing behind that looks like data
            self.builder.data_file.close()
            self.bin.abort()
            self.idx.abort()
        return False


def _length_stats(lengths: List[int]) -> Dict:
    if not lengths:
        return {"mean": 0, "min": 0, "max": 0, "p50": 0, "p95": 0}
    a = np.asarray(lengths)
    return {"mean": round(float(a.mean()), 2), "min": int(a.min()), "max": int(a.max()),
            "p50": float(np.percentile(a, 50)), "p95": float(np.percentile(a, 95))}


def _check_complete(shards_dir: str, done: int) -> None:
    if not os.path.exists(settings_path(shards_dir)):
        return  # an output from before settings were recorded: nothing says how many units it plans
    with open(settings_path(shards_dir)) as f:
        total = json.load(f)["units_total"]
    if done < total:
        raise DataError(f"{shards_dir}: encode is unfinished ({done} of {total} units have shards, see "
                        f"{SETTINGS_FILE}); rerun the encode to finish it, or pass --allow-incomplete")


def build_pairs(shards_dir: str, tokenizer_path: str, output_prefix: str, batch_size: int = 512,
                progress: bool = True, allow_incomplete: bool = False) -> Dict:
    if not os.path.isdir(shards_dir):
        raise DataError(f"{shards_dir}: no such directory (pass the output directory of encode)")
    shards = finished_shards(shards_dir)
    if not shards:
        raise DataError(f"{shards_dir}: no finished VQ shards (shard-*.tar with .json sidecar); run encode first")
    if not allow_incomplete:
        _check_complete(shards_dir, len(shards))
    tok = load_hf_tokenizer(tokenizer_path)
    sides = [read_sidecar(s) for s in shards]
    vq_names = sorted({s["vq_tokenizer"] for s in sides})
    if len(vq_names) != 1:
        raise DataError(f"{shards_dir}: shards come from different VQ tokenizers {vq_names}; build them separately")
    writer = _AtomicIndexedWriter(output_prefix)
    caption_lengths, image_lengths, skipped = [], [], {"empty_caption_tokens": 0}
    grid, max_code = None, -1
    codebook_size = _codebook_size(vq_names[0])

    def flush(pending):
        ids = _tokenize_batch(tok, [p["caption"] for p in pending])
        for p, cap in zip(pending, ids):
            if not cap:
                skipped["empty_caption_tokens"] += 1
                continue
            codes = p["codes"].reshape(-1).astype(np.int32)
            writer.add_document([np.asarray(cap, dtype=np.int32), codes])
            caption_lengths.append(len(cap))
            image_lengths.append(codes.size)

    total = sum(s["written"] for s in sides)
    with writer, tqdm(total=total, unit="pair", desc="build pairs", disable=not progress) as bar:
        pending = []
        for shard in shards:
            for sample in iter_shard(shard):
                codes = sample["codes"]
                if grid is None:
                    grid = list(codes.shape)
                elif list(codes.shape) != grid:
                    raise DataError(f"{shard}: sample {sample['key']} has code grid {list(codes.shape)}, expected {grid}")
                max_code = max(max_code, int(codes.max()))
                if codes.min() < 0:
                    raise DataError(f"{shard}: sample {sample['key']} has negative codes")
                pending.append(sample)
                if len(pending) >= batch_size:
                    flush(pending)
                    bar.update(len(pending))
                    pending = []
        flush(pending)
        bar.update(len(pending))
        if codebook_size is not None and max_code >= codebook_size:
            raise DataError(f"{shards_dir}: codes reach {max_code} but {vq_names[0]} has {codebook_size} codes")
        writer.finalize()
    meta = {"kind": "pairs", "tokenizer": os.path.abspath(tokenizer_path), "num_documents": len(caption_lengths),
            "num_sequences": 2 * len(caption_lengths),
            "num_tokens": int(sum(caption_lengths) + sum(image_lengths)),
            "num_caption_tokens": int(sum(caption_lengths)), "num_image_tokens": int(sum(image_lengths)),
            "caption_tokens": _length_stats(caption_lengths), "vq_tokenizer": vq_names[0],
            "codebook_size": codebook_size, "image_grid": grid, "dtype": "int32", "skipped": skipped,
            "source": os.path.abspath(shards_dir), "num_shards": len(shards), **_encode_record(shards_dir)}
    atomic_write_json(output_prefix + ".meta.json", meta, indent=1, sort_keys=True)
    return meta


def _encode_record(shards_dir: str) -> Dict:
    """What the trainer and the export need from the encode: the VQ weights' identity and the image resolution
    (``encode_settings.json``; absent for outputs made before settings were recorded)."""
    if not os.path.exists(settings_path(shards_dir)):
        return {}
    with open(settings_path(shards_dir)) as f:
        settings = json.load(f)
    return {k: settings[k] for k in ("vq_identity", "resolution", "pad_to_square") if k in settings}


def _codebook_size(vq_name: str) -> Optional[int]:
    if vq_name in REGISTRY and REGISTRY[vq_name].arch == "taming-vqgan":
        return VQGANConfig(**REGISTRY[vq_name].params).n_embed
    yaml = os.path.join(vq_name, "vqgan.yaml")
    if os.path.isfile(yaml):
        return read_yaml_config(yaml)[0].n_embed
    return None


def build_text(inputs: Sequence[str], tokenizer_path: str, output_prefix: str, text_key: str = "text",
               txt_mode: str = "line", batch_size: int = 256, progress: bool = True) -> Dict:
    files = sorted(_expand(inputs))
    tok = load_hf_tokenizer(tokenizer_path)
    writer = _AtomicIndexedWriter(output_prefix)
    lengths, skipped = [], {"empty_documents": 0, "non_string": 0}

    def flush(pending):
        for ids in _tokenize_batch(tok, pending):
            if not ids:
                skipped["empty_documents"] += 1
                continue
            writer.add_document([np.asarray(ids, dtype=np.int32)])
            lengths.append(len(ids))

    with writer, tqdm(unit="doc", desc="build text", disable=not progress) as bar:
        for path in files:
            pending = []
            for doc in iter_text_documents(path, text_key, txt_mode):
                if not isinstance(doc, str):
                    skipped["non_string"] += 1
                    continue
                if not doc.strip():
                    skipped["empty_documents"] += 1
                    continue
                pending.append(doc)
                if len(pending) >= batch_size:
                    flush(pending)
                    bar.update(len(pending))
                    pending = []
            flush(pending)
            bar.update(len(pending))
        writer.finalize()
    meta = {"kind": "text", "tokenizer": os.path.abspath(tokenizer_path), "num_documents": len(lengths),
            "num_sequences": len(lengths), "num_tokens": int(sum(lengths)), "document_tokens": _length_stats(lengths),
            "dtype": "int32", "skipped": skipped, "sources": files}
    atomic_write_json(output_prefix + ".meta.json", meta, indent=1, sort_keys=True)
    return meta


def _expand(inputs: Sequence[str]) -> List[str]:
    files = []
    for spec in inputs:
        if os.path.isdir(spec):  # (never our own <prefix>.meta.json files)
            for suffix in TEXT_SUFFIXES:
                for z in ("", ".zst"):
                    files += [f for f in glob.glob(os.path.join(spec, "**", f"*{suffix}{z}"), recursive=True)
                              if not f.endswith(".meta.json")]
        elif any(c in spec for c in "*?["):
            files += glob.glob(spec, recursive=True)
        elif os.path.isfile(spec):
            files.append(spec)
        else:
            raise DataError(f"text input {spec}: no such file or directory")
    if not files:
        raise DataError(f"text inputs {' '.join(inputs)}: no .jsonl/.json/.parquet/.txt files (optionally .zst) found")
    return sorted(set(os.path.abspath(f) for f in files))
