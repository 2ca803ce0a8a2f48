"""T2I samples during training: fixed prompts, classifier-free guidance, decoded by the VQ decoder into a PNG grid.

This is a training-progress picture drawn from the megatron model being trained, with the sampler of
`liquid_train.inference` (the one ``tools/sample.py`` uses on exported checkpoints): the same prompts as the
training template builds them, the same CFG (``uncond + scale * (cond - uncond)``, only image ids drawn) and the
same captioned grid. `MegatronCausalLM` lets that sampler call the megatron model; it has no KV cache, so every
image token is a full forward pass. Needs pipeline_parallel == 1 (skipped otherwise, with a log line).
"""
from __future__ import annotations

import logging
import math
import os
from types import SimpleNamespace
from typing import List, Sequence

import torch
from megatron.core import parallel_state as ps
from megatron.core.packed_seq_params import PackedSeqParams
from megatron.core.tensor_parallel import gather_from_tensor_model_parallel_region
from transformers import AutoTokenizer

from data_pipeline.vq import load_vq_tokenizer
from liquid_train.data.config import T2I_INSTRUCTIONS
from liquid_train.image_meta import sampling_vq
from liquid_train.inference.grid import save_image_grid
from liquid_train.inference.sampling import generate_image_tokens

logger = logging.getLogger(__name__)


class MegatronCausalLM:
    """The call surface `inference.sampling.CachedDecoder` uses (``input_ids``, a 2-D padding ``attention_mask``,
    ``position_ids`` -> ``.logits``), over a megatron GPTModel. The rows' real tokens go in as one packed THD batch
    (megatron's ``PackedSeqParams``, one segment per row), as in training, so every attention backend (TE, flex,
    local) sees what it was built for; logits come back ``[b, s, V]`` (zero at the pads), TP-gathered."""

    def __init__(self, model):
        self.model = model

    def parameters(self):
        return self.model.parameters()

    @torch.no_grad()
    def __call__(self, input_ids, attention_mask, position_ids, use_cache=False, past_key_values=None):
        if use_cache or past_key_values is not None:
            raise ValueError("MegatronCausalLM has no KV cache; decode with use_cache=False")
        keep = attention_mask.bool()
        lengths = keep.sum(dim=1).to(torch.int32)
        cu = torch.zeros(len(lengths) + 1, dtype=torch.int32, device=input_ids.device)
        torch.cumsum(lengths, 0, dtype=torch.int32, out=cu[1:])
        longest = int(lengths.max())
        params = PackedSeqParams(qkv_format="thd", cu_seqlens_q=cu, cu_seqlens_kv=cu, max_seqlen_q=longest,
                                 max_seqlen_kv=longest)
        tokens = input_ids[keep][None]
        packed = self.model(tokens, torch.zeros_like(tokens), None, packed_seq_params=params)
        if ps.get_tensor_model_parallel_world_size() > 1:
            packed = gather_from_tensor_model_parallel_region(packed)
        logits = packed.new_zeros(*input_ids.shape, packed.size(-1))
        logits[keep] = packed[0]
        return SimpleNamespace(logits=logits, past_key_values=None)


def t2i_prompts(vocab, tokenizer, captions: Sequence[str]) -> List[List[int]]:
    """``[bos] caption instruction <boi>`` with caption and instruction tokenized apart, as the T2I template does
    (`data.templates`); without a tokenizer, unconditional-style ``[bos] <boi>`` prompts."""
    if tokenizer is None:
        return [[vocab.bos_id, vocab.boi_id] for _ in captions]

    def encode(text):
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    return [[vocab.bos_id] + encode(c) + encode(T2I_INSTRUCTIONS[0]) + [vocab.boi_id] for c in captions]


def _tokenizer(data_cfg):
    path = getattr(data_cfg, "tokenizer", None)
    return AutoTokenizer.from_pretrained(path) if path else None


def log_t2i_samples(trainer) -> None:
    """Called every ``sampling.interval`` steps on all ranks; rank 0 writes the grid and logs it."""
    s, module = trainer.cfg.sampling, trainer.module
    if module.pp > 1 or len(module.model) > 1:
        logger.info("T2I samples need pipeline_parallel=1; skipped")
        return
    vocab = module.vocab
    num_tokens = s.image_tokens or trainer.data.image_tokens or vocab.num_image_tokens
    side = int(math.isqrt(num_tokens))
    captions = list(s.prompts)
    model = module.model[0]
    model.eval()
    try:
        codes = generate_image_tokens(MegatronCausalLM(model), t2i_prompts(vocab, _tokenizer(trainer.cfg.data),
                                                                            captions),
                                      [vocab.bos_id, vocab.uncond_id, vocab.boi_id], side * side,
                                      vocab.image_token_offset, vocab.image_token_end, vocab.pad_id, s.sampler,
                                      use_cache=False)
    finally:
        model.train()
    if not trainer.is_logging_rank:
        return
    vq = load_vq_tokenizer(sampling_vq(trainer.cfg, vocab)[0], device="cpu")  # checked by preflight
    codes = (codes.cpu() - vocab.image_token_offset).view(-1, side, side).clamp(0, vq.codebook_size - 1)
    pixels = vq.decode(codes).float().clamp(-1, 1)
    images = ((pixels + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    path = os.path.join(trainer.run_dir, "samples", f"t2i_step{trainer.state.iteration:07d}.png")
    save_image_grid(images, path, captions)
    trainer.log_image("t2i_samples", path, trainer.state.iteration)
