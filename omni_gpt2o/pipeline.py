"""Text -> image, in the diffusers habit: `OmniGPT2oPipeline.from_pretrained(ckpt)(prompt).images`.

The sampler draws from text alone: it starts from a pure-noise draft (strength 1), and at each of K
steps feeds the previous output back as the next draft, re-noised at a falling strength. With a
`draft_image` it starts from that picture instead, at `draft_strength` (the img2img habit).
Classifier-free guidance mixes the prompt's prediction with the empty prompt's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from omni_gpt2o.checkpoint import load_checkpoint
from omni_gpt2o.data.dataset import resize_crop, to_rgb, to_unit_range
from omni_gpt2o.drafts import blurred, degrade, make_draft, randn, sampling_schedule
from omni_gpt2o.model import OmniGPT2o
from omni_gpt2o.utils import autocast_dtype, resolve_device, to_pil

logger = logging.getLogger(__name__)


@dataclass
class PipelineOutput:
    images: list[Image.Image]
    drafts: list[Image.Image] | None = None  # the first draft each picture started from


class OmniGPT2oPipeline:
    def __init__(self, model: OmniGPT2o, device: torch.device | str = "cpu", precision: str = "auto"):
        self.model = model.eval()
        self.device = torch.device(device)
        self.autocast = autocast_dtype(self.device, precision)

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str = "auto", precision: str = "auto") -> OmniGPT2oPipeline:
        dev = resolve_device(device)
        model, _ = load_checkpoint(path, dev)
        return cls(model, dev, precision)

    @torch.no_grad()
    def __call__(self, prompt: str | list[str], num_inference_steps: int = 8, guidance_scale: float = 3.0,
                 generator: torch.Generator | list[torch.Generator] | None = None,
                 draft_image: Image.Image | list[Image.Image] | None = None, draft_strength: float = 1.0,
                 eta: float = 0.0, return_drafts: bool = False) -> PipelineOutput:
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not prompts:
            raise ValueError("no prompts given")
        if any(not isinstance(p, str) for p in prompts):
            raise TypeError("prompts must be strings")
        n, size = len(prompts), self.model.config.image_size
        generators = self._generators(generator, n)
        strengths = sampling_schedule(num_inference_steps, draft_strength if draft_image is not None else 1.0)

        ids, mask = self.model.tokenize(prompts)
        if ids.shape[1] >= self.model.text_encoder.max_text_tokens:
            logger.warning("prompts longer than %d tokens were truncated", self.model.text_encoder.max_text_tokens)
        guided = guidance_scale != 1.0
        if guided:  # one batch: prompts, then empty prompts
            u_ids, u_mask = self.model.tokenize([""] * n)
            ids, mask = _concat_padded(ids, mask, u_ids, u_mask)

        if draft_image is not None:
            imgs = [draft_image] * n if isinstance(draft_image, Image.Image) else list(draft_image)
            if len(imgs) != n:
                raise ValueError(f"got {len(imgs)} draft images for {n} prompts")
            image = to_unit_range(torch.stack([resize_crop(to_rgb(im), size) for im in imgs])).to(self.device)
        else:
            image = torch.zeros(n, 3, size, size, device=self.device)  # unused: strength 1 is pure noise

        def level(t: float) -> torch.Tensor:
            return torch.full((n,), t, device=self.device)

        draft = first_draft = make_draft(image, level(strengths[0]), generators)
        for k, t in enumerate(strengths):
            image = self._predict(ids, mask, draft, level(t), guidance_scale if guided else None)
            if k + 1 == len(strengths):
                break
            # The noise this draft holds, given the new prediction; carried into the next, weaker draft
            # (the DDIM habit) so that choices made early are kept. eta mixes in fresh noise.
            noise = (draft - (1 - t) * blurred(image, level(t))) / t
            if eta > 0:
                fresh = randn(tuple(image.shape), generators, device=self.device)
                noise = (1 - eta**2) ** 0.5 * noise + eta * fresh
            draft = degrade(image, level(strengths[k + 1]), noise)
        return PipelineOutput(images=to_pil(image), drafts=to_pil(first_draft) if return_drafts else None)

    def _predict(self, ids, mask, draft, strength, guidance_scale: float | None) -> torch.Tensor:
        if guidance_scale is not None:
            draft, strength = torch.cat([draft, draft]), torch.cat([strength, strength])
        with torch.autocast(self.device.type, dtype=self.autocast or torch.float32,
                            enabled=self.autocast is not None):
            out = self.model(ids, mask, draft, strength).image.float()
        if guidance_scale is not None:
            cond, uncond = out.chunk(2)
            out = uncond + guidance_scale * (cond - uncond)
        return out.clamp(-1, 1)

    def _generators(self, generator, n: int) -> list[torch.Generator]:
        """One generator per picture, so a picture depends on its own seed, not on the batch."""
        if isinstance(generator, list):
            if len(generator) != n:
                raise ValueError(f"got {len(generator)} generators for {n} prompts")
            return generator
        base = generator if generator is not None else torch.Generator().manual_seed(0)
        seeds = torch.randint(0, 2**62, (n,), generator=base).tolist()
        return [torch.Generator().manual_seed(s) for s in seeds]


def _concat_padded(ids_a, mask_a, ids_b, mask_b):
    """Stack two left-padded token batches of different lengths."""
    width = max(ids_a.shape[1], ids_b.shape[1])

    def pad(ids, mask):
        extra = width - ids.shape[1]
        return (torch.nn.functional.pad(ids, (extra, 0), value=0),
                torch.nn.functional.pad(mask, (extra, 0), value=0))

    (ids_a, mask_a), (ids_b, mask_b) = pad(ids_a, mask_a), pad(ids_b, mask_b)
    return torch.cat([ids_a, ids_b]), torch.cat([mask_a, mask_b])
