"""Everything a run config can know, checked once before any process group, model or dataset exists.

Why up front: on a cluster a bad key found after distributed init costs a queue wait and a model build, and prints
one traceback per rank. Each check here raises one :class:`~liquid_train.training.config.ConfigError` naming the key
(the CLI adds where the value came from and exits 2): the config's own values (:func:`validate`), the model
(family, size, inline ``model.arch``, TP / PP / VPP divisibility, ``seq_length`` against the positions), the files
(vocabulary, tokenizer, indexed datasets, ``init_from``), the tokenizer's special ids against the vocabulary, the
pairs' codebook against the image ids, the in-training sampler's VQ against the data's (it loads, same codebook,
same weights), the mixture, and the machine (FP8, Transformer Engine,
the attention backend, kernel fusions, GPUs per node against the layout). It only reads: cheap on every rank.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

import torch
from omegaconf import OmegaConf
from transformers import AutoTokenizer

from data_pipeline.vq import VQCheckpointError, load_vq_tokenizer
from liquid_train.data.config import DataConfig
from liquid_train.engines.deepspeed_cpu import DeepSpeedUnavailable, import_deepspeed
from liquid_train.image_meta import read_pairs_meta, sampling_vq
from liquid_train.models.builder import (arch_from_run_config, check_divisibility, options_from_run_config,
                                         recompute_kwargs, resolve_attention_backend)
from liquid_train.models.families import ModelArch
from liquid_train.models.fusions import resolve_fusions
from liquid_train.models.options import BuildOptions
from liquid_train.models.precision import check_fp8_config, fp8_available
from liquid_train.models.sidecar import SidecarError
from liquid_train.training.config import ConfigError, validate
from liquid_train.vocab import TASK_NAMES, TASK_TEXT, LiquidVocab


@dataclass
class Preflight:
    """What the checks resolved, for the caller to reuse instead of resolving again."""
    arch: ModelArch
    options: BuildOptions
    attention_backend: str
    data: DataConfig
    vocab_path: str


def _fail(key: str, message: str) -> None:
    raise ConfigError(message, key=key)


def data_config(cfg) -> DataConfig:
    """The run's ``data`` block as a validated :class:`DataConfig` (ConfigError naming the field otherwise)."""
    try:
        if isinstance(cfg.data, DataConfig):
            cfg.data.validate()
            return cfg.data
        return OmegaConf.to_object(cfg.data) if OmegaConf.is_config(cfg.data) else DataConfig(**cfg.data)
    except ValueError as err:
        match = re.match(r"DataConfig\.(\w+)", str(err))
        raise ConfigError(str(err).split(": ", 1)[-1] if match else str(err),
                          key=f"data.{match.group(1)}" if match else "data") from None


def vocab_path(cfg) -> str:
    """The run's liquid_vocab.json: model.vocab, else data.vocab, else the one in model.init_from."""
    for key, value in (("model.vocab", cfg.model.vocab), ("data.vocab", cfg.data.vocab)):
        if value:
            path = value if value.endswith(".json") else os.path.join(value, "liquid_vocab.json")
            if not os.path.exists(path):
                _fail(key, f"{path} does not exist; point it at the liquid_vocab.json written by "
                           f"tools/convert_checkpoint.py hf-to-megatron (or the data pipeline)")
            return path
    if cfg.model.init_from:
        path = os.path.join(cfg.model.init_from, "liquid_vocab.json")
        if os.path.exists(path):
            return path
        _fail("model.init_from", f"{cfg.model.init_from} has no liquid_vocab.json; set model.vocab")
    _fail("model.vocab", "no vocabulary: set model.vocab (or data.vocab) to a liquid_vocab.json, or model.init_from "
                         "to a converted checkpoint that has one")
    raise AssertionError  # unreachable


def _check_data(data: DataConfig) -> None:
    if not data.tokenizer:
        _fail("data.tokenizer", "is not set: give the HF tokenizer directory that built the indexed datasets")
    if not os.path.isdir(data.tokenizer):
        _fail("data.tokenizer", f"{data.tokenizer} is not a directory (nothing is downloaded at run time); give the "
                                f"tokenizer directory that built the indexed datasets")
    for task in data.active_tasks:
        kind = "text" if task == TASK_TEXT else "pairs"
        single = f"data.{kind}_path"
        try:
            sources = data.task_sources(task)
        except ValueError:
            _fail(single, f"is not set, but data.mixture gives {TASK_NAMES[task]} a weight; set it (or "
                          f"data.sources.{TASK_NAMES[task]}) or drop the task from the mixture")
        key = single if not data.sources.get(TASK_NAMES[task]) else f"data.sources.{TASK_NAMES[task]}"
        for source in sources:
            for suffix in (".bin", ".idx"):
                if not os.path.exists(source.path + suffix):
                    _fail(key, f"{source.path}{suffix} does not exist; build it with `liquid-data build {kind} "
                               f"...` (docs/data_pipeline.md)")


