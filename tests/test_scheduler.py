"""The scheduler: which strengths the sampler visits, and one step between two of them."""

import pytest
import torch

from omni_gpt2o.drafts import degrade
from omni_gpt2o.scheduler import DraftScheduler, sampling_schedule

from .numerics import assert_same_math


def test_sampling_schedule_falls_from_the_start_strength():
    assert sampling_schedule(4, power=1) == [1.0, 0.75, 0.5, 0.25]
    assert sampling_schedule(2, start=0.5, power=1) == [0.5, 0.25]
    with pytest.raises(ValueError):
        sampling_schedule(0)
    with pytest.raises(ValueError):
        sampling_schedule(3, start=1.5)
    with pytest.raises(ValueError):
        sampling_schedule(3, power=0)


def test_schedule_power_lingers_on_weak_noise():
    linear, curved = sampling_schedule(8, power=1), sampling_schedule(8, power=1.5)
    assert curved[0] == linear[0] == 1.0
    assert all(a > b > 0 for a, b in zip(curved, curved[1:]))  # falls, never reaching a clean picture
    assert all(c < lin for c, lin in zip(curved[1:], linear[1:]))  # lighter drafts at every later step
    assert sum(t < 0.25 for t in curved) > sum(t < 0.25 for t in linear)  # more steps spent on weak noise
    assert curved[-1] == pytest.approx((1 / 8) ** 1.5)


@pytest.mark.numerics
def test_a_step_from_the_true_picture_keeps_the_drafts_noise():
    g = torch.Generator().manual_seed(0)
    clean = torch.rand(3, 3, 16, 16, generator=g, dtype=torch.float64) * 2 - 1  # float64: an identity is checked
    noise = torch.randn(clean.shape, generator=g, dtype=torch.float64)
    high, low = torch.tensor([1.0, 0.8, 0.5]), torch.tensor([0.5, 0.3, 0.1])
    draft = DraftScheduler.add_noise(clean, noise, high)
    # Predicting the clean picture exactly, the next draft is that picture at the lower strength, same noise.
    assert_same_math(DraftScheduler.step(clean, high, draft, low), degrade(clean, low, noise))
    fresh = DraftScheduler.step(clean, high, draft, low, eta=1.0, generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(fresh, degrade(clean, low, noise), atol=1e-2)  # eta 1: the noise is all new


def test_set_timesteps_uses_the_schedulers_power_unless_told():
    scheduler = DraftScheduler(power=1.0)
    scheduler.set_timesteps(4)
    assert scheduler.timesteps == [1.0, 0.75, 0.5, 0.25]
    scheduler.set_timesteps(4, start=0.5, power=2.0)
    assert scheduler.timesteps == sampling_schedule(4, 0.5, 2.0)
