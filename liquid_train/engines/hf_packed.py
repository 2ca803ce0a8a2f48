"""Packed micro-batches for a Hugging Face model: per-sample attention as a block-diagonal causal 4D mask, and
positions restarted per segment.

Why both, and not ``position_ids`` alone: the packer's ``PackedSeqParams`` (``cu_seqlens`` over the rows laid end
to end) is the truth megatron attends by, and megatron's RoPE restarts per ``cu_seqlens`` segment. The batch's own
``position_ids`` do not always restart where a segment does (a text window cut from a document keeps counting), so
transformers' position-id packing detection would merge segments. The mask and the positions are therefore built from
``cu_seqlens``. Models whose layers differ (Qwen2 / Gemma 2 ``layer_types`` with sliding windows) get a dict of
masks, one per layer type, which transformers uses as given; the others one ``[b, 1, s, s]`` float mask.
"""
from __future__ import annotations

from typing import Any, Dict, Union

import torch


def segment_layout(cu_seqlens: torch.Tensor, b: int, s: int):
    """(segment index ``[b, s]``, position within the segment ``[b, s]``) of ``cu_seqlens`` over ``b * s``."""
    cu = cu_seqlens.to(torch.long)
    lengths = cu[1:] - cu[:-1]
    if int(cu[-1]) != b * s:
        raise ValueError(f"cu_seqlens cover {int(cu[-1])} positions, the micro-batch has {b} x {s}")
    seg = torch.repeat_interleave(torch.arange(lengths.numel()), lengths)
    pos = torch.arange(b * s) - torch.repeat_interleave(cu[:-1], lengths)
    return seg.view(b, s), pos.view(b, s)


def _float_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    zero = torch.zeros((), dtype=dtype)
    return torch.where(allowed, zero, torch.tensor(torch.finfo(dtype).min, dtype=dtype))[:, None]


def packed_attention_mask(seg: torch.Tensor, config, dtype: torch.dtype
                          ) -> Union[torch.Tensor, Dict[str, torch.Tensor]]:
    """Causal attention within each segment, ``[b, 1, s, s]`` (0 = attend, dtype min = masked); a dict per
    ``config.layer_types`` when the model has them (sliding layers also limited to the window, transformers'
    rule: key > query - window)."""
    s = seg.size(1)
    q = torch.arange(s)[:, None]
    k = torch.arange(s)[None, :]
    allowed = (seg[:, :, None] == seg[:, None, :]) & (k <= q)
    layer_types = getattr(config, "layer_types", None)
    if not layer_types:
        return _float_mask(allowed, dtype)
    masks = {}
    for kind in set(layer_types):
        if kind == "sliding_attention":
            window = config.sliding_window
            masks[kind] = _float_mask(allowed & (k > q - window), dtype)
        elif kind == "full_attention":
            masks[kind] = _float_mask(allowed, dtype)
        else:
            raise ValueError(f"layer type {kind!r} of {type(config).__name__} is not supported for packed batches")
    return masks


def hf_inputs(batch: Dict[str, Any], config, dtype: torch.dtype, device) -> Dict[str, Any]:
    """``model(**hf_inputs(...))`` arguments of a packed micro-batch (``liquid_train.data.packing.collate_packed``)."""
    tokens = batch["tokens"]
    b, s = tokens.shape
    seg, pos = segment_layout(batch["packed_seq_params"].cu_seqlens_q, b, s)
    mask = packed_attention_mask(seg, config, dtype)
    mask = {k: v.to(device) for k, v in mask.items()} if isinstance(mask, dict) else mask.to(device)
    return {"input_ids": tokens.to(device), "position_ids": pos.to(device), "attention_mask": mask,
            "use_cache": False}
