"""The sampler draws exactly the pictures it drew before (committed as test data).

A small model is built from a seed and its trained parts are shaken with seeded noise (so the zero-initialised
layers draw something); it then draws a few prompts text-alone, with fresh noise (eta), and from a start picture.
Regenerate the golden file only when the sampler is meant to change: OMNI_WRITE_GOLDEN=1 pytest tests/test_golden.py
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from omni_gpt2o.pipeline import OmniGPT2oPipeline

GOLDEN = Path(__file__).parent / "data" / "golden_sampler.png"
PROMPTS = ["a red circle", "a small blue square on the left", "a green triangle above a yellow circle", ""]


def draw_all(model) -> np.ndarray:
    pipe = OmniGPT2oPipeline(model, "cpu", precision="fp32")

    def draw(**kwargs) -> np.ndarray:
        images = pipe(PROMPTS, generator=torch.Generator().manual_seed(7), **kwargs).images
        return np.concatenate([np.asarray(im) for im in images], axis=1)

    start = Image.fromarray(np.full((32, 32, 3), (200, 40, 40), dtype=np.uint8))
    rows = [
        draw(),  # text alone, the defaults
        draw(num_inference_steps=4, guidance_scale=1.0, schedule_power=1.0),  # unguided, equal steps
        draw(num_inference_steps=5, eta=0.5),  # fresh noise mixed in
        draw(draft=start, draft_strength=0.6),  # img2img
    ]
    return np.concatenate(rows, axis=0)


@pytest.mark.numerics
def test_sampler_draws_the_golden_pictures(micro_model):
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in micro_model.trainable_parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.2)
    pictures = draw_all(micro_model)
    if os.environ.get("OMNI_WRITE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        Image.fromarray(pictures).save(GOLDEN)
    golden = np.asarray(Image.open(GOLDEN).convert("RGB"))
    assert pictures.shape == golden.shape
    diff = np.abs(pictures.astype(int) - golden.astype(int))
    assert pictures.std() > 10, "the pictures are flat: the test would not notice a changed sampler"
    # Bit for bit on one machine; another CPU's matmul may round differently, hence the small allowance.
    assert diff.max() <= 2 and (diff > 0).mean() < 0.01, f"max {diff.max()}, changed {(diff > 0).mean():.2%}"
