"""Make megatron-core run on a CPU-only machine (gloo, no CUDA); a no-op when a GPU is present.

megatron-core 0.16.1 assumes CUDA in a handful of places (see ``docs/models.md``). Rather than forking megatron, this
module installs, once per process:

* a process-wide :class:`torch.overrides.TorchFunctionMode` that maps every ``cuda`` device argument
  (``device="cuda"``, ``torch.device("cuda", i)``, integer device ordinals, ``Tensor.cuda()``, ``.to("cuda")``) to the
  CPU, drops ``pin_memory``, and makes ``Tensor.type()`` report CUDA type names, because megatron's optimizer and
  grad clipping compare ``param.type()`` with ``'torch.cuda.FloatTensor'``. This covers the hard-coded
  ``device="cuda"`` masks (``transformer/utils.py``), pipeline schedules, tied-embedding sync, optimizer internals;
* ``torch.cuda.current_device`` -> the CPU device, and no-op ``synchronize``/``empty_cache`` / memory counters.
  It returns a device rather than an ordinal because a torch function mode is switched off inside its own handler:
  when ``torch.autograd.backward`` is dispatched through the mode, the whole backward pass (megatron's sequence-
  parallel linear allocates with ``device=torch.cuda.current_device()`` there) runs without it;
* megatron's model-parallel RNG tracker redirected to the CPU generator (``_get/_set_cuda_rng_state`` and the
  tracker's ``add``), so forked RNG regions (TP-sharded init, dropout) work and stay reproducible.

The same training code path then runs unchanged on GPUs, where :func:`enable_cpu_compat` does nothing.
"""
from __future__ import annotations

import threading

import torch
from megatron.core.tensor_parallel import random as mrandom
from torch.overrides import TorchFunctionMode

_ENABLED = False
_LOCK = threading.Lock()
_MODE = None


def _is_cuda_device(device) -> bool:
    if isinstance(device, torch.device):
        return device.type == "cuda"
    if isinstance(device, str):
        return device.startswith("cuda")
    if isinstance(device, int) and not isinstance(device, bool):
        return True  # an ordinal means a CUDA device
    return False


_CPU = torch.device("cpu")


class CudaToCpuMode(TorchFunctionMode):
    """Maps cuda devices to the CPU for every torch call made while active (the whole process once enabled)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if "device" in kwargs and _is_cuda_device(kwargs["device"]):
            kwargs = dict(kwargs, device=_CPU)
        if kwargs.get("pin_memory"):
            kwargs = dict(kwargs, pin_memory=False)
        if func is torch.Tensor.cuda:
            return args[0]
        if func is torch.Tensor.to and len(args) > 1 and _is_cuda_device(args[1]):
            args = (args[0], _CPU) + tuple(args[2:])
        if func is torch.Tensor.type and len(args) == 1 and not kwargs:
            name = func(*args)
            if name.startswith("torch.") and not name.startswith("torch.cuda."):
                return "torch.cuda." + name[len("torch."):]
            return name
        if func in (torch.Tensor.pin_memory,):
            return args[0]
        return func(*args, **kwargs)


def _cpu_get_rng_state(device="cuda", clone=False, graph_safe=False):
    return torch.get_rng_state()


def _cpu_set_rng_state(new_state, device=-1, graph_safe=False):
    torch.set_rng_state(new_state)


def _patch_rng_tracker() -> None:
    mrandom._get_cuda_rng_state = _cpu_get_rng_state
    mrandom._set_cuda_rng_state = _cpu_set_rng_state

    def add(self, name, seed):
        if seed in self.seeds_:
            raise Exception(f"seed {seed} already exists")
        self.seeds_.add(seed)
        if name in self.states_:
            raise Exception(f"rng state {name} already exists")
        orig = torch.get_rng_state()
        torch.manual_seed(seed)
        self.states_[name] = torch.get_rng_state()
        torch.set_rng_state(orig)

    mrandom.CudaRNGStatesTracker.add = add


def _patch_torch_cuda() -> None:
    cuda = torch.cuda
    cuda.current_device = lambda: _CPU  # a device, not an ordinal: also right where the mode is not active
    cuda.synchronize = lambda device=None: None
    cuda.empty_cache = lambda: None
    for name in ("max_memory_allocated", "memory_allocated", "max_memory_reserved", "memory_reserved"):
        setattr(cuda, name, lambda device=None: 0)
    cuda.reset_peak_memory_stats = lambda device=None: None
    cuda.manual_seed = lambda seed: None  # the CPU generator is seeded by initialize_parallel
    cuda.manual_seed_all = lambda seed: None
    cuda.get_rng_state = lambda device="cuda": torch.get_rng_state()
    cuda.set_rng_state = lambda state, device="cuda": torch.set_rng_state(state)


def enable_cpu_compat() -> bool:
    """Install the CPU compatibility layer once per process; returns True if it is active.

    Does nothing (returns False) when CUDA is available: GPUs run megatron-core unmodified.
    """
    global _ENABLED, _MODE
    if torch.cuda.is_available():
        return False
    with _LOCK:
        if _ENABLED:
            return True
        _patch_torch_cuda()
        _patch_rng_tracker()
        _MODE = CudaToCpuMode()
        _MODE.__enter__()  # stays on the mode stack for the life of the process
        _ENABLED = True
    return True


def is_enabled() -> bool:
    return _ENABLED
