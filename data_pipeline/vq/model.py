"""Chameleon's VQGAN in the taming-transformers module layout.

The module tree mirrors ``taming.modules.diffusionmodules.model`` (Encoder/Decoder) and
``taming.models.vqgan.VQModel`` exactly, so the released ``vqgan.ckpt`` state dict loads with strict key checking
and no renaming. Only the pieces Chameleon's configuration uses are implemented (no timestep embedding, no
conv shortcut, vanilla single-head attention); anything else in a config is rejected in :class:`VQGANConfig`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Tuple

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class VQGANConfig:
    """``model.params`` of a taming ``vqgan.yaml``: ``ddconfig`` fields flattened plus the codebook shape."""

    ch: int = 128
    ch_mult: Tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    attn_resolutions: Tuple[int, ...] = ()
    dropout: float = 0.0
    in_channels: int = 3
    out_ch: int = 3
    resolution: int = 512
    z_channels: int = 256
    double_z: bool = False
    n_embed: int = 8192
    embed_dim: int = 256
    beta: float = 0.25

    def __post_init__(self) -> None:
        self.ch_mult = tuple(int(m) for m in self.ch_mult)
        self.attn_resolutions = tuple(int(r) for r in (self.attn_resolutions or ()))
        for mult in self.ch_mult:
            if (self.ch * mult) % 32:
                raise ValueError(f"VQGAN ch*ch_mult must be a multiple of 32 (GroupNorm(32)); got ch={self.ch}, mult={mult}")
        if self.z_channels % 32:
            raise ValueError(f"VQGAN z_channels must be a multiple of 32 (GroupNorm(32)); got {self.z_channels}")
        if self.double_z:
            raise ValueError("double_z=True is a KL-autoencoder setting; a VQGAN uses double_z=False")

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)

    def ddconfig(self) -> Dict[str, Any]:
        keys = ("ch", "ch_mult", "num_res_blocks", "attn_resolutions", "dropout", "in_channels", "out_ch",
                "resolution", "z_channels", "double_z")
        d = {k: getattr(self, k) for k in keys}
        d["ch_mult"] = list(d["ch_mult"])
        d["attn_resolutions"] = list(d["attn_resolutions"])
        return d

    @classmethod
    def from_model_params(cls, params: Dict[str, Any]) -> "VQGANConfig":
        """Build from a taming yaml's ``model.params`` (``ddconfig`` + ``n_embed`` + ``embed_dim``)."""
        if "ddconfig" not in params or "n_embed" not in params or "embed_dim" not in params:
            raise ValueError("vqgan.yaml model.params must contain 'ddconfig', 'n_embed' and 'embed_dim'; "
                             f"found keys {sorted(params)}")
        dd = dict(params["ddconfig"])
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(dd) - known)
        if unknown:
            raise ValueError(f"vqgan.yaml ddconfig has unsupported keys {unknown}; supported: {sorted(known)}")
        return cls(**dd, n_embed=int(params["n_embed"]), embed_dim=int(params["embed_dim"]),
                   beta=float(params.get("beta", 0.25)))

    def to_model_params(self) -> Dict[str, Any]:
        return {"embed_dim": self.embed_dim, "n_embed": self.n_embed, "ddconfig": self.ddconfig()}


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


