"""DeepSpeed on a CPU-only machine: what works, in one place (deepspeed 0.19.8, torch 2.13.0+cpu, gloo).

* Install: deepspeed on PyPI is an sdist whose ``setup.py`` imports torch, so it is installed after torch, without
  build isolation and without prebuilt ops (``DS_BUILD_OPS=0 pip install --no-build-isolation deepspeed==0.19.8``,
  ``launch/setup_env.sh``); an isolated build would pull a CUDA torch.
* Accelerator: ``DS_ACCELERATOR=cpu`` must be in the environment before deepspeed is first imported (it picks its
  accelerator at import time and otherwise probes for CUDA / Intel extensions). The CPU accelerator's communication
  backend is ``ccl`` when oneCCL is installed, else ``gloo``; we require gloo and reuse the process group the
  trainer created (``deepspeed.init_distributed`` sees it initialised and only wraps it).
* Ops: no compiled op is needed, and none may be JIT-built: on CPU, DeepSpeed's torch comm backend compiles its
  shared-memory all-reduce (``deepspeed_shm_comm``, g++ and ~40 s on first use) when it is "compatible"; it serves
  only DeepSpeed's inference all-reduce (ZeRO's collectives are torch.distributed's, gloo here), so
  :func:`import_deepspeed` marks it incompatible in ``deepspeed.ops.__compatible_ops__`` (the probe's cached dict,
  whose edits DeepSpeed keeps by design) before any engine exists.
* ``LOCAL_RANK``: ``deepspeed.initialize`` asserts it is in the environment; torchrun sets it, a plain single
  process gets ``LOCAL_RANK=0`` (:func:`ensure_local_rank`; DeepSpeed reads it during ZeRO-3 steps too). The optimizer is a plain torch ``AdamW`` given to ``deepspeed.initialize``
  (ZeRO partitions it); with offload, ``zero_force_ds_cpu_optimizer: false`` lets ZeRO-Offload keep it instead of
  JIT-compiling ``DeepSpeedCPUAdam``.
* Precision: fp32 (bf16 works in DeepSpeed on CPU but is slow; fp16 needs a loss scaler and is refused on CPU
  by the preflight as for megatron).

Why a module: deepspeed is imported only inside functions (an optional package, as Transformer Engine is), and
:func:`import_deepspeed` is the single place that sets the environment up first and turns "cannot run" into one
clear error.
"""
from __future__ import annotations

import os

import torch


class DeepSpeedUnavailable(RuntimeError):
    """DeepSpeed cannot run here; the message says why and how to install it."""


INSTALL_HINT = ("install it after torch without build isolation: DS_BUILD_OPS=0 pip install --no-build-isolation "
                "deepspeed==0.19.8 (launch/setup_env.sh does this)")


def import_deepspeed():
    """``import deepspeed`` with the CPU accelerator selected when there is no GPU; DeepSpeedUnavailable if it
    cannot be imported or its accelerator is not the one this machine needs."""
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    try:
        import deepspeed  # optional engine: imported only when engine=deepspeed
        from deepspeed.accelerator import get_accelerator
    except ImportError as exc:
        raise DeepSpeedUnavailable(f"deepspeed is not importable ({exc}); {INSTALL_HINT}") from None
    accel = get_accelerator()
    want = "cuda" if torch.cuda.is_available() else "cpu"
    if accel.device_name() != want:
        raise DeepSpeedUnavailable(f"deepspeed chose the {accel.device_name()!r} accelerator, this machine needs "
                                   f"{want!r}; set DS_ACCELERATOR={want} before the run starts")
    if want == "cpu":
        if accel.communication_backend_name() != "gloo":
            raise DeepSpeedUnavailable(f"deepspeed's CPU accelerator uses {accel.communication_backend_name()!r}, "
                                       f"the trainer's process group is gloo; uninstall oneccl_bindings_for_pytorch")
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False  # never JIT-build the inference all-reduce
    return deepspeed


def ensure_local_rank() -> None:
    """``LOCAL_RANK=0`` in a plain single process (launchers set it). DeepSpeed asserts it at ``initialize`` and
    reads it again during ZeRO-3 steps, so it stays set for the process; it is the one variable the deepspeed engine
    adds (``parallel.py`` adds none), harmless to children, which decide on ``WORLD_SIZE``."""
    if "LOCAL_RANK" not in os.environ and "WORLD_SIZE" not in os.environ:
        os.environ["LOCAL_RANK"] = "0"
