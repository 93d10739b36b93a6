"""What a run shows of itself at the end of an epoch: the validation loss and a grid of samples."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from omni_gpt2o.data.dataset import CaptionedImages, collate, to_unit_range
from omni_gpt2o.drafts import make_draft
from omni_gpt2o.model import OmniGPT2o, compute_losses
from omni_gpt2o.pipeline import OmniGPT2oPipeline
from omni_gpt2o.train.config import TrainConfig
from omni_gpt2o.train.step import alignment_targets, loss_weights
from omni_gpt2o.utils import autocast, image_grid


@torch.no_grad()
def validate(model: OmniGPT2o, val_set: CaptionedImages, cfg: TrainConfig, amp, device) -> dict[str, float]:
    """Loss on the validation split at fixed draft strengths and fixed noise, comparable across epochs."""
    model.eval()
    generator = torch.Generator().manual_seed(1234)
    totals: dict[str, float] = {}
    n = 0
    loader = DataLoader(val_set, batch_size=cfg.batch_size, collate_fn=collate)
    for batch in loader:
        if not batch.captions:
            continue
        clean, captions = to_unit_range(batch.images.to(device)), batch.captions
        b = clean.shape[0]
        strength = torch.linspace(0.05, 1.0, b, device=device)[torch.randperm(b, generator=generator)]
        draft = make_draft(clean, strength, generator)
        ids, mask = model.tokenize(captions)
        with autocast(device, amp):
            out = model(ids, mask, draft, strength)
        target = alignment_targets(model, clean, cfg, amp)
        for k, v in compute_losses(out, clean, target, loss_weights(cfg), model.palette).items():
            totals[k] = totals.get(k, 0.0) + float(v) * b
        n += b
    model.train()
    return {k: v / max(n, 1) for k, v in totals.items()}


def sample_grid(model: OmniGPT2o, prompts: list[str], steps: int, device, seed: int):
    pipe = OmniGPT2oPipeline(model, device)
    images = pipe(prompts, num_inference_steps=steps, generator=torch.Generator().manual_seed(seed)).images
    model.train()
    return image_grid(images, prompts, cols=4)
