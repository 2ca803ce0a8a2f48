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

logger = logging.getLogger(__name__)


class MegatronCausalLM:
    """The call surface `inference.sampling.CachedDecoder` uses (``input_ids``, a 2-D padding ``attention_mask``,
    ``position_ids`` -> ``.logits``), over a megatron GPTModel: builds its 4-D mask (True = masked: the future and
    the left pads; every row may see itself so none is empty) and gathers tensor-parallel logits."""

    def __init__(self, model):
        self.model = model

    def parameters(self):
        return self.model.parameters()

    @torch.no_grad()
    def __call__(self, input_ids, attention_mask, position_ids, use_cache=False, past_key_values=None):
        from megatron.core import parallel_state as ps
        from megatron.core.tensor_parallel import gather_from_tensor_model_parallel_region

        if use_cache or past_key_values is not None:
            raise ValueError("MegatronCausalLM has no KV cache; decode with use_cache=False")
        s = input_ids.shape[1]
        device = input_ids.device
        future = torch.triu(torch.ones(s, s, dtype=torch.bool, device=device), 1)[None, None]
        mask = future | (attention_mask == 0)[:, None, None, :]
        mask = mask & ~torch.eye(s, dtype=torch.bool, device=device)[None, None]
        logits = self.model(input_ids, position_ids, mask)
        if ps.get_tensor_model_parallel_world_size() > 1:
            logits = gather_from_tensor_model_parallel_region(logits)
        return SimpleNamespace(logits=logits, past_key_values=None)


def t2i_prompts(vocab, tokenizer, captions: Sequence[str]) -> List[List[int]]:
    """``[bos] caption instruction <boi>`` with caption and instruction tokenized apart, as the T2I template does
    (`data.templates`); without a tokenizer, unconditional-style ``[bos] <boi>`` prompts."""
    from liquid_train.data.config import T2I_INSTRUCTIONS

    if tokenizer is None:
        return [[vocab.bos_id, vocab.boi_id] for _ in captions]

    def encode(text):
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    return [[vocab.bos_id] + encode(c) + encode(T2I_INSTRUCTIONS[0]) + [vocab.boi_id] for c in captions]


def _tokenizer(trainer):
    data = trainer.cfg.data
    path = data.get("tokenizer") if hasattr(data, "get") else getattr(data, "tokenizer", None)
    if not path:
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def log_t2i_samples(trainer, metrics) -> None:
    """Called by the loop every ``sampling.interval`` steps on all ranks; rank 0 writes the grid."""
    from liquid_train.inference.grid import save_image_grid
    from liquid_train.inference.sampling import SamplingConfig, generate_image_tokens

    s = trainer.cfg.sampling
    if trainer.pp > 1 or len(trainer.model) > 1:
        logger.info("T2I samples need pipeline_parallel=1; skipped")
        return
    vocab = trainer.vocab
    num_tokens = s.image_tokens or trainer.data.image_tokens or vocab.num_image_tokens
    side = int(math.isqrt(num_tokens))
    captions = list(s.prompts)
    # sampling.top_k == 0 means greedy here (the training config's convention); the inference sampler's is temperature 0
    sampling = SamplingConfig(cfg_scale=s.cfg_scale, temperature=s.temperature if s.top_k else 0.0,
                              top_k=s.top_k, top_p=1.0, seed=s.seed)
    model = trainer.model[0]
    model.eval()
    try:
        codes = generate_image_tokens(MegatronCausalLM(model), t2i_prompts(vocab, _tokenizer(trainer), captions),
                                      [vocab.bos_id, vocab.uncond_id, vocab.boi_id], side * side,
                                      vocab.image_token_offset, vocab.image_token_end, vocab.pad_id, sampling,
                                      use_cache=False)
    finally:
        model.train()
    if not trainer.is_logging_rank:
        return
    from data_pipeline.vq import load_vq_tokenizer

    from liquid_train.image_meta import sampling_vq

    vq = load_vq_tokenizer(sampling_vq(trainer.cfg, vocab)[0], device="cpu")  # checked by preflight
    codes = (codes.cpu() - vocab.image_token_offset).view(-1, side, side).clamp(0, vq.codebook_size - 1)
    pixels = vq.decode(codes).float().clamp(-1, 1)
    images = ((pixels + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    path = os.path.join(trainer.run_dir, "samples", f"t2i_step{trainer.iteration:07d}.png")
    save_image_grid(images, path, captions)
    metrics.log_image("t2i_samples", path, trainer.iteration)
