"""Trained glue for a frozen LM that reads the prompt alone: per-dimension standardisation of its states, and a
small transformer (the reader) that reads the draft's patches beside them in place of the LM.

With `lm_reads_draft=False` the LM's states depend on the caption only, so they are computed once per distinct
caption and cached (data/text_cache.py): a training step runs the reader and the decoder, never the LM.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class TextStandardizer(nn.Module):
    """Each dimension of each layer read, z-scored with the training captions' statistics (`fit`); the identity
    until fitted. The statistics are buffers, saved with the glue. A pretrained LM's states hold a few dimensions
    hundreds of times larger than the rest: read raw (or layer-normalised, which divides by them) they swamp
    what the other dimensions say."""

    def __init__(self, layers: int, width: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(layers, width))
        self.register_buffer("std", torch.ones(layers, width))

    def forward(self, layers: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return [(h - self.mean[i].to(h.dtype)) / self.std[i].to(h.dtype) for i, h in enumerate(layers)]

    @torch.no_grad()
    def fit(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """(layers, width) statistics over every real token of the training captions (TextStateCache.statistics)."""
        self.mean.copy_(mean)
        self.std.copy_(std.clamp(min=1e-6))


class ReaderBlock(nn.Module):
    """Pre-norm transformer block, every token attending to every real token."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(approximate="tanh"), nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=keep.view(b, 1, 1, n))
        x = x + self.out(attended.transpose(1, 2).reshape(b, n, d))
        return x + self.mlp(self.norm2(x))


class DraftReader(nn.Module):
    """The draft's patches (already projected) read beside the prompt's context: [context, patches] through a
    few trained blocks; the states at the patches go to the latent heads, as the LM's do when it reads both."""

    def __init__(self, text_width: int, width: int, layers: int, heads: int):
        super().__init__()
        self.text_in = nn.Linear(text_width, width)
        self.blocks = nn.ModuleList(ReaderBlock(width, heads) for _ in range(layers))
        self.norm = nn.LayerNorm(width)

    def forward(self, context: torch.Tensor, context_mask: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        t = context.shape[1]
        x = torch.cat([self.text_in(context), patches.to(context.dtype)], dim=1)
        keep = torch.cat([context_mask.bool(), context_mask.new_ones(patches.shape[:2], dtype=torch.bool)], dim=1)
        for block in self.blocks:
            x = block(x, keep)
        return self.norm(x[:, t:])
