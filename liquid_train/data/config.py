"""`DataConfig`: everything that determines the mixed-task token stream.

The global stream is a pure function of this config (plus the dataset files and the consumed-sample count), so the
config is also what the mixed-task index is keyed on (`liquid_train.data.index`). It loads from YAML with omegaconf
(``configs/data/*.yaml``).

Data of a task comes either from one indexed dataset (``pairs_path`` for T2I and I2T, ``text_path`` for text) or from
several weighted ones (``sources``)::

    sources:
      text: [{path: /data/dclm, weight: 15}, {path: /data/slimpajama, weight: 12}, {path: /data/starcoder, weight: 3}]
      t2i:  [{path: /data/pairs_a, weight: 2}, {path: /data/pairs_b, weight: 1}]
      i2t:  [{path: /data/pairs_a, weight: 1}]     # T2I and I2T may share pair datasets

``mixture`` weighs the tasks; a source's ``weight`` weighs it within its task.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from omegaconf import MISSING, OmegaConf

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
SOURCE_KINDS = {"text": "text", "t2i": "pairs", "i2t": "pairs"}  # task -> kind of indexed dataset it reads


@dataclass
class DataSource:
    """One indexed dataset of a task: ``path`` is the ``<prefix>`` of ``<prefix>.bin/.idx``."""
    path: str = MISSING
    weight: float = 1.0
    """Relative to the other sources of the same task (normalised within the task)."""
    name: Optional[str] = None
    """Label in the data report (``samples/<task>/<name>``); default: the prefix's file name."""

    @property
    def label(self) -> str:
        return self.name or os.path.basename(os.path.normpath(self.path))
TEXT_SAMPLE_CHOICES = ("window", "document")


@dataclass
class DataConfig:
    pairs_path: Optional[str] = None
    """Prefix of the ``pairs`` indexed dataset (``<prefix>.bin/.idx``); needed when t2i or i2t has weight > 0."""
    text_path: Optional[str] = None
    """Prefix of the ``text`` indexed dataset; needed when text has weight > 0 (unless ``sources.text`` is set)."""
    sources: Dict[str, List[DataSource]] = field(default_factory=dict)
    """Several weighted indexed datasets per task: ``{text|t2i|i2t: [{path, weight, name}, ...]}`` (module
    docstring). A task listed here must not also get its data from ``pairs_path``/``text_path``."""
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
    """Where the mixed-task index is stored (keyed by a hash of everything that determines it); None =
    ``<directory of the first source>/cache``. Must be on a filesystem every rank of a job sees."""
    t2i_instructions: List[str] = field(default_factory=lambda: list(T2I_INSTRUCTIONS))
    i2t_prompt: str = I2T_PROMPT

    def __post_init__(self) -> None:
        self.sources = {task: [s if isinstance(s, DataSource) else DataSource(**dict(s)) for s in entries]
                        for task, entries in dict(self.sources or {}).items()}
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
        for task, entries in self.sources.items():
            if task not in SOURCE_KINDS:
                raise ValueError(f"DataConfig.sources: unknown task {task!r}; known: {list(SOURCE_KINDS)}")
            single = f"{SOURCE_KINDS[task]}_path"
            if entries and getattr(self, single):
                raise ValueError(f"DataConfig.sources.{task} and DataConfig.{single} both give {task} data; "
                                 f"keep one (list the {single} dataset in sources.{task})")
            labels = [s.label for s in entries]
            for s in entries:
                if not float(s.weight) > 0:
                    raise ValueError(f"DataConfig.sources.{task}: source {s.label!r} has weight {s.weight}; "
                                     f"weights must be > 0 (drop the source instead)")
            if len(set(labels)) < len(labels):
                dup = next(x for x in labels if labels.count(x) > 1)
                raise ValueError(f"DataConfig.sources.{task}: two sources are named {dup!r}; give each a `name`")

    @property
    def active_tasks(self) -> List[int]:
        """Task ids (TASK_*) with a positive weight, in TASK_NAMES order."""
        return [t for t, name in enumerate(TASK_NAMES) if float(self.mixture.get(name, 0.0)) > 0]

    def task_sources(self, task: int) -> List[DataSource]:
        """The sources of task ``task`` (TASK_*): ``sources.<task>``, else the single-path key as one source."""
        name = TASK_NAMES[task]
        if self.sources.get(name):
            return list(self.sources[name])
        single = f"{SOURCE_KINDS[name]}_path"
        if getattr(self, single) is None:
            raise ValueError(f"DataConfig.mixture gives {name} a weight but DataConfig.{single} is unset "
                             f"(and DataConfig.sources.{name} is empty)")
        return [DataSource(path=getattr(self, single))]


def load_data_config(path: str, overrides: Optional[List[str]] = None) -> DataConfig:
    """Load a ``configs/data/*.yaml`` file (optionally with ``key=value`` dotlist overrides) into a `DataConfig`.

    A YAML may nest the fields under a top-level ``data:`` key (so a full training config also loads)."""
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
