"""T2I samples during training: fixed prompts, classifier-free guidance, decoded by the VQ decoder into a PNG grid.

Why so simple: this is a training-progress picture, not the sampler (``tools/sample.py`` has the KV cache,
top-p and batching). Each image token is drawn from the full forward pass of the megatron model on the
sequence so far (no KV cache), cond and uncond in one batch, logits restricted to the image ids:
``uncond + scale * (cond - uncond)``; greedy when ``top_k == 0``. Needs pipeline_parallel == 1 (skipped
otherwise, with a log line).
"""
from __future__ import annotations

import logging
import os

import torch

logger = logging.getLogger(__name__)


def _causal_inputs(tokens: torch.Tensor):
    b, s = tokens.shape
    pos = torch.arange(s, device=tokens.device).expand(b, s)
    mask = torch.triu(torch.ones(s, s, dtype=torch.bool, device=tokens.device), 1)[None, None].expand(b, 1, s, s)
    return pos, mask


@torch.no_grad()
def generate_image_codes(model, vocab, prompt_ids, num_tokens: int, cfg_scale: float, temperature: float = 1.0,
                         top_k: int = 0, generator=None):
    """``prompt_ids``: list of token-id lists (each ends with <boi>). Returns codes [n, num_tokens]."""
    from megatron.core import parallel_state as ps
    from megatron.core.tensor_parallel import gather_from_tensor_model_parallel_region

    n = len(prompt_ids)
    uncond = [vocab.bos_id, vocab.uncond_id, vocab.boi_id]
    seqs = [list(p) for p in prompt_ids] + [list(uncond) for _ in range(n)]
    codes = []
    for _ in range(num_tokens):
        width = max(len(s) for s in seqs)
        # right-align with pad on the left; the causal mask also hides the left pads from the real tokens
        batch = torch.full((len(seqs), width), vocab.pad_id, dtype=torch.long)
        for i, s in enumerate(seqs):
            batch[i, width - len(s):] = torch.tensor(s)
        device = next(model.parameters()).device
        batch = batch.to(device)
        pos, mask = _causal_inputs(batch)
        pad = torch.zeros_like(batch, dtype=torch.bool)
        for i, s in enumerate(seqs):
            pad[i, :width - len(s)] = True
            pos[i] = torch.clamp(torch.arange(width, device=device) - (width - len(s)), min=0)
        mask = mask | pad[:, None, None, :]
        mask = mask & ~torch.eye(width, dtype=torch.bool, device=device)[None, None]  # pads attend to themselves
        logits = model(batch, pos, mask)[:, -1, :].float()
        if ps.get_tensor_model_parallel_world_size() > 1:
            logits = gather_from_tensor_model_parallel_region(logits)
        logits = logits[:, vocab.image_token_offset:vocab.image_token_end]
        guided = logits[n:] + cfg_scale * (logits[:n] - logits[n:])
        if top_k and top_k > 0:
            values, idx = torch.topk(guided / max(temperature, 1e-5), min(top_k, guided.shape[-1]))
            choice = torch.multinomial(torch.softmax(values, -1).cpu(), 1, generator=generator).to(idx.device)
            step = idx.gather(-1, choice).squeeze(-1)
        else:
            step = guided.argmax(-1)
        codes.append(step.cpu())
        for i in range(n):
            tok = int(step[i]) + vocab.image_token_offset
            seqs[i].append(tok)
            seqs[n + i].append(tok)
    return torch.stack(codes, dim=1)


def _prompt_ids(trainer, prompts):
    cfg = trainer.cfg
    tok_path = cfg.data.get("tokenizer") if hasattr(cfg.data, "get") else None
    vocab = trainer.vocab
    if not tok_path:
        return [[vocab.bos_id, vocab.boi_id] for _ in prompts]  # no tokenizer: unconditional-style prompts
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tok_path)
    suffix = " Generate an image based on this description."
    return [[vocab.bos_id] + tok(p + suffix, add_special_tokens=False)["input_ids"] + [vocab.boi_id] for p in prompts]


def log_t2i_samples(trainer, metrics) -> None:
    """Called by the loop every ``sampling.interval`` steps on all ranks; rank 0 writes the grid."""
    s = trainer.cfg.sampling
    if trainer.pp > 1 or len(trainer.model) > 1:
        logger.info("T2I samples need pipeline_parallel=1; skipped")
        return
    import math

    import numpy as np
    from PIL import Image

    from data_pipeline.vq import load_vq_tokenizer

    vocab = trainer.vocab
    num_tokens = s.image_tokens or trainer.data.image_tokens or vocab.num_image_tokens
    side = int(math.isqrt(num_tokens))
    model = trainer.model[0]
    model.eval()
    try:
        gen = torch.Generator().manual_seed(s.seed)
        codes = generate_image_codes(model, vocab, _prompt_ids(trainer, list(s.prompts)), side * side, s.cfg_scale,
                                     s.temperature, s.top_k, gen)
    finally:
        model.train()
    if not trainer.is_logging_rank:
        return
    vq = load_vq_tokenizer(s.vq_tokenizer or vocab.vq_tokenizer, device="cpu")
    pixels = vq.decode(codes.view(-1, side, side).clamp(0, vq.codebook_size - 1)).float().clamp(-1, 1)
    images = ((pixels + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    h, w = images.shape[1:3]
    grid = np.zeros((h, w * len(images), 3), np.uint8)
    for i, im in enumerate(images):
        grid[:, i * w:(i + 1) * w] = im
    out_dir = os.path.join(trainer.run_dir, "samples")
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"t2i_step{trainer.iteration:07d}.png")
    tmp = path + ".tmp.png"
    Image.fromarray(grid).save(tmp)
    os.replace(tmp, path)
    metrics.log_image("t2i_samples", path, trainer.iteration)
