"""The sampler's walk from a noisy draft to a picture, as one object (the diffusers scheduler habit).

`set_timesteps` picks the draft strengths to visit, `add_noise` makes a draft of a picture at a strength, and
`step` turns the model's prediction at one strength into the draft at the next: the prediction, blurred and
noised with the noise the current draft holds (the DDIM habit, so choices made early are kept; `eta` > 0
mixes in fresh noise). The pipeline walks the whole schedule; training's rollout steps take single steps
between strengths of their own choosing. Both use this one object.
"""

from __future__ import annotations

import torch

from omni_gpt2o.config import SCHEDULE_POWER
from omni_gpt2o.drafts import Generators, degrade, implied_noise, randn


def sampling_schedule(num_steps: int, start: float = 1.0, power: float = SCHEDULE_POWER) -> list[float]:
    """Strengths the sampler visits: from `start` down to `start * (1 / num_steps) ** power`, never 0;
    power 1 gives equal steps."""
    if num_steps < 1:
        raise ValueError("num_inference_steps must be at least 1")
    if not 0.0 < start <= 1.0:
        raise ValueError("draft strength must be in (0, 1]")
    if power <= 0:
        raise ValueError("schedule power must be positive")
    return [start * (1 - k / num_steps) ** power for k in range(num_steps)]


class DraftScheduler:
    """Draft strengths t in (0, 1] play the part of diffusion timesteps: t = 1 is pure noise."""

    def __init__(self, power: float = SCHEDULE_POWER):
        self.power = power  # the strengths fall as (1 - k / n) ** power
        self.timesteps: list[float] = []

    def set_timesteps(self, num_inference_steps: int, start: float = 1.0, power: float | None = None) -> None:
        """The strengths to visit, from `start` (1: pure noise) down; `power` overrides the scheduler's."""
        self.timesteps = sampling_schedule(num_inference_steps, start, self.power if power is None else power)

    @staticmethod
    def add_noise(images: torch.Tensor, noise: torch.Tensor, strength: torch.Tensor) -> torch.Tensor:
        """The draft of `images` at per-picture `strength` (shape (B,)) holding `noise`."""
        return degrade(images, strength, noise)

    @staticmethod
    def step(prediction: torch.Tensor, strength: torch.Tensor, draft: torch.Tensor, next_strength: torch.Tensor,
             eta: float = 0.0, generator: Generators = None) -> torch.Tensor:
        """The next, weaker draft: `prediction` of the clean picture degraded to `next_strength`, with the
        noise that `draft` (at `strength`) holds given that prediction; `eta` mixes in fresh noise."""
        noise = implied_noise(draft, prediction, strength)
        if eta > 0:
            fresh = randn(tuple(prediction.shape), generator, device=prediction.device)
            noise = (1 - eta**2) ** 0.5 * noise + eta * fresh
        return degrade(prediction, next_strength, noise)
