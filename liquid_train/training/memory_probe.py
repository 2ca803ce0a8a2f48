"""Count the bytes autograd keeps for backward while a piece of code runs (``saved_tensors_hooks``), distinct storages
once each. Used by the loss-memory benchmark and its test, so both measure the same thing."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Dict, Iterator

import torch


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
