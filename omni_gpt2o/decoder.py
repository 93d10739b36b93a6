"""The trained pixel decoder: latent grid (+ draft, + text context) -> image (or, with a palette, a score per
palette colour at each pixel: palette.py).

A small U-Net. Its encoder half reads the draft picture; the VAE latent grid (one latent per ViT patch)
enters at the bottleneck; cross-attention lets chosen levels read GPT-2's token states; the draft
strength t and the pooled prompt condition every residual block (FiLM), as a diffusion timestep does.
It predicts the clean image.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _groups(channels: int) -> int:
    return math.gcd(8, channels)


def strength_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features of the draft strength t in [0, 1]."""
    half = dim // 2
    freqs = torch.exp(-math.log(1000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = 1000.0 * t.float().view(-1, 1) * freqs.view(1, -1)
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class ResBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, emb_dim: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(in_ch), in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.film = nn.Linear(emb_dim, 2 * out_ch)  # scale and shift from the strength embedding
        self.norm2 = nn.GroupNorm(_groups(out_ch), out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # start as identity: stable early training
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(F.silu(h))
        return self.skip(x) + h


class CrossAttention(nn.Module):
    """Pixels (queries) attend to GPT-2's token states (keys, values)."""

    def __init__(self, channels: int, context_dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(_groups(channels), channels)
        self.to_q = nn.Linear(channels, channels, bias=False)
        self.to_kv = nn.Linear(context_dim, 2 * channels, bias=False)
        self.out = nn.Linear(channels, channels)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor,
                values: torch.Tensor | None = None) -> torch.Tensor:
        """`values`: other token states to read (same length as `context`, which then gives the keys only)."""
        b, c, h, w = x.shape
        q = self.to_q(self.norm(x).flatten(2).transpose(1, 2))  # (b, hw, c)
        if values is None:
            k, v = self.to_kv(context).chunk(2, dim=-1)  # (b, T, c)
        else:
            to_k, to_v = self.to_kv.weight.chunk(2, dim=0)
            k, v = F.linear(context, to_k), F.linear(values, to_v)

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, -1, self.heads, c // self.heads).transpose(1, 2)

        # Plain matmul attention: with a context of a few dozen tokens it beats the fused kernel, whose
        # CPU backward pass is slow at these shapes (bench/speed.py: a tiny training step ~12% faster).
        q, k, v = split(q), split(k), split(v)
        scores = (q @ k.transpose(-1, -2)) * (c // self.heads) ** -0.5
        scores = scores.masked_fill(~context_mask.bool()[:, None, None, :], float("-inf"))  # skip padding
        attn = (scores.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, h * w, c)
        return x + self.out(attn).transpose(1, 2).view(b, c, h, w)


class Level(nn.Module):
    """Residual blocks at one resolution, optionally each followed by cross-attention."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, blocks: int, context_dim: int | None, heads: int):
        super().__init__()
        self.blocks = nn.ModuleList(ResBlock(in_ch if i == 0 else out_ch, out_ch, emb_dim) for i in range(blocks))
        self.attns = nn.ModuleList(
            CrossAttention(out_ch, context_dim, heads) for _ in range(blocks)
        ) if context_dim is not None else None

    def forward(self, x, emb, context, context_mask, values=None):
        for i, block in enumerate(self.blocks):
            x = block(x, emb)
            if self.attns is not None:
                x = self.attns[i](x, context, context_mask, values)
        return x


class PixelDecoder(nn.Module):
    def __init__(self, latent_dim: int, context_dim: int, channels: tuple[int, ...],
                 attention_levels: tuple[int, ...], blocks: int = 1, heads: int = 4, patch: int = 1,
                 pixel_channels: int = 0, text_pool: bool = True, palette: int = 0):
        super().__init__()
        self.patch = patch
        emb_dim = 4 * channels[0]
        self.emb_dim = emb_dim
        self.strength_mlp = nn.Sequential(nn.Linear(emb_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        # The prompt as a whole (mean of GPT-2's token states) joins the strength in every block's FiLM,
        # so even the full-resolution blocks, which have no cross-attention, know what to draw. `text_pool=False`
        # leaves it out: each place then learns the prompt only from the words its cross-attention reads.
        self.text_pool = (nn.Sequential(nn.LayerNorm(context_dim), nn.Linear(context_dim, emb_dim))
                          if text_pool else None)
        self.conv_in = nn.Conv2d(3 * patch**2, channels[0], 3, padding=1)

        def ctx(level: int) -> int | None:
            return context_dim if level in attention_levels else None

        n = len(channels)
        self.down = nn.ModuleList(
            Level(channels[max(i - 1, 0)], channels[i], emb_dim, blocks, ctx(i), heads) for i in range(n)
        )
        self.downsample = nn.ModuleList(
            nn.Conv2d(channels[i], channels[i], 3, stride=2, padding=1) for i in range(n - 1)
        )
        self.latent_in = nn.Conv2d(latent_dim, channels[-1], 1)
        self.middle = Level(2 * channels[-1], channels[-1], emb_dim, blocks, context_dim, heads)
        self.up = nn.ModuleList(
            Level(channels[i + 1] + channels[i], channels[i], emb_dim, blocks, ctx(i), heads)
            for i in range(n - 1)
        )
        self.norm_out = nn.GroupNorm(_groups(channels[0]), channels[0])
        colours = palette or 3  # a colour per pixel, or a score per palette colour (palette.py)
        out = pixel_channels if patch > 1 and pixel_channels else colours
        self.conv_out = nn.Conv2d(channels[0], out * patch**2, 3, padding=1)
        # Full-resolution head: per-pixel features -> colour, non-linear, a 3 x 3 neighbourhood (cheap: few channels).
        self.pixel_head = nn.Sequential(
            nn.SiLU(), nn.Conv2d(out, out, 3, padding=1), nn.SiLU(), nn.Conv2d(out, colours, 1),
        ) if out != colours else None

    def forward(self, latents: torch.Tensor, draft: torch.Tensor, strength: torch.Tensor,
                context: torch.Tensor, context_mask: torch.Tensor, values: torch.Tensor | None = None) -> torch.Tensor:
        """`context`: the text's token states; `values`: what cross-attention reads from them when it is not
        `context` itself (then also what the pooled prompt averages)."""
        emb = self.strength_mlp(strength_embedding(strength, self.emb_dim).to(draft.dtype))
        if self.text_pool is not None:
            said = context if values is None else values
            weights = context_mask.to(said.dtype).unsqueeze(-1)
            emb = emb + self.text_pool((said * weights).sum(1) / weights.sum(1).clamp(min=1))
        h = self.conv_in(F.pixel_unshuffle(draft, self.patch) if self.patch > 1 else draft)
        skips = []
        for i, level in enumerate(self.down):
            h = level(h, emb, context, context_mask, values)
            if i < len(self.downsample):
                skips.append(h)
                h = self.downsample[i](h)
        if latents.shape[-2:] != h.shape[-2:]:  # ViT grid and decoder bottleneck may differ
            latents = F.interpolate(latents, size=h.shape[-2:], mode="nearest")
        h = self.middle(torch.cat([h, self.latent_in(latents)], dim=1), emb, context, context_mask, values)
        for i in reversed(range(len(self.up))):
            h = F.interpolate(h, scale_factor=2.0, mode="nearest")
            h = self.up[i](torch.cat([h, skips[i]], dim=1), emb, context, context_mask, values)
        out = self.conv_out(F.silu(self.norm_out(h)))
        out = F.pixel_shuffle(out, self.patch) if self.patch > 1 else out
        return self.pixel_head(out) if self.pixel_head is not None else out
