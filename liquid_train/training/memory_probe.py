"""Tensor-memory probes, distinct storages once each: the bytes autograd keeps for backward while a piece of code
runs (``saved_tensors_hooks``; the loss-memory benchmark and its test), the peak of live tensor bytes
(:class:`LiveTensorBytes`; the planner-memory check, ``liquid_train.testing.memory_run``) and the bytes of a set of
tensors (:func:`storage_bytes`)."""
from __future__ import annotations

import weakref
from contextlib import contextmanager
from typing import Dict, Iterable, Iterator

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


def storage_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes of the distinct storages behind ``tensors`` (tied weights and views count once)."""
    return sum({t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}.values())


@contextmanager
def saved_bytes() -> Iterator[Dict[str, int]]:
    """``with saved_bytes() as saved: ...`` then ``saved["bytes"]``: storage bytes saved for backward inside."""
    seen: Dict[int, int] = {}
    result = {"bytes": 0}

    def pack(tensor: torch.Tensor):
        storage = tensor.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield result
    result["bytes"] = sum(seen.values())


class LiveTensorBytes(TorchDispatchMode):
    """``with LiveTensorBytes() as live:`` ... ``live.peak``: the most bytes of tensor storage alive at once among the
    storages created inside the block (a storage counts once, however many views it has; a view or an in-place
    result shares an input's storage and adds nothing)."""

    def __init__(self):
        super().__init__()
        self.live = 0
        self.peak = 0
        self._sizes = {}

    def _freed(self, key: int) -> None:
        self.live -= self._sizes.pop(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for tensor in tree_leaves(out):
            if not isinstance(tensor, torch.Tensor):
                continue
            storage = tensor.untyped_storage()
            key, size = id(storage), storage.nbytes()
            if size and key not in self._sizes and storage.data_ptr() not in inputs:  # a view or in-place: no new bytes
                self._sizes[key] = size
                self.live += size
                self.peak = max(self.peak, self.live)
                weakref.finalize(storage, self._freed, key)
        return out
