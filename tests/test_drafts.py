import pytest
import torch

from omni_gpt2o.drafts import gaussian_blur, make_draft, randn, sample_strengths

from .numerics import assert_same_math


def _pictures(b=4, size=32, dtype=torch.float32):
    torch.manual_seed(0)
    x = -torch.ones(b, 3, size, size)
    x[:, :, 8:20, 10:22] = torch.rand(b, 3, 1, 1) * 2 - 1  # a flat square on black
    return x.to(dtype)


@pytest.mark.numerics
def test_strength_zero_is_the_clean_picture_and_one_is_pure_noise():
    x = _pictures(dtype=torch.float64)  # identities checked in float64 (tests/numerics.py)
    assert_same_math(make_draft(x, torch.zeros(4)), x)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    noise_a = make_draft(x, torch.ones(4), g1)
    noise_b = make_draft(-x, torch.ones(4), g2)
    assert torch.equal(noise_a, noise_b)  # nothing of the picture is left
    assert abs(noise_a.std().item() - 1) < 0.05


def test_middle_strength_keeps_a_blurred_silhouette():
    x = _pictures()
    d = make_draft(x, torch.full((4,), 0.5), torch.Generator().manual_seed(0))
    corr = torch.corrcoef(torch.stack([d.flatten(), x.flatten()]))[0, 1]
    assert 0.2 < corr < 0.99


@pytest.mark.numerics
def test_per_picture_blur_matches_blurring_each_picture_alone():
    x = _pictures(dtype=torch.float64)  # identities checked in float64 (tests/numerics.py)
    sigma = torch.tensor([0.0, 0.5, 1.5, 3.0])
    batched = gaussian_blur(x, sigma)
    for i in range(4):  # each kernel reaches its own 3 sigma, whatever else is in the batch
        assert_same_math(batched[i], gaussian_blur(x[i: i + 1], sigma[i: i + 1])[0])
    assert_same_math(batched[0], x[0])  # sigma 0 leaves the picture alone
    same = gaussian_blur(x[:1].expand(3, -1, -1, -1), torch.tensor([0.0, 1.0, 3.0]))
    steepest = (same[..., 1:] - same[..., :-1]).abs().amax(dim=(1, 2, 3))
    assert steepest[2] < steepest[1] < steepest[0]  # more blur, softer edges


def test_noise_per_picture_does_not_depend_on_the_batch():
    gens = [torch.Generator().manual_seed(s) for s in (1, 2, 3)]
    batch = randn((3, 3, 8, 8), gens)
    alone = randn((1, 3, 8, 8), [torch.Generator().manual_seed(2)])
    assert torch.equal(batch[1], alone[0])
    with pytest.raises(ValueError):
        randn((2, 3, 8, 8), gens)


def test_training_strengths_include_pure_noise_and_lean_strong():
    t = sample_strengths(20000, torch.Generator().manual_seed(0), pure_noise=0.3, skew=2.0)
    assert ((t >= 0) & (t <= 1)).all()
    assert abs((t == 1).float().mean().item() - 0.3) < 0.02
    partial = t[t < 1]
    assert abs(partial.mean().item() - 2 / 3) < 0.02  # skewed towards strong noise
    assert partial.min() < 0.05  # light drafts still occur


@pytest.mark.numerics
def test_implied_noise_inverts_degrade():
    from omni_gpt2o.drafts import degrade, implied_noise

    x = _pictures(dtype=torch.float64)  # an algebraic inverse, checked in float64 (tests/numerics.py)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    t = torch.tensor([0.2, 0.5, 0.8, 1.0])
    assert_same_math(implied_noise(degrade(x, t, noise), x, t), noise)
