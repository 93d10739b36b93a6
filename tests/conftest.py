"""Shared fixtures: a `micro` preset (the `tiny` design, smaller still) and small Shapes splits."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach for the network
torch.set_num_threads(min(2, torch.get_num_threads()))

from omni_gpt2o.config import PRESETS, get_preset  # noqa: E402
from omni_gpt2o.data.shapes import make_shapes  # noqa: E402

MICRO = get_preset("tiny").replace(
    text_model_config=dict(n_layer=2, n_embd=64, n_head=2, n_positions=64),
    max_text_tokens=24,
    image_model_kwargs=dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2),
    image_size=32,
    latent_dim=8,
    decoder_channels=(16, 32),
    decoder_attention_levels=(0, 1),
    decoder_heads=2,
)


PRESETS["micro"] = MICRO  # registered for the tests only, so training code can name it like any preset


@pytest.fixture
def micro_model():
    from omni_gpt2o.model import build_model

    torch.manual_seed(0)
    return build_model(MICRO)


@pytest.fixture(scope="session")
def shapes_splits(tmp_path_factory):
    """Small Shapes train/val splits at 32 px, made once per test session."""
    root = tmp_path_factory.mktemp("shapes")
    train = make_shapes(root / "train", 96, split="train", seed=0, size=32)
    val = make_shapes(root / "val", 16, split="val", seed=0, size=32)
    return train, val


@pytest.fixture
def micro_preset():
    return MICRO