# --- the tokenizer and the image side against the vocabulary (why: both used to fail silently or mid-run) --------
def _check_tokenizer_ids(data: DataConfig, vocab: LiquidVocab, vocab_file: str) -> None:
    """The tokenizer's bos/eos/pad and (when it has them) <boi>/<eoi>/<unconditional> are the vocabulary's ids.
    A vocabulary planned for other ids trains on a bos or eos the tokenizer never emits, with no error anywhere."""
    try:
        tok = AutoTokenizer.from_pretrained(data.tokenizer)
    except Exception as err:  # corrupt or incomplete tokenizer files
        _fail("data.tokenizer", f"{data.tokenizer}: cannot load the tokenizer ({type(err).__name__}: {err})")
    fix = (f"the vocabulary was made for another tokenizer: re-import the base model with --tokenizer "
           f"{data.tokenizer}, or point data.tokenizer at the tokenizer that built the datasets")
    for kind in ("bos", "eos", "pad"):
        token, tid = getattr(tok, f"{kind}_token", None), getattr(tok, f"{kind}_token_id", None)
        if token is not None and tid is not None and int(tid) != getattr(vocab, f"{kind}_id"):
            _fail("data.tokenizer", f"{data.tokenizer}: {kind}_token {str(token)!r} is id {tid} but {vocab_file} has "
                                    f"{kind}_id {getattr(vocab, f'{kind}_id')}; {fix}")
    known = tok.get_vocab()
    for token, want in ((vocab.boi_token, vocab.boi_id), (vocab.eoi_token, vocab.eoi_id),
                        (vocab.uncond_token, vocab.uncond_id)):
        if token in known and known[token] != want:
            _fail("data.tokenizer", f"{data.tokenizer}: {token!r} is id {known[token]} but {vocab_file} puts it at "
                                    f"{want}; {fix}")


def _check_image_side(cfg, data: DataConfig, vocab: LiquidVocab, vocab_file: str) -> None:
    """The pairs' codebook is the vocabulary's image range; the in-training sampler's VQ loads, has that codebook and
    is the VQ (same weights) the pairs were encoded with."""
    meta = read_pairs_meta(data.pairs_path) if any(t != TASK_TEXT for t in data.active_tasks) else {}
    codebook = meta.get("codebook_size")
    if codebook is not None and int(codebook) != vocab.num_image_tokens:
        _fail("data.pairs_path", f"{data.pairs_path}.meta.json: codes of a {codebook}-entry codebook "
                                 f"({meta.get('vq_tokenizer')}) but {vocab_file} has {vocab.num_image_tokens} image "
                                 f"ids; import the base model with --vq-tokenizer set to the VQ that encoded the pairs")
    if not cfg.sampling.interval:
        return
    name, key = sampling_vq(cfg, vocab)
    try:
        vq = load_vq_tokenizer(name, device="cpu")
    except (VQCheckpointError, OSError, ValueError, KeyError) as err:
        _fail(key if key == "sampling.vq_tokenizer" else "sampling.interval",
              f"the VQ for the T2I samples ({name}) cannot be loaded: {str(err).splitlines()[0]}; "
              f"set sampling.vq_tokenizer to the VQ that encoded the pairs, or sampling.interval=0")
    where = "sampling.vq_tokenizer" if key == "sampling.vq_tokenizer" else "sampling.interval"
    if vq.codebook_size != vocab.num_image_tokens:
        _fail(where, f"the sampling VQ {name} has {vq.codebook_size} codes but {vocab_file} has "
                     f"{vocab.num_image_tokens} image ids; set sampling.vq_tokenizer to the VQ that encoded the pairs")
    identity = meta.get("vq_identity")
    if identity and vq.identity != identity:
        _fail(where, f"the sampling VQ {name} has other weights ({vq.identity[:19]}...) than the VQ that encoded "
                     f"{data.pairs_path} ({identity[:19]}..., {meta.get('vq_tokenizer')}); set "
                     f"sampling.vq_tokenizer to that VQ")


