"""Run configuration: omegaconf structured dataclasses, YAML + dotlist overrides, validated before anything starts.

Why structured configs: an unknown key or a wrong type in a YAML file is caught at load time with the key's full
name, instead of surfacing as an AttributeError an hour into a multi-node job. :func:`validate` checks the values
among themselves; what needs the model, the files or the machine is checked by
:mod:`liquid_train.training.preflight`, also before any process group or model exists.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import yaml
from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from liquid_train.atomic import atomic_write_text
from liquid_train.engines import ENGINES
from liquid_train.engines.deepspeed_config import OFFLOAD_DEVICES, ZERO_STAGES
from liquid_train.models.options import PRECISIONS, FP8Config, RecomputeConfig

from liquid_train.data.config import DataConfig
from liquid_train.inference.sampling import SamplingConfig


class ConfigError(ValueError):
    """A run configuration problem; the message names the offending key and what to do.

    ``key`` is the dotted key (None when the problem is not one key's, e.g. a file that does not parse);
    :meth:`located` adds where the key's value came from (:func:`config_sources`)."""

    def __init__(self, message: str, key: Optional[str] = None):
        self.key = key
        self.detail = message
        super().__init__(f"config key '{key}': {message}" if key else message)

    def located(self, sources: Optional[Dict[str, str]]) -> str:
        if not self.key or not sources:
            return str(self)
        key, where = self.key, None
        while key and where is None:  # the key itself, else the closest parent that was set
            where = sources.get(key)
            key = key.rpartition(".")[0]
        if where is None:  # else a key set below it (model.arch.hidden_size for model.arch)
            where = next((v for k, v in sources.items() if k.startswith(self.key + ".")), None)
        return f"config key '{self.key}' ({where or 'default'}): {self.detail}"


@dataclass
class ModelConfig:
    family: str = "qwen2.5"
    """Model family key of ``liquid_train.models.families`` (qwen2.5, llama3.2, gemma2, gemma)."""
    size: Optional[str] = "tiny"
    """Registry size of the family (``tiny``, ``0.5b``, ``7b``, ...): the architecture, or the base that ``arch``
    overrides. ``null``: the architecture recorded in ``init_from`` (any imported HF shape)."""
    arch: Optional[Dict[str, Any]] = None
    """Inline architecture: ``ModelArch`` fields (hidden_size, num_layers, ...) that override the registry entry
    ``family``/``size``; ``arch.size`` names the result (default ``custom``)."""
    init_from: Optional[str] = None
    """A converted model checkpoint (``tools/convert_checkpoint.py hf-to-megatron`` output) to start from;
    None trains from scratch. Ignored when the run resumes from its own checkpoint."""
    vocab: Optional[str] = None
    """``liquid_vocab.json`` (or its directory). Defaults to ``data.vocab``, then the one next to ``init_from``."""
    precision: str = "auto"
    """auto (bf16 on GPU, fp32 on CPU) | fp32 | bf16 | fp16 | fp8 (Transformer Engine, GPU only; see ``fp8``)."""
    fp8: FP8Config = field(default_factory=FP8Config)
    attention_backend: str = "auto"
    """auto | te | local | flex (see ``liquid_train.models.builder.resolve_attention_backend``)."""
    fusions: str = "auto"
    """auto (kernel fusions where the kernels exist, none on CPU) | all (every one that applies, or an error) |
    none."""
    recompute: RecomputeConfig = field(default_factory=RecomputeConfig)


@dataclass
class ParallelConfig:
    tensor_parallel: int = 1
    pipeline_parallel: int = 1
    virtual_pipeline_parallel: Optional[int] = None
    """Model chunks per pipeline rank (interleaved 1F1B); None = plain 1F1B."""
    sequence_parallel: bool = False
    use_distributed_optimizer: Optional[bool] = None
    """None = auto: True on GPU; False on CPU, where the distributed optimizer's checkpoint does not round-trip."""
    overlap_grad_reduce: bool = True
    overlap_param_gather: bool = False
    seed: int = 1234


@dataclass
class OptimizerConfig:
    name: str = "adam"
    lr: float = 2.0e-5
    min_lr: float = 0.0
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1.0e-8
    clip_grad: float = 1.0
    """Max global grad norm (the paper uses 0.5 for >= 7B); 0 disables clipping."""
    z_loss_weight: float = 0.0
    """Weight of the z-loss ``mean(logsumexp(logits)^2)`` (the paper uses it for >= 7B); 0 disables."""


@dataclass
class ScheduleConfig:
    style: str = "constant"
    """constant | cosine | wsd | linear."""
    warmup_steps: Optional[int] = None
    warmup_fraction: float = 0.0
    """Used when warmup_steps is None (the paper: 3% for cosine runs)."""
    decay_steps: Optional[int] = None
    """Steps over which the LR decays to min_lr; None = train.iters."""
    wsd_decay_fraction: float = 0.1
    """WSD: fraction of decay_steps spent in the final anneal."""
    wsd_decay_style: str = "linear"


@dataclass
class TrainConfig:
    iters: int = 100
    global_batch_size: int = 8
    micro_batch_size: int = 2
    max_consecutive_nan: int = 5
    """Abort after this many non-finite losses in a row (each one is skipped and counted)."""
    eval_interval: int = 0
    """Validate every N steps (and at the end); 0 disables."""
    eval_iters: int = 2
    """Micro-batch groups (global batches) per task per validation."""
    exit_after_iters: Optional[int] = None
    """Stop (with a checkpoint) after this many steps of this launch; None = run to iters."""


@dataclass
class CheckpointConfig:
    save_interval: int = 1000
    """Save every N steps (0: steps do not trigger saves); also at the end and on SIGTERM/SIGUSR1."""
    save_interval_minutes: float = 60.0
    """Also save when this many minutes have passed since the last save (or the start), so a long run never loses
    more than about this much work; 0 disables. The ranks agree on it (one tiny all-reduce per step)."""
    keep_last: int = 2
    async_save: bool = False
    resume: bool = True
    """Auto-resume from ``<run_dir>/checkpoints/latest`` when it exists."""
    verify: bool = True
    """Check a checkpoint against its manifest (sizes, checksums) before resuming from it; false skips the check."""
    save_at_end: bool = True
    dir: Optional[str] = None
    """Defaults to ``<run_dir>/checkpoints``."""


def _greedy_cfg3() -> SamplingConfig:
    return SamplingConfig(cfg_scale=3.0, temperature=0.0, top_k=0, top_p=1.0)


@dataclass
class T2ISamplesConfig:
    interval: int = 0
    """Every N steps, draw T2I samples for the prompts below and write a PNG grid; 0 disables."""
    prompts: List[str] = field(default_factory=lambda: ["a red circle on a blue background"])
    vq_tokenizer: Optional[str] = None
    """Name or path for ``data_pipeline.vq.load_vq_tokenizer``; default: the VQ the pairs were encoded with
    (``<pairs>.meta.json``), else the vocabulary's ``vq_tokenizer``. Checked before step 1: it must load, and its
    codebook and weights must be the data's."""
    image_tokens: Optional[int] = None
    """Codes per image (h*w); default: from the data config's image grid, else a square of num_image_tokens."""
    sampler: SamplingConfig = field(default_factory=_greedy_cfg3)
    """The one sampling config of ``liquid_train.inference`` (temperature 0 = greedy); default CFG 3, greedy."""


@dataclass
class LoggingConfig:
    tensorboard: bool = True
    wandb_mode: str = "offline"
    """offline (default; no network) | online | disabled."""
    wandb_project: str = "liquid-train"
    wandb_name: Optional[str] = None
    peak_tflops: Optional[float] = None
    """Peak dense TFLOP/s per device used for MFU; None = looked up for known GPUs (bf16/fp8), unknown on CPU."""
    progress: bool = True


@dataclass
class DeepSpeedConfig:
    """The ``deepspeed`` engine's own settings (``liquid_train/engines/deepspeed_config.py`` maps them)."""
    zero_stage: int = 3
    """ZeRO stage 1 (optimizer state sharded), 2 (+ gradients) or 3 (+ parameters)."""
    offload_optimizer: str = "none"
    """none | cpu: ZeRO-Offload of the optimizer state and step (stage 1/2/3)."""
    offload_param: str = "none"
    """none | cpu: parameters offloaded to host memory (stage 3 only)."""
    gradient_checkpointing: bool = False
    """Recompute each decoder layer in backward (the HF model's ``gradient_checkpointing_enable``)."""


@dataclass
class RunConfig:
    run_dir: str = MISSING
    engine: str = "megatron"
    """megatron (the project's megatron-core model: TP/PP, FP8) | deepspeed (the HF model under DeepSpeed ZeRO;
    ``deepspeed`` block). Same data, loss, schedule, metrics and checkpoint conventions (docs/training.md "Engines")."""
    model: ModelConfig = field(default_factory=ModelConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    """The mixed-task data config, embedded as it is so one YAML file describes the whole run; or
    ``{include: configs/data/<name>.yaml, <field>: <value>, ...}``: a shared data config (found next to the run
    config, else under the repository) with the listed fields overriding it (:func:`load_config`)."""
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)
    sampling: T2ISamplesConfig = field(default_factory=T2ISamplesConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)


def _key_of(err: OmegaConfBaseException) -> str:
    key = getattr(err, "full_key", None) or getattr(err, "key", None)
    return str(key) if key else "?"


def _load_yaml(path: str):
    if not os.path.exists(path):
        raise ConfigError(f"{path}: config file not found")
    try:
        return OmegaConf.load(path)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else path
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{where}: not valid YAML ({problem}); fix the file") from None


# --- data.include: a run config names a shared data config (configs/data/*.yaml) and overrides some of its fields ---
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA_INCLUDE = "include"


def resolve_include(name: str, including: str) -> str:
    """``data.include`` -> a file: absolute as given; else next to the including file; else under the repository."""
    candidates = [name] if os.path.isabs(name) else [os.path.join(os.path.dirname(os.path.abspath(including)), name),
                                                     os.path.join(REPO_ROOT, name)]
    for path in candidates:
        if os.path.isfile(path):
            return path
    raise ConfigError(f"{name} not found (looked for {' and '.join(candidates)}); give the path of a data config "
                      f"such as configs/data/paper_mix.yaml", key=f"data.{DATA_INCLUDE}")


def _included_data(path: str, name: str):
    """The data block of an included file (its fields at the top level, or under ``data:``)."""
    inc = _load_yaml(resolve_include(name, path))
    if "data" in inc and OmegaConf.is_dict(inc["data"]):
        inc = inc["data"]
    if DATA_INCLUDE in inc:
        raise ConfigError(f"{name} includes another file; includes do not nest (copy its fields instead)",
                          key=f"data.{DATA_INCLUDE}")
    return inc


def _keep_missing(merged, src) -> None:
    """A ``???`` (required) in ``src`` stays required in ``merged``: omegaconf's merge keeps the value it merges a
    ``???`` onto (a default, or the included data config's), which would quietly fill a required field."""
    for key in OmegaConf.missing_keys(src):
        OmegaConf.update(merged, key, MISSING, merge=False)


def _expand_data_include(raw, path: str):
    """``data: {include: F, ...fields}`` -> F's fields with the listed ones overriding them. A ``mixture`` given
    replaces the included one whole (a task it leaves out has weight 0, as in a data config of its own)."""
    data = raw.get("data") if OmegaConf.is_dict(raw) else None
    if data is None or not OmegaConf.is_dict(data) or DATA_INCLUDE not in data:
        return raw
    if not isinstance(data[DATA_INCLUDE], str):
        raise ConfigError("must be the path of a data config (a string)", key=f"data.{DATA_INCLUDE}")
    rest = OmegaConf.masked_copy(data, [k for k in data if k != DATA_INCLUDE])
    try:
        merged = OmegaConf.merge(_included_data(path, data[DATA_INCLUDE]), rest)
        if "mixture" in rest:
            OmegaConf.update(merged, "mixture", rest["mixture"], merge=False)
        _keep_missing(merged, rest)
    except OmegaConfBaseException as err:
        raise ConfigError(f"{str(err).splitlines()[0]} in {path}", key=f"data.{_key_of(err)}") from None
    raw["data"] = merged
    return raw


def _leaf_keys(node, prefix: str = "") -> List[str]:
    if isinstance(node, dict):
        out: List[str] = []
        for k, v in node.items():
            out += _leaf_keys(v, f"{prefix}{k}.") if isinstance(v, dict) and v else [f"{prefix}{k}"]
        return out
    return [prefix.rstrip(".")]


def config_sources(path: Optional[str] = None, overrides: Optional[List[str]] = None) -> Dict[str, str]:
    """Where each key set by the user came from: ``set in <file>`` or ``set on the command line``."""
    sources: Dict[str, str] = {}
    if path is not None and os.path.exists(path):
        try:
            raw = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        except (yaml.YAMLError, OmegaConfBaseException):
            raw = {}
        include = ((raw or {}).get("data") or {}).get(DATA_INCLUDE) if isinstance((raw or {}).get("data"), dict) \
            else None
        if isinstance(include, str):
            try:
                inc_path = resolve_include(include, path)
                inc = OmegaConf.to_container(_included_data(path, include), resolve=False)
                for key in _leaf_keys(inc or {}):
                    sources[f"data.{key}"] = f"set in {inc_path}, included by {path}"
            except ConfigError:
                pass  # load_config reports it
        for key in _leaf_keys(raw or {}):
            sources[key] = f"set in {path}"
    for item in overrides or []:
        if "=" in item:
            sources[item.split("=", 1)[0].lstrip("+~")] = "set on the command line"
    return sources


def load_config(path: Optional[str] = None, overrides: Optional[List[str]] = None, base: Any = None):
    """YAML file (optional) + ``key=value`` overrides -> a typed ``RunConfig`` (omegaconf DictConfig).

    Every problem is raised as one :class:`ConfigError` naming the key (or the file and line).
    """
    schema = OmegaConf.structured(RunConfig)
    try:
        merged = schema
        if base is not None:
            merged = OmegaConf.merge(merged, base if not dataclasses.is_dataclass(base) else OmegaConf.structured(base))
        if path is not None:
            raw = _expand_data_include(_load_yaml(path), path)
            merged = OmegaConf.merge(merged, raw)
            _keep_missing(merged, raw)
            if OmegaConf.select(raw, "data.mixture") is not None:  # replace, not merge: a task left out has weight 0
                OmegaConf.update(merged, "data.mixture", raw["data"]["mixture"], merge=False)
        if overrides:
            bad = [o for o in overrides if "=" not in o]
            if bad:
                raise ConfigError(f"override {bad[0]!r} is not of the form key=value")
            merged = OmegaConf.merge(merged, OmegaConf.from_dotlist(list(overrides)))
    except ConfigError:
        raise
    except OmegaConfBaseException as err:
        where = f" in {path}" if path else ""
        msg = str(err).splitlines()[0]
        raise ConfigError(f"{msg}{where}", key=_key_of(err)) from None
    missing = sorted(OmegaConf.missing_keys(merged))
    if missing:
        also = f"; also required: {', '.join(missing[1:])}" if len(missing) > 1 else ""
        raise ConfigError(f"is required (set it in the YAML or as {missing[0]}=...){also}", key=missing[0])
    return merged


_STYLES = ("constant", "cosine", "wsd", "linear")
_PRECISIONS = ("auto",) + PRECISIONS


def _require(cond: bool, key: str, message: str) -> None:
    if not cond:
        raise ConfigError(message, key=key)


def validate(cfg, world_size: int) -> None:
    """Checks of the config's own values (ranges, choices, batch and layout arithmetic); what needs the model,
    the files or the machine is :func:`liquid_train.training.preflight.preflight`'s."""
    p, t = cfg.parallel, cfg.train
    _require(p.tensor_parallel >= 1, "parallel.tensor_parallel", "must be >= 1")
    _require(p.pipeline_parallel >= 1, "parallel.pipeline_parallel", "must be >= 1")
    mp = p.tensor_parallel * p.pipeline_parallel
    _require(world_size % mp == 0, "parallel.tensor_parallel",
             f"tensor_parallel x pipeline_parallel = {mp} does not divide the world size {world_size}")
    dp = world_size // mp
    _require(t.micro_batch_size >= 1, "train.micro_batch_size", "must be >= 1")
    _require(t.global_batch_size % (t.micro_batch_size * dp) == 0, "train.global_batch_size",
             f"{t.global_batch_size} is not divisible by micro_batch_size x data_parallel = "
             f"{t.micro_batch_size} x {dp}")
    _require(t.iters >= 1, "train.iters", "must be >= 1")
    _require(t.max_consecutive_nan >= 1, "train.max_consecutive_nan", "must be >= 1")
    if p.virtual_pipeline_parallel is not None:
        _require(p.pipeline_parallel > 1, "parallel.virtual_pipeline_parallel", "needs pipeline_parallel > 1")
        n_micro = t.global_batch_size // (t.micro_batch_size * dp)
        _require(n_micro % p.pipeline_parallel == 0, "parallel.virtual_pipeline_parallel",
                 f"interleaved 1F1B needs the number of micro-batches ({n_micro}) divisible by pipeline_parallel")
    if p.sequence_parallel:
        _require(p.tensor_parallel > 1, "parallel.sequence_parallel", "needs tensor_parallel > 1")
    s = cfg.schedule
    _require(s.style in _STYLES, "schedule.style", f"{s.style!r} is not one of {_STYLES}")
    warmup = warmup_steps(cfg)
    decay = s.decay_steps or t.iters
    _require(0 <= warmup < max(decay, 1) or (s.style == "constant" and warmup <= decay), "schedule.warmup_steps",
             f"warmup ({warmup}) must be shorter than the decay steps ({decay})")
    _require(0 < s.wsd_decay_fraction <= 1, "schedule.wsd_decay_fraction", "must lie in (0, 1]")
    o = cfg.optimizer
    _require(o.name in ("adam", "sgd"), "optimizer.name", f"{o.name!r} is not adam or sgd")
    _require(o.lr > 0 and 0 <= o.min_lr <= o.lr, "optimizer.min_lr", "need 0 <= min_lr <= lr and lr > 0")
    _require(o.clip_grad >= 0, "optimizer.clip_grad", "must be >= 0")
    _require(o.z_loss_weight >= 0, "optimizer.z_loss_weight", "must be >= 0")
    m = cfg.model
    _require(m.precision in _PRECISIONS, "model.precision", f"{m.precision!r} is not one of {_PRECISIONS}")
    ck = cfg.checkpoint
    _require(ck.keep_last >= 1, "checkpoint.keep_last", "must be >= 1 (the latest checkpoint is always kept)")
    _require(ck.save_interval >= 0, "checkpoint.save_interval", "must be >= 0")
    _require(ck.save_interval_minutes >= 0, "checkpoint.save_interval_minutes", "must be >= 0 (0 disables)")
    _require(cfg.logging.wandb_mode in ("offline", "online", "disabled"), "logging.wandb_mode",
             "must be offline, online or disabled")
    _require(cfg.engine in ENGINES, "engine", f"{cfg.engine!r} is not one of {ENGINES}")
    if cfg.engine == "deepspeed":
        _validate_deepspeed(cfg)


def _validate_deepspeed(cfg) -> None:
    """What the deepspeed engine cannot do is refused here, not ignored: model parallelism, FP8, async saves."""
    d, p = cfg.deepspeed, cfg.parallel
    _require(d.zero_stage in ZERO_STAGES, "deepspeed.zero_stage", f"{d.zero_stage} is not one of {ZERO_STAGES}")
    _require(d.offload_optimizer in OFFLOAD_DEVICES, "deepspeed.offload_optimizer",
             f"{d.offload_optimizer!r} is not one of {OFFLOAD_DEVICES}")
    _require(d.offload_param in OFFLOAD_DEVICES, "deepspeed.offload_param",
             f"{d.offload_param!r} is not one of {OFFLOAD_DEVICES}")
    _require(d.offload_param == "none" or d.zero_stage == 3, "deepspeed.offload_param",
             "parameter offload needs deepspeed.zero_stage=3")
    _require(p.tensor_parallel == 1, "parallel.tensor_parallel",
             "engine=deepspeed is data parallel only (ZeRO); tensor parallelism needs engine=megatron")
    _require(p.pipeline_parallel == 1, "parallel.pipeline_parallel",
             "engine=deepspeed is data parallel only (ZeRO); pipeline parallelism needs engine=megatron")
    _require(cfg.model.precision != "fp8", "model.precision",
             "FP8 needs engine=megatron with Transformer Engine; use bf16 (GPU) or fp32 with engine=deepspeed")
    _require(not cfg.checkpoint.async_save, "checkpoint.async_save",
             "engine=deepspeed saves synchronously (DeepSpeed's save_checkpoint); set checkpoint.async_save=false")
    _require(cfg.sampling.interval == 0, "sampling.interval",
             "in-training T2I samples run on the megatron model; with engine=deepspeed set sampling.interval=0 "
             "and sample the exported HF model (tools/sample.py)")


def warmup_steps(cfg) -> int:
    s = cfg.schedule
    if s.warmup_steps is not None:
        return int(s.warmup_steps)
    return int(round(s.warmup_fraction * (s.decay_steps or cfg.train.iters)))


def save_resolved(cfg, run_dir: str) -> str:
    """Write the resolved config to ``<run_dir>/config.yaml`` atomically."""
    os.makedirs(run_dir, exist_ok=True)
    path = os.path.join(run_dir, "config.yaml")
    return atomic_write_text(path, OmegaConf.to_yaml(cfg, resolve=True))
