"""The palette decoder (decoder_palette): fitted colours, flat pictures, a loss that trains, weights that reload."""

import json

import numpy as np
import pytest
import torch

from omni_gpt2o.checkpoint import load_checkpoint
from omni_gpt2o.config import get_preset
from omni_gpt2o.model import LossWeights, build_model, compute_losses
from omni_gpt2o.palette import Palette
from omni_gpt2o.pipeline import OmniGPT2oPipeline
from omni_gpt2o.train import TrainConfig, train

FLAT = torch.tensor([[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0], [1.0, 0.8, -0.6], [-0.2, 0.4, 1.0]])


def flat_pictures(n: int = 6, size: int = 16) -> torch.Tensor:
    """Quarters in four flat colours, their borders blended (anti-aliasing), as drawings are at small sizes."""
    g = torch.Generator().manual_seed(0)
    pictures = []
    for _ in range(n):
        order = torch.randperm(4, generator=g)
        quarters = FLAT[order].view(2, 2, 3).permute(2, 0, 1)  # (3, 2, 2)
        picture = torch.nn.functional.interpolate(quarters[None], size=size, mode="nearest")[0]
        picture[:, size // 2] = (picture[:, size // 2 - 1] + picture[:, size // 2 + 1]) / 2  # a blended row
        pictures.append(picture)
    return torch.stack(pictures)


def test_fit_puts_a_colour_on_every_flat_colour_and_none_on_the_blends():
    palette = Palette(4)
    palette.fit(flat_pictures())
    distance = torch.cdist(FLAT, palette.colours).min(dim=1).values
    assert distance.max() < 0.05  # each flat colour has its own centre; with 4 centres, no blend took one


def test_scores_give_the_expected_and_the_most_likely_colour():
    palette = Palette(3)
    palette.colours.copy_(FLAT[:3])
    logits = torch.full((1, 3, 2, 2), -30.0, dtype=torch.float64)
    logits[0, 2] = 30.0  # every pixel sure of colour 2
    logits[0, :, 0, 0] = 0.0  # one pixel torn evenly
    sure = palette.most_likely(logits)
    assert torch.equal(sure[0, :, 1, 1], FLAT[2].double())
    expected = palette.expected(logits)
    torch.testing.assert_close(expected[0, :, 0, 0], FLAT[:3].double().mean(0))  # the mean of the three
    torch.testing.assert_close(expected[0, :, 1, 1], FLAT[2].double())
    assert torch.equal(palette.nearest(sure.float()), logits.argmax(dim=1))  # each pixel is its own colour


def test_bad_palette_sizes_are_one_clear_error():
    with pytest.raises(ValueError, match="decoder_palette"):
        get_preset("micro").replace(decoder_palette=1)
    with pytest.raises(ValueError, match="at least 2"):
        Palette(1)


@pytest.fixture
def palette_model():
    torch.manual_seed(0)
    model = build_model(get_preset("micro").replace(decoder_palette=6))
    model.palette.fit(flat_pictures(size=32))
    return model


def test_the_decoder_scores_palette_colours_and_its_loss_is_the_cross_entropy(palette_model):
    m = palette_model
    ids, mask = m.tokenize(["a red circle", "a blue square"])
    draft = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    out = m(ids, mask, draft, torch.ones(2))
    assert out.palette_logits.shape == (2, 6, 32, 32)
    torch.testing.assert_close(out.image, m.palette.expected(out.palette_logits))
    clean = flat_pictures(2, 32)
    losses = compute_losses(out, clean, None, LossWeights(palette=2.0), m.palette)
    expected_ce = torch.nn.functional.cross_entropy(out.palette_logits, m.palette.nearest(clean))
    torch.testing.assert_close(losses["palette"], expected_ce)
    plain = compute_losses(out, clean, None, LossWeights(palette=2.0))  # without the palette: no such term
    torch.testing.assert_close(losses["loss"], plain["loss"] + 2.0 * expected_ce)


def test_the_sampler_draws_only_palette_colours(palette_model):
    pipe = OmniGPT2oPipeline(palette_model, "cpu")
    picture = pipe(["a red circle"], num_inference_steps=3, generator=torch.Generator().manual_seed(0),
                   output_type="pt").images[0]  # (3, H, W) in [0, 1]
    colours = ((palette_model.palette.colours.clamp(-1, 1) + 1) / 2)
    nearest = torch.cdist(picture.permute(1, 2, 0).reshape(-1, 3), colours).min(dim=1).values
    assert nearest.max() < 1e-5


def test_a_palette_run_fits_its_colours_learns_and_reloads(tmp_path, shapes_splits):
    train_dir, val_dir = shapes_splits
    out = tmp_path / "run"
    cfg = TrainConfig(data=str(train_dir), val_data=str(val_dir), out=str(out), preset="micro", batch_size=8,
                      learning_rate=3e-3, warmup_epochs=0.1, ema_decay=0.9, progress=False, log_every=1,
                      sample_steps=2, epochs=3, model_overrides={"decoder_palette": 8})
    train(cfg)
    history = json.loads((out / "checkpoints" / "last" / "trainer_state.json").read_text())["history"]
    ce = [h["palette"] for h in history if "palette" in h]
    assert len(ce) == 36 and np.mean(ce[-6:]) < 0.6 * np.mean(ce[:3])  # it learns which colour goes where
    model, _ = load_checkpoint(out / "checkpoints" / "last")
    colours = model.palette.colours
    assert colours.shape == (8, 3)
    black = torch.full((3,), -1.0)  # the Shapes background, most of every picture
    assert torch.cdist(black[None], colours).min() < 0.05
    spread = colours.max(dim=1).values - colours.min(dim=1).values
    assert spread.max() > 1.5  # saturated shape colours: fitted on the pictures, not the grey ramp it starts as