def _swish(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=1, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Downsample(nn.Module):
    """Asymmetric (0,1,0,1) zero pad + stride-2 3x3 conv, as taming does (torch convs only pad symmetrically)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=0)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0))


class ResnetBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.norm1 = _norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1)
        self.norm2 = _norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=1, padding=1)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=1, padding=0)

    def forward(self, x):
        h = self.conv1(_swish(self.norm1(x)))
        h = self.conv2(self.dropout(_swish(self.norm2(h))))
        if self.in_channels != self.out_channels:
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head spatial self-attention with 1x1-conv projections (taming's ``AttnBlock``)."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = _norm(channels)
        self.q = nn.Conv2d(channels, channels, kernel_size=1)
        self.k = nn.Conv2d(channels, channels, kernel_size=1)
        self.v = nn.Conv2d(channels, channels, kernel_size=1)
        self.proj_out = nn.Conv2d(channels, channels, kernel_size=1)

    def forward(self, x):
        h = self.norm(x)
        q, k, v = self.q(h), self.k(h), self.v(h)
        b, c, hh, ww = q.shape
        q = q.reshape(b, c, hh * ww).permute(0, 2, 1)  # b, hw, c
        k = k.reshape(b, c, hh * ww)  # b, c, hw
        w = torch.bmm(q, k) * (int(c) ** (-0.5))
        w = F.softmax(w, dim=2)
        v = v.reshape(b, c, hh * ww)
        h = torch.bmm(v, w.permute(0, 2, 1)).reshape(b, c, hh, ww)
        return x + self.proj_out(h)


class Encoder(nn.Module):
    def __init__(self, cfg: VQGANConfig):
        super().__init__()
        self.num_resolutions = len(cfg.ch_mult)
        self.num_res_blocks = cfg.num_res_blocks
        self.conv_in = nn.Conv2d(cfg.in_channels, cfg.ch, kernel_size=3, stride=1, padding=1)
        curr_res = cfg.resolution
        in_ch_mult = (1,) + tuple(cfg.ch_mult)
        self.down = nn.ModuleList()
        block_in = cfg.ch
        for i_level in range(self.num_resolutions):
            block, attn = nn.ModuleList(), nn.ModuleList()
            block_in = cfg.ch * in_ch_mult[i_level]
            block_out = cfg.ch * cfg.ch_mult[i_level]
            for _ in range(self.num_res_blocks):
                block.append(ResnetBlock(block_in, block_out, cfg.dropout))
                block_in = block_out
                if curr_res in cfg.attn_resolutions:
                    attn.append(AttnBlock(block_in))
            down = nn.Module()
            down.block, down.attn = block, attn
            if i_level != self.num_resolutions - 1:
                down.downsample = Downsample(block_in)
                curr_res //= 2
            self.down.append(down)
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(block_in, block_in, cfg.dropout)
        self.mid.attn_1 = AttnBlock(block_in)
        self.mid.block_2 = ResnetBlock(block_in, block_in, cfg.dropout)
        self.norm_out = _norm(block_in)
        self.conv_out = nn.Conv2d(block_in, cfg.z_channels, kernel_size=3, stride=1, padding=1)

    def forward(self, x):
        h = self.conv_in(x)
        for i_level in range(self.num_resolutions):
            level = self.down[i_level]
            for i_block in range(self.num_res_blocks):
                h = level.block[i_block](h)
                if len(level.attn) > 0:
                    h = level.attn[i_block](h)
            if i_level != self.num_resolutions - 1:
                h = level.downsample(h)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        return self.conv_out(_swish(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, cfg: VQGANConfig):
        super().__init__()
        self.num_resolutions = len(cfg.ch_mult)
        self.num_res_blocks = cfg.num_res_blocks
        block_in = cfg.ch * cfg.ch_mult[-1]
        curr_res = cfg.resolution // 2 ** (self.num_resolutions - 1)
        self.conv_in = nn.Conv2d(cfg.z_channels, block_in, kernel_size=3, stride=1, padding=1)
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(block_in, block_in, cfg.dropout)
        self.mid.attn_1 = AttnBlock(block_in)
        self.mid.block_2 = ResnetBlock(block_in, block_in, cfg.dropout)
        self.up = nn.ModuleList()
        levels = []
        for i_level in reversed(range(self.num_resolutions)):
            block, attn = nn.ModuleList(), nn.ModuleList()
            block_out = cfg.ch * cfg.ch_mult[i_level]
            for _ in range(self.num_res_blocks + 1):
                block.append(ResnetBlock(block_in, block_out, cfg.dropout))
                block_in = block_out
                if curr_res in cfg.attn_resolutions:
                    attn.append(AttnBlock(block_in))
            up = nn.Module()
            up.block, up.attn = block, attn
            if i_level != 0:
                up.upsample = Upsample(block_in)
                curr_res *= 2
            levels.insert(0, up)
        self.up.extend(levels)
        self.norm_out = _norm(block_in)
        self.conv_out = nn.Conv2d(block_in, cfg.out_ch, kernel_size=3, stride=1, padding=1)

    def forward(self, z):
        h = self.conv_in(z)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        for i_level in reversed(range(self.num_resolutions)):
            level = self.up[i_level]
            for i_block in range(self.num_res_blocks + 1):
                h = level.block[i_block](h)
                if len(level.attn) > 0:
                    h = level.attn[i_block](h)
            if i_level != 0:
                h = level.upsample(h)
        return self.conv_out(_swish(self.norm_out(h)))


class VectorQuantizer(nn.Module):
    """Nearest codebook entry by plain squared Euclidean distance (no l2 normalisation, no EMA)."""

    def __init__(self, n_embed: int, embed_dim: int, beta: float = 0.25):
        super().__init__()
        self.n_embed, self.embed_dim, self.beta = n_embed, embed_dim, beta
        self.embedding = nn.Embedding(n_embed, embed_dim)
        self.embedding.weight.data.uniform_(-1.0 / n_embed, 1.0 / n_embed)

    @torch.no_grad()
    def indices(self, z: torch.Tensor, rows_per_chunk: int = 16384) -> torch.Tensor:
        """``z`` [B, C, h, w] -> LongTensor [B, h, w]. Distances in fp32, computed in row chunks to bound memory.

        The distance expression is the one taming (and ``transformers``' ChameleonVQVAE) use,
        ``|z|^2 + |e|^2 - 2 z.e``, so argmin ties resolve identically.
        """
        b, c, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, c).float()
        emb = self.embedding.weight.float()
        emb_sq = torch.sum(emb ** 2, dim=1)
        out = torch.empty(flat.shape[0], dtype=torch.long, device=z.device)
        for start in range(0, flat.shape[0], rows_per_chunk):
            rows = flat[start:start + rows_per_chunk]
            dist = torch.sum(rows ** 2, dim=1, keepdim=True) + emb_sq - 2 * torch.einsum("bd,dn->bn", rows, emb.t())
            out[start:start + rows_per_chunk] = torch.argmin(dist, dim=1)
        return out.view(b, h, w)

    def forward(self, z: torch.Tensor):
        """Training path: straight-through quantisation and the VQ loss (commitment weighted by ``beta``)."""
        idx = self.indices(z.detach())
        z_q = self.embedding(idx).permute(0, 3, 1, 2).to(z.dtype)
        loss = torch.mean((z_q.detach() - z) ** 2) + self.beta * torch.mean((z_q - z.detach()) ** 2)
        z_q = z + (z_q - z).detach()
        return z_q, loss, idx

    def embed(self, codes: torch.Tensor) -> torch.Tensor:
        return self.embedding(codes).permute(0, 3, 1, 2).contiguous()


class VQModel(nn.Module):
    """taming's ``VQModel``: encoder -> quant_conv -> quantize ; post_quant_conv -> decoder."""

    def __init__(self, cfg: VQGANConfig):
        super().__init__()
        self.config = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.quantize = VectorQuantizer(cfg.n_embed, cfg.embed_dim, cfg.beta)
        self.quant_conv = nn.Conv2d(cfg.z_channels, cfg.embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(cfg.embed_dim, cfg.z_channels, 1)

    @property
    def codebook_size(self) -> int:
        return self.config.n_embed

    @property
    def downsample_factor(self) -> int:
        return self.config.downsample_factor

    def encode_latents(self, x: torch.Tensor) -> torch.Tensor:
        return self.quant_conv(self.encoder(x))

    @torch.no_grad()
    def encode_indices(self, x: torch.Tensor) -> torch.Tensor:
        return self.quantize.indices(self.encode_latents(x))

    def decode_latents(self, z_q: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(z_q))

    @torch.no_grad()
    def decode_indices(self, codes: torch.Tensor) -> torch.Tensor:
        z_q = self.quantize.embed(codes).to(self.post_quant_conv.weight.dtype)
        return self.decode_latents(z_q).float().clamp_(-1.0, 1.0)

    def forward(self, x: torch.Tensor):
        """Reconstruction and VQ loss, for training (returns ``(reconstruction, vq_loss, indices)``)."""
        z_q, vq_loss, idx = self.quantize(self.encode_latents(x))
        return self.decode_latents(z_q), vq_loss, idx
