"""The settings an encode output was made with, recorded in ``<out>/encode_settings.json`` and checked on every rerun.

Why: resumption skips every unit whose shard is finished. A rerun with other flags (another resolution, padding
instead of cropping, other VQ weights, other inputs) would otherwise skip the old shards, encode the rest with the
new flags, and leave a directory of mixed codes whose summary claims the new flags. So the first run records
everything that changes what a shard holds, and a rerun that differs stops with one line naming the setting and the
file, before anything is written. ``--force`` leaves that output alone and starts a new one next to it, named by
the hash of the new settings (``<out>-<hash8>``), so rerunning the same forced command resumes that new output.

Also here: :func:`check_output_dir`, whether an output directory can be used at all (checked before any work).

Not recorded, because they do not change any shard's bytes: batch size, workers, threads, rank / world size (units
are split by index), ``--max-units``, progress.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Dict, List, Optional, Tuple

from liquid_train.atomic import atomic_write_json
from .errors import DataError
from .preprocess import PreprocessConfig

SETTINGS_FILE = "encode_settings.json"
FORMAT = 1

FLAGS = {
    "vq_identity": "--vq (its weights)", "vq_tokenizer": "--vq", "resolution": "--resolution",
    "pad_to_square": "--pad-to-square", "pad_color": "pad colour", "max_aspect_ratio": "--max-aspect-ratio",
    "min_side": "--min-side", "jpeg_draft": "--jpeg-draft", "dtype": "--dtype/--device",
    "rows_per_shard": "--rows-per-shard", "image_root": "--image-root", "inputs": "the inputs",
    "units_total": "the inputs", "format": "the pipeline version",
}
"""Setting -> the flag a person changes it with (for the error message). Also the order of the checks."""


def settings_path(out_dir: str) -> str:
    return os.path.join(out_dir, SETTINGS_FILE)


def preprocess_settings(pre: PreprocessConfig) -> Dict:
    return {"resolution": pre.resolution, "pad_to_square": pre.pad_to_square, "pad_color": list(pre.pad_color),
            "max_aspect_ratio": pre.max_aspect_ratio, "min_side": pre.effective_min_side,
            "jpeg_draft": pre.jpeg_draft}


def encode_settings(pre: PreprocessConfig, files: List[str], units_total: int, rows_per_shard: int,
                    image_root: Optional[str], dtype: str, vq_tokenizer: Optional[str] = None,
                    vq_identity: Optional[str] = None) -> Dict:
    out = {"format": FORMAT, **preprocess_settings(pre), "dtype": dtype, "rows_per_shard": rows_per_shard,
           "image_root": os.path.abspath(image_root) if image_root else None, "inputs": list(files),
           "units_total": units_total}
    if vq_identity is not None:
        out.update(vq_tokenizer=vq_tokenizer, vq_identity=vq_identity)
    return out


def settings_hash(settings: Dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def read_settings(out_dir: str) -> Optional[Dict]:
    """The recorded settings, or None for a directory that holds no encode output yet."""
    path = settings_path(out_dir)
    if not os.path.exists(path):
        if os.path.isdir(out_dir) and any(n.startswith("shard-") for n in os.listdir(out_dir)):
            raise DataError(f"{out_dir}: holds shards but no {SETTINGS_FILE} (made by an older encode); encode into "
                            "a new directory, or add --force to start a new output next to it")
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: unreadable ({e}); restore it, or add --force to start a new output next to it") \
            from None


def _show(key: str, value) -> str:
    if key == "inputs":
        return f"{len(value)} files"
    return json.dumps(value)


def first_difference(recorded: Dict, wanted: Dict) -> Optional[Tuple[str, str]]:
    """(setting, description) of the first setting in ``wanted`` that the record holds differently."""
    for key in FLAGS:
        if key not in wanted:
            continue
        old, new = recorded.get(key), wanted[key]
        if old == new:
            continue
        what = f"{key} was {_show(key, old)} for this output, now {_show(key, new)} ({FLAGS[key]})"
        if key == "inputs":
            added, removed = sorted(set(new) - set(old or [])), sorted(set(old or []) - set(new))
            if added:
                what += f"; added {added[0]}" + (f" and {len(added) - 1} more" if len(added) > 1 else "")
            if removed:
                what += f"; missing {removed[0]}" + (f" and {len(removed) - 1} more" if len(removed) > 1 else "")
        return key, what
    return None


def mismatch_error(out_dir: str, what: str) -> DataError:
    return DataError(f"{settings_path(out_dir)}: {what}; rerun with the recorded settings, or add --force to start a "
                     "new output next to it")


def forced_output_dir(out_dir: str, settings: Dict) -> str:
    return f"{os.path.normpath(out_dir)}-{settings_hash(settings)[:8]}"


def record_settings(out_dir: str, settings: Dict) -> None:
    """Write the record if there is none (every rank may; they write the same bytes)."""
    if not os.path.exists(settings_path(out_dir)):
        atomic_write_json(settings_path(out_dir), settings, indent=1, sort_keys=True)


def check_output_dir(out_dir: str, flag: str = "-o") -> None:
    """The output directory can be used: a directory, or creatable, and writable. Creates nothing."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise DataError(f"{flag} {out_dir}: is a file; pass a directory")
    probe = os.path.abspath(out_dir)
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise DataError(f"{flag} {out_dir}: cannot create it, {probe} is a file")
    if not os.access(probe, os.W_OK | os.X_OK):
        what = "is not writable" if probe == os.path.abspath(out_dir) else f"cannot be created in {probe} (not writable)"
        raise DataError(f"{flag} {out_dir}: {what}; choose a writable directory")
