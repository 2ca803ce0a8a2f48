"""`DataConfig`: everything that determines the mixed-task token stream.

The global stream is a pure function of this config (plus the dataset files and the consumed-sample count), so the
config is also what the packing-index cache is keyed on. It loads from YAML with omegaconf (``configs/data/*.yaml``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from liquid_train.vocab import TASK_NAMES

# The ten T2I instruction suffixes of the public Liquid code (appended to the caption, leading space included).
T2I_INSTRUCTIONS: List[str] = [
    " Generate an image based on this description.",
    " Create an image that captures the provided description.",
    " Based on the previous text, produce a corresponding image.",
    " Please illustrate the above text with a picture.",
    " Translate the given description into a image.",
    " Construct a visual representation of the above description.",
    " Create a image that matches the text.",
    " Formulate a visual expression that reflects the narrative just provided.",
    " Give a visual depiction based on the above sentences.",
    " Create an image using the information mentioned above as guidance.",
]
I2T_PROMPT = "The caption of this image is:"

MIX_BY_CHOICES = ("samples", "tokens")
TEXT_SAMPLE_CHOICES = ("window", "document")


@dataclass
class DataConfig:
    pairs_path: Optional[str] = None
    """Prefix of the ``pairs`` indexed dataset (``<prefix>.bin/.idx``); needed when t2i or i2t has weight > 0."""
    text_path: Optional[str] = None
    """Prefix of the ``text`` indexed dataset; needed when text has weight > 0."""
    tokenizer: Optional[str] = None
    """HF tokenizer (dir or name) used to tokenize the constant template strings; the one that built the datasets."""
    vocab: Optional[str] = None
    """``liquid_vocab.json`` (or its directory) giving bos/eos/pad/<boi>/<eoi>/<unconditional> and the image offset."""
    mixture: Dict[str, float] = field(default_factory=lambda: {"text": 1.0, "t2i": 1.0, "i2t": 1.0})
    """Task weights; normalised. Zero (or missing) drops a task."""
    mix_by: str = "samples"
    """``samples``: exact sample counts on every prefix; ``tokens``: weights divided by each task's mean sample length
    (exact in samples of the converted ratio, hence tokens in expectation)."""
    blend_algorithm: str = "exact"
    """``exact``: every prefix within 1 - 1/(2k-2) samples of the target (Tijdeman); ``megatron``: the stock
    ``build_blending_indices`` (targets the previous prefix; can miss by slightly more than one sample)."""
    seq_length: int = 2048
    text_sample: str = "window"
    """What one text sample is. ``window`` (default): ``text_chunk_length`` consecutive positions of the shuffled
    document stream, as a megatron GPTDataset sample is (the paper's 30M text samples are ~60B tokens, ~2000 each);
    the packer cuts windows to fill the room next to image samples, which is what lets image mixes pack to ~100%.
    ``document``: one piece of one document (at most ``text_chunk_length`` positions), packed whole; the mixture then
    counts documents, and image sequences keep whatever gap the next document does not fill."""
    text_chunk_length: Optional[int] = None
    """Positions per text sample: exactly this many for ``window`` (the last window of a validation split may be
    shorter), at most this many for ``document``; None = seq_length."""
    seed: int = 1234
    cfg_drop_prob: float = 0.1
    """Probability that a T2I caption (+ instruction) is replaced by ``<unconditional>`` (classifier-free guidance)."""
    valid_fraction: float = 0.01
    """Fraction of documents (the last ones of each dataset) held out per task for validation."""
    pack_window: int = 8
    """Open sequences the packer keeps (best-fit among them); larger packs tighter but reorders samples more."""
    cache_dir: Optional[str] = None
    """Where packing indices are cached (keyed by a hash of everything above); None = ``<pairs/text dir>/cache``."""
    t2i_instructions: List[str] = field(default_factory=lambda: list(T2I_INSTRUCTIONS))
    i2t_prompt: str = I2T_PROMPT

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        unknown = set(self.mixture) - set(TASK_NAMES)
        if unknown:
            raise ValueError(f"DataConfig.mixture: unknown task(s) {sorted(unknown)}; known: {list(TASK_NAMES)}")
        weights = {k: float(v) for k, v in self.mixture.items()}
        if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
            raise ValueError(f"DataConfig.mixture: weights must be >= 0 with a positive sum; got {weights}")
        if self.mix_by not in MIX_BY_CHOICES:
            raise ValueError(f"DataConfig.mix_by={self.mix_by!r}; choose one of {MIX_BY_CHOICES}")
        if self.blend_algorithm not in ("exact", "megatron"):
            raise ValueError(f"DataConfig.blend_algorithm={self.blend_algorithm!r}; choose 'exact' or 'megatron'")
        if self.seq_length < 8:
            raise ValueError(f"DataConfig.seq_length={self.seq_length} is too small")
        if not 0.0 <= self.cfg_drop_prob <= 1.0:
            raise ValueError(f"DataConfig.cfg_drop_prob={self.cfg_drop_prob} must lie in [0, 1]")
        if not 0.0 <= self.valid_fraction < 1.0:
            raise ValueError(f"DataConfig.valid_fraction={self.valid_fraction} must lie in [0, 1)")
        if self.text_sample not in TEXT_SAMPLE_CHOICES:
            raise ValueError(f"DataConfig.text_sample={self.text_sample!r}; choose one of {TEXT_SAMPLE_CHOICES}")
        if self.text_chunk_length is not None and not 1 <= self.text_chunk_length:
            raise ValueError("DataConfig.text_chunk_length must be >= 1 (or null for seq_length)")
        if self.pack_window < 1:
            raise ValueError("DataConfig.pack_window must be >= 1")
        if len(self.t2i_instructions) < 1:
            raise ValueError("DataConfig.t2i_instructions must hold at least one instruction")

    @property
    def active_tasks(self) -> List[int]:
        """Task ids (TASK_*) with a positive weight, in TASK_NAMES order."""
        return [t for t, name in enumerate(TASK_NAMES) if float(self.mixture.get(name, 0.0)) > 0]


def load_data_config(path: str, overrides: Optional[List[str]] = None) -> DataConfig:
    """Load a ``configs/data/*.yaml`` file (optionally with ``key=value`` dotlist overrides) into a `DataConfig`.

    A YAML may nest the fields under a top-level ``data:`` key (so a full training config also loads)."""
    from omegaconf import OmegaConf

    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: data config not found (see configs/data/ for examples)")
    raw = OmegaConf.load(path)
    if "data" in raw and OmegaConf.is_dict(raw["data"]):
        raw = raw["data"]
    schema = OmegaConf.structured(DataConfig)
    try:
        merged = OmegaConf.merge(schema, raw)
        if "mixture" in raw:  # replace, not merge: a task left out of the file has weight 0, not the default 1
            OmegaConf.update(merged, "mixture", raw["mixture"], merge=False)
        merged = OmegaConf.merge(merged, OmegaConf.from_dotlist(list(overrides or [])))
        cfg = OmegaConf.to_object(merged)
    except Exception as exc:  # omegaconf's messages name the key; prefix the file
        raise ValueError(f"{path}: {exc}") from exc
    return cfg
