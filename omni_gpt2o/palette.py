"""A fixed colour palette for pictures drawn in flat colours (emoji, icons): the decoder classifies each pixel.

With `decoder_palette=K` the decoder gives K scores per pixel instead of a colour. Training adds a cross-entropy
against each true pixel's nearest palette colour, so a pixel is one colour or another, never the blurred mean of
several, which is what a squared error learns where the decoder is unsure. The picture the rest of the model sees
(the loss on pixels, the sampler's next draft) is the expected colour under the scores; the sampler's last
step draws each pixel in its most likely colour, so the picture is made of palette colours only (the Five-Dollar
Model's output for 16-px emoji, arXiv 2308.04052).

The palette is fitted once on the training pictures before a run (their most common colours, apart from each
other) and saved with the glue, as the text standardiser is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

MIN_DISTANCE = 0.1  # apart from each other (in [-1, 1] RGB): no two palette colours alike


class Palette(nn.Module):
    """K colours in [-1, 1] (a buffer, saved with the glue); grey until fitted."""

    def __init__(self, colours: int):
        super().__init__()
        if colours < 2:
            raise ValueError(f"a palette needs at least 2 colours, got {colours}")
        self.register_buffer("colours", torch.linspace(-1, 1, colours).unsqueeze(1).repeat(1, 3))

    @property
    def size(self) -> int:
        return self.colours.shape[0]

    def expected(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, K, H, W) scores -> (B, 3, H, W): each pixel's expected colour."""
        weights = logits.float().softmax(dim=1)
        return torch.einsum("bkhw,kc->bchw", weights, self.colours.float()).to(logits.dtype)

    def most_likely(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, K, H, W) scores -> (B, 3, H, W): each pixel in its most likely colour."""
        return self.colours[logits.argmax(dim=1)].permute(0, 3, 1, 2).to(logits.dtype)

    def nearest(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) pictures in [-1, 1] -> (B, H, W) index of each pixel's nearest palette colour."""
        pixels = images.float().permute(0, 2, 3, 1)  # (B, H, W, 3)
        distances = (pixels.unsqueeze(-2) - self.colours.float()).pow(2).sum(-1)  # (B, H, W, K)
        return distances.argmin(dim=-1)

    def loss(self, logits: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the scores against each true pixel's nearest palette colour."""
        return F.cross_entropy(logits.float(), self.nearest(clean))

    @torch.no_grad()
    def fit(self, images: torch.Tensor) -> None:
        """The most common colours of (N, 3, H, W) pictures in [-1, 1] (to 1/16 of the range, each the mean of
        its pixels), skipping any within MIN_DISTANCE of one already chosen. Deterministic; in drawings the flat
        colours cover far more pixels than the blends at their edges, so each gets a colour of its own, exact,
        before any blend does (k-means would pull each towards its blends)."""
        pixels = images.float().permute(0, 2, 3, 1).reshape(-1, 3)
        bins = ((pixels + 1) * 8).round().long()  # 0..16 per channel
        keys = (bins[:, 0] * 17 + bins[:, 1]) * 17 + bins[:, 2]
        values, inverse, counts = keys.unique(return_inverse=True, return_counts=True)
        means = torch.zeros(len(values), 3).index_add_(0, inverse, pixels) / counts.unsqueeze(1)
        chosen: list[torch.Tensor] = []
        for colour in means[counts.argsort(descending=True, stable=True)]:
            if all((colour - c).norm() > MIN_DISTANCE for c in chosen):
                chosen.append(colour)
                if len(chosen) == self.size:
                    break
        while len(chosen) < self.size:  # fewer distinct colours than the palette holds: repeat the last
            chosen.append(chosen[-1])
        self.colours.copy_(torch.stack(chosen).clamp(-1, 1))
