"""Text -> image, in the diffusers habit: `OmniGPT2oPipeline.from_pretrained(ckpt)(prompt).images`.

The sampler draws from text alone: it starts from a pure-noise draft (strength 1), and at each of K
steps predicts the clean picture, then its scheduler (`DraftScheduler`) builds the next, weaker draft from
that prediction and the noise the current draft holds (the DDIM habit; `eta` > 0 mixes in fresh noise). With a
`draft` picture (given, or a Stable Diffusion draft of the prompt) it starts from that picture instead,
at `draft_strength` (the img2img habit).
Classifier-free guidance mixes the prompt's prediction with the empty prompt's.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from omni_gpt2o.checkpoint import load_checkpoint
from omni_gpt2o.config import DEFAULT_GUIDANCE
from omni_gpt2o.data.dataset import resize_crop, to_rgb, to_unit_range
from omni_gpt2o.drafts import randn
from omni_gpt2o.model import OmniGPT2o
from omni_gpt2o.scheduler import DraftScheduler
from omni_gpt2o.sd_drafts import SDDraftConfig, SDDraftSource
from omni_gpt2o.utils import autocast, autocast_dtype, resolve_device, to_pil

logger = logging.getLogger(__name__)


@dataclass
class PipelineOutput:
    images: list[Image.Image]
    drafts: list[Image.Image] | None = None  # what each picture started from: the draft picture, or noise


DraftInput = str | Image.Image | list[Image.Image] | None


class OmniGPT2oPipeline:
    def __init__(self, model: OmniGPT2o, device: torch.device | str = "cpu", precision: str = "auto",
                 draft_config: SDDraftConfig | None = None):
        self.model = model.eval()
        self.device = torch.device(device)
        model.text_encoder.use_attention_for(self.device)
        self.autocast = autocast_dtype(self.device, precision)
        self.scheduler = DraftScheduler()
        self.draft_config = draft_config  # which Stable Diffusion model draws draft="sd" (default: sd-turbo)
        self.draft_source: SDDraftSource | None = None  # loaded on first use

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str = "auto", precision: str = "auto",
                        draft_config: SDDraftConfig | None = None) -> OmniGPT2oPipeline:
        if not isinstance(path, str | Path):
            raise TypeError(f"path must be a checkpoint folder (str or Path), not {type(path).__name__}")
        dev = resolve_device(device)
        model, _ = load_checkpoint(path, dev)
        return cls(model, dev, precision, draft_config)

    @torch.no_grad()
    def __call__(self, prompt: str | list[str], num_inference_steps: int = 8,
                 guidance_scale: float = DEFAULT_GUIDANCE,
                 generator: torch.Generator | list[torch.Generator] | None = None, draft: DraftInput = None,
                 draft_strength: float = 1.0, eta: float = 0.0, schedule_power: float | None = None,
                 return_drafts: bool = False) -> PipelineOutput:
        """Draw `prompt`(s). `draft`: None or "noise" (from text alone), "sd" (a Stable Diffusion draft of
        each prompt), or picture(s) to start from; `draft_strength` in (0, 1] says how far from it to start.
        `schedule_power` overrides how the scheduler's strengths fall (see `scheduler.sampling_schedule`)."""
        if prompt is None or (not isinstance(prompt, str) and not isinstance(prompt, list | tuple)):
            raise TypeError(f"prompt must be a string or a list of strings, not {type(prompt).__name__}")
        if not math.isfinite(guidance_scale):
            raise ValueError(f"guidance_scale must be a finite number, got {guidance_scale}")
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"eta must be in [0, 1], got {eta}")
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not prompts:
            raise ValueError("no prompts given")
        if any(not isinstance(p, str) for p in prompts):
            raise TypeError("prompts must be strings")
        n, size = len(prompts), self.model.config.image_size
        generators = self._generators(generator, n)
        start = self._start_pictures(draft, prompts, generators, size)
        self.scheduler.set_timesteps(num_inference_steps, draft_strength if start is not None else 1.0,
                                     schedule_power)

        ids, mask = self.model.tokenize(prompts)
        if ids.shape[1] >= self.model.text_encoder.max_text_tokens:
            logger.warning("prompts longer than %d tokens were truncated", self.model.text_encoder.max_text_tokens)
        guided = guidance_scale != 1.0
        if guided:  # one batch: prompts, then empty prompts
            u_ids, u_mask = self.model.tokenize([""] * n)
            ids, mask = _concat_padded(ids, mask, u_ids, u_mask)

        # Strength 1 is pure noise, so without a start picture its content does not matter.
        image = start if start is not None else torch.zeros(n, 3, size, size, device=self.device)

        def level(t: float) -> torch.Tensor:
            return torch.full((n,), t, device=self.device)

        strengths = self.scheduler.timesteps
        draft = first_draft = self.scheduler.add_noise(image, randn(tuple(image.shape), generators, self.device),
                                                       level(strengths[0]))
        for k, t in enumerate(strengths):
            image = self._predict(ids, mask, draft, level(t), guidance_scale if guided else None)
            if k + 1 < len(strengths):
                draft = self.scheduler.step(image, level(t), draft, level(strengths[k + 1]), eta, generators)
        drafts = to_pil(start if start is not None else first_draft) if return_drafts else None
        return PipelineOutput(images=to_pil(image), drafts=drafts)

    def _start_pictures(self, draft: DraftInput, prompts: list[str], generators: list[torch.Generator],
                        size: int) -> torch.Tensor | None:
        """The pictures the sampler starts from, in [-1, 1], or None to start from pure noise."""
        if draft is None or (isinstance(draft, str) and draft == "noise"):
            return None
        if isinstance(draft, str) and draft == "sd":
            if self.draft_source is None:
                self.draft_source = SDDraftSource(self.draft_config, self.device)
            # Each prompt's SD seed comes from its own generator, so its draft ignores the batch.
            seeds = [int(torch.randint(0, 2**31 - 1, (1,), generator=g)) for g in generators]
            return self.draft_source(prompts, seeds, size).to(self.device)
        if isinstance(draft, str):
            raise ValueError(f"draft must be 'noise', 'sd' or a picture, not {draft!r}")
        pictures = [draft] * len(prompts) if isinstance(draft, Image.Image) else list(draft)
        if len(pictures) != len(prompts):
            raise ValueError(f"got {len(pictures)} draft pictures for {len(prompts)} prompts")
        return to_unit_range(torch.stack([resize_crop(to_rgb(p), size) for p in pictures])).to(self.device)

    def _predict(self, ids, mask, draft, strength, guidance_scale: float | None) -> torch.Tensor:
        with autocast(self.device, self.autocast):
            tokens = self.model.image_encoder(draft)  # one ViT pass: both halves of guidance see the same draft
            if guidance_scale is not None:
                draft, strength, tokens = (torch.cat([x, x]) for x in (draft, strength, tokens))
            out = self.model(ids, mask, draft, strength, draft_tokens=tokens).image.float()
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
