"""Procedural drafts: the cheap stand-in for a Stable Diffusion draft.

A draft of strength t in [0, 1] is `(1 - t) * blur(image, sigma(t)) + t * noise`: t = 0 is the clean
picture, t = 1 pure noise. Training samples t per picture (pure noise included, so the model learns to
draw from text alone); the sampler (scheduler.py) walks t down from 1, feeding each output back as the next draft.
Everything is batched tensor work on any device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

MAX_BLUR = 0.06  # blur sigma at t = 1, as a fraction of the picture side


Generators = torch.Generator | list[torch.Generator] | None


def randn(shape: tuple[int, ...], generator: Generators = None, device: torch.device | str = "cpu") -> torch.Tensor:
    """Standard normal noise; with a list of generators, row i comes from generator i alone, so a
    picture's noise does not depend on what else is in the batch."""
    if isinstance(generator, list):
        if len(generator) != shape[0]:
            raise ValueError(f"got {len(generator)} generators for a batch of {shape[0]}")
        rows = [torch.randn(shape[1:], generator=g, device=g.device) for g in generator]
        return torch.stack(rows).to(device)
    gen_device = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=gen_device).to(device)


def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur each picture with its own sigma (pixels), as one separable grouped convolution. Each kernel reaches
    3 sigma of its own picture (taps past that are zero), so a picture blurs alike in any batch: a step split
    over processes or accumulation passes draws what the whole batch would."""
    b, c, h, w = images.shape
    reach = torch.tensor([max(1, int(3 * s + 0.5)) for s in sigma.tolist()], device=images.device)
    radius = int(reach.max())
    offsets = torch.arange(-radius, radius + 1, device=images.device, dtype=images.dtype)
    s = sigma.to(images.dtype).clamp(min=1e-3).view(b, 1)
    kernel = torch.exp(-0.5 * (offsets.view(1, -1) / s) ** 2) * (offsets.abs().view(1, -1) <= reach.view(b, 1))
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # (b*c, k)
    x = F.pad(images.reshape(1, b * c, h, w), (radius, radius, radius, radius), mode="replicate")
    x = F.conv2d(x, kernel.view(b * c, 1, 1, -1), groups=b * c)
    x = F.conv2d(x, kernel.view(b * c, 1, -1, 1), groups=b * c)
    return x.view(b, c, h, w)


def degrade(images: torch.Tensor, strength: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """`(1 - t) * blur(images, sigma(t)) + t * noise` at per-picture strength t (shape (B,))."""
    t = strength.to(images.dtype).view(-1, 1, 1, 1)
    return (1 - t) * blurred(images, strength) + t * noise


def blurred(images: torch.Tensor, strength: torch.Tensor) -> torch.Tensor:
    return gaussian_blur(images, MAX_BLUR * images.shape[-1] * strength.to(images.dtype))


def implied_noise(draft: torch.Tensor, prediction: torch.Tensor, strength: torch.Tensor) -> torch.Tensor:
    """The noise a draft of strength t holds if `prediction` is the clean picture (inverts `degrade`)."""
    t = strength.to(draft.dtype).view(-1, 1, 1, 1)
    return (draft - (1 - t) * blurred(prediction, strength)) / t


def make_draft(images: torch.Tensor, strength: torch.Tensor, generator: Generators = None) -> torch.Tensor:
    """Blurred, noised silhouettes of `images` (in [-1, 1]) at per-picture `strength` t (shape (B,))."""
    noise = randn(tuple(images.shape), generator, device=images.device).to(images.dtype)
    return degrade(images, strength, noise)


def sample_strengths(batch: int, generator: torch.Generator | None = None, pure_noise: float = 0.3,
                     skew: float = 2.0) -> torch.Tensor:
    """Draft strengths for training: `pure_noise` of them exactly 1 (text alone); the rest in (0, 1),
    skewed towards strong noise (1 - (1 - u)**skew, mean skew / (skew + 1)), where drawing is hardest."""
    u = torch.rand(batch, generator=generator)
    t = 1 - (1 - u) ** skew
    pure = torch.rand(batch, generator=generator) < pure_noise
    return torch.where(pure, torch.ones_like(t), t)