def _check_machine(cfg, arch: ModelArch, options: BuildOptions, world_size: int) -> str:
    m = cfg.model
    cuda = torch.cuda.is_available()
    if options.precision in ("bf16", "fp16") and not cuda:
        _fail("model.precision", f"{options.precision} training needs a GPU; use fp32 (or auto) on CPU")
    if options.precision == "fp8":
        try:
            check_fp8_config(options.fp8, arch.num_layers)
        except ValueError as err:
            field_name = str(err).split("=", 1)[0].split(":", 1)[0]
            _fail(f"model.{field_name}", str(err))
        reason = fp8_available()
        if reason:
            _fail("model.precision", reason)
    try:
        backend = resolve_attention_backend(arch, options.attention_backend, training=True)
    except ValueError as err:
        _fail("model.attention_backend", str(err).split(": ", 1)[-1])
    if options.precision == "fp8" and backend != "te":
        _fail("model.attention_backend", f"precision=fp8 runs in Transformer Engine layers; {backend} has none "
                                         f"(use attention_backend=te or auto with TE installed)")
    try:
        resolve_fusions(m.fusions, arch.activation, backend)
    except ValueError as err:
        _fail("model.fusions", str(err).split(": ", 1)[-1])
    if cuda:
        local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        gpus = torch.cuda.device_count()
        if local > gpus:
            _fail("parallel.tensor_parallel", f"{local} processes per node but this node has {gpus} GPU(s); start "
                                              f"one process per GPU (torchrun --nproc-per-node {gpus})")
        if world_size > local and cfg.parallel.tensor_parallel > local:
            _fail("parallel.tensor_parallel", f"{cfg.parallel.tensor_parallel} spans nodes ({local} GPUs per "
                                              f"node); keep tensor parallelism inside a node")
    return backend


def preflight(cfg, world_size: int, machine: bool = True) -> Preflight:
    """All checks; returns what they resolved. Raises ConfigError (one, naming the key) on the first problem.

    ``machine=False`` leaves out what depends on the machine the job lands on (GPUs, Transformer Engine, FP8,
    kernels): a config composed on a login node is checked against its files and layout (``tools/sweep.py
    --check``); the attention backend is then reported as asked for."""
    validate(cfg, world_size)
    try:
        arch = arch_from_run_config(cfg.model)
    except SidecarError as err:
        _fail("model.init_from", str(err))
    except KeyError as err:
        message = str(err.args[0]) if err.args else str(err)
        _fail("model.size" if "size" in message else "model.family", message)
    except (TypeError, ValueError) as err:
        message = str(err)
        key = message.split("=", 1)[0].split(":", 1)[0] if message.startswith("model.") else "model.arch"
        _fail(key, message.split(": ", 1)[-1] if message.startswith("model.") else message)
    p = cfg.parallel
    try:
        check_divisibility(arch, p.tensor_parallel, p.pipeline_parallel, p.virtual_pipeline_parallel)
    except ValueError as err:
        key = "parallel.tensor_parallel" if str(err).startswith("tensor") else "parallel.pipeline_parallel"
        _fail(key, str(err))
    data = data_config(cfg)
    if data.seq_length > arch.max_position_embeddings:
        _fail("data.seq_length", f"{data.seq_length} exceeds the {arch.max_position_embeddings} positions of "
                                 f"{arch.family} {arch.size}; shorten it")
    if cfg.engine == "deepspeed" and cfg.model.init_from and \
            not os.path.exists(os.path.join(cfg.model.init_from, "config.json")):
        _fail("model.init_from", f"{cfg.model.init_from} has no config.json; engine=deepspeed starts from a Hugging "
                                 f"Face model directory (a megatron checkpoint: tools/convert_checkpoint.py "
                                 f"megatron-to-hf first)")
    if cfg.model.init_from and not os.path.isdir(cfg.model.init_from):
        _fail("model.init_from", f"{cfg.model.init_from} is not a directory; convert the HF model first with "
                                 f"tools/convert_checkpoint.py hf-to-megatron")
    vocab_path_ = vocab_path(cfg)
    try:
        vocab = LiquidVocab.load(vocab_path_)
    except (OSError, ValueError, KeyError, TypeError) as err:
        _fail("model.vocab", f"{vocab_path_} is not a readable liquid_vocab.json ({err})")
    _check_data(data)
    _check_tokenizer_ids(data, vocab, vocab_path_)
    _check_image_side(cfg, data, vocab, vocab_path_)
    options = options_from_run_config(cfg)
    try:
        recompute_kwargs(options.recompute)
    except ValueError as err:
        _fail(f"model.{str(err).split('=', 1)[0]}", str(err))
    backend = _check_machine(cfg, arch, options, world_size) if machine else options.attention_backend
    if machine and cfg.engine == "deepspeed":
        try:
            import_deepspeed()
        except DeepSpeedUnavailable as err:
            _fail("engine", str(err))
    return Preflight(arch=arch, options=options, attention_backend=backend, data=data, vocab_path=vocab_path_)
