"""A pretrained CNN as the frozen image encoder: EfficientNet-Lite0 from its pip package, its feature map as tokens."""

from __future__ import annotations

import pytest
import torch

from omni_gpt2o.checkpoint import load_checkpoint, save_checkpoint
from omni_gpt2o.config import LITE0, get_preset
from omni_gpt2o.model import build_model
from omni_gpt2o.train import TrainConfig, train

from .conftest import MICRO


@pytest.fixture(scope="module")
def micro_lite0():
    """The tests' micro preset with Lite0 reading 64-px drafts: a 4 x 4 grid of 112-wide tokens."""
    from omni_gpt2o.config import PRESETS

    PRESETS["micro-lite0"] = MICRO.replace(**(LITE0 | {"image_input_size": 64}))
    return PRESETS["micro-lite0"]


def test_the_preset_reads_drafts_through_pretrained_lite0():
    model = build_model(get_preset("tiny-lite0"))
    assert model.image_encoder.grid_size == (8, 8) and model.image_encoder.width == 112
    assert not model.config.needs_download and not model.config.builds_image_model
    drafts = torch.rand(2, 3, 64, 64) * 2 - 1
    tokens = model.image_encoder(drafts)
    assert tokens.shape == (2, 64, 112) and torch.isfinite(tokens).all()
    assert not any(p.requires_grad for p in model.image_encoder.parameters())


def test_a_lite0_model_trains_keeps_the_tower_frozen_and_reloads_from_the_package(tmp_path, shapes_splits,
                                                                                  micro_lite0):
    torch.manual_seed(0)
    fresh = build_model(micro_lite0).image_encoder.state_dict()
    train_dir, _ = shapes_splits
    best = train(TrainConfig(data=str(train_dir), out=str(tmp_path / "run"), preset="micro-lite0", batch_size=8,
                             max_steps=3, progress=False, log_every=1, ema_decay=0.0))
    assert not (best / "image_encoder").exists()  # named by package, file and sha256, not copied
    model, _ = load_checkpoint(best)
    assert all(torch.equal(v, fresh[k]) for k, v in model.image_encoder.state_dict().items())
    again = tmp_path / "again"
    save_checkpoint(model, again)
    reloaded, _ = load_checkpoint(again)
    drafts = torch.rand(1, 3, 32, 32) * 2 - 1
    assert torch.equal(reloaded.image_encoder(drafts), model.image_encoder(drafts))
