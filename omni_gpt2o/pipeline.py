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
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from omni_gpt2o.checkpoint import load_checkpoint, save_checkpoint
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
    images: list[Image.Image] | np.ndarray | torch.Tensor  # by `output_type`: PIL, (N, H, W, 3) or (N, 3, H, W)
    seed: int | None = None  # the seed drawn for this call when no generator was given (to draw it again)
    drafts: list[Image.Image] | None = None  # what each picture started from: the draft picture, or noise


DraftInput = str | Image.Image | list[Image.Image] | None
StepCallback = Callable[["OmniGPT2oPipeline", int, float, dict[str, torch.Tensor]], dict | None]


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
        """A pipeline from a checkpoint folder (what `save_pretrained` and training write)."""
        if not isinstance(path, str | Path):
            raise TypeError(f"path must be a checkpoint folder (str or Path), not {type(path).__name__}")
        dev = resolve_device(device)
        model, _ = load_checkpoint(path, dev)
        return cls(model, dev, precision, draft_config)

    def save_pretrained(self, path: str | Path) -> Path:
        """Write the model as a checkpoint folder that `from_pretrained` reads (safetensors + JSON)."""
        if not isinstance(path, str | Path):
            raise TypeError(f"path must be a folder (str or Path), not {type(path).__name__}")
        return save_checkpoint(self.model, path)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> OmniGPT2oPipeline:
        """Move the model (`pipe.to("cuda")`) and/or cast its weights (`pipe.to(torch.bfloat16)`: half the
        memory, computed in that dtype)."""
        if isinstance(device, torch.dtype):
            device, dtype = None, device
        if device is not None:
            self.device = torch.device(device)
            self.model.to(self.device)
            self.model.text_encoder.use_attention_for(self.device)
        if dtype is not None:
            self.model.to(dtype)
            self.autocast = None if dtype == torch.float32 else dtype
        return self

    @property
    def dtype(self) -> torch.dtype:
        return self.model.separator.dtype

    @torch.no_grad()
    def __call__(self, prompt: str | list[str], num_inference_steps: int = 8,
                 guidance_scale: float = DEFAULT_GUIDANCE, negative_prompt: str | list[str] | None = None,
                 num_images_per_prompt: int = 1, generator: torch.Generator | list[torch.Generator] | None = None,
                 draft: DraftInput = None, draft_strength: float = 1.0, eta: float = 0.0,
                 schedule_power: float | None = None, output_type: str = "pil",
                 callback_on_step_end: StepCallback | None = None, return_drafts: bool = False) -> PipelineOutput:
        """Draw `prompt`(s).

        - `guidance_scale`: classifier-free guidance against `negative_prompt` (default: the empty prompt);
          1 turns it off.
        - `generator`: one, or one per picture. Without it a fresh seed is drawn and reported as `.seed`.
        - `draft`: None or "noise" (from text alone), "sd" (a Stable Diffusion draft of each prompt), or
          picture(s) to start from; `draft_strength` in (0, 1] says how far from it to start.
        - `schedule_power` overrides how the scheduler's strengths fall (see `scheduler.sampling_schedule`).
        - `output_type`: "pil", "np" (float32 in [0, 1], N x H x W x 3) or "pt" (N x 3 x H x W in [0, 1]).
        - `callback_on_step_end(pipe, step, strength, {"prediction", "draft"})` after each step: the clean
          picture predicted and the next draft, in [-1, 1]; it may return {"draft": ...} to replace the draft.
        """
        prompts = _as_prompts(prompt, "prompt")
        negatives = [""] * len(prompts) if negative_prompt is None else _as_prompts(negative_prompt, "negative_prompt")
        if len(negatives) == 1 and len(prompts) > 1:
            negatives = negatives * len(prompts)
        if len(negatives) != len(prompts):
            raise ValueError(f"got {len(negatives)} negative prompts for {len(prompts)} prompts")
        if isinstance(num_images_per_prompt, bool) or not isinstance(num_images_per_prompt, int) \
                or num_images_per_prompt < 1:
            raise ValueError(f"num_images_per_prompt must be a positive integer, got {num_images_per_prompt!r}")
        if not isinstance(guidance_scale, int | float) or not math.isfinite(guidance_scale):
            raise ValueError(f"guidance_scale must be a finite number, got {guidance_scale}")
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"eta must be in [0, 1], got {eta}")
        if output_type not in ("pil", "np", "pt"):
            raise ValueError(f"output_type must be 'pil', 'np' or 'pt', not {output_type!r}")
        prompts = [p for p in prompts for _ in range(num_images_per_prompt)]
        negatives = [p for p in negatives for _ in range(num_images_per_prompt)]
        n, size = len(prompts), self.model.config.image_size
        seed = secrets.randbits(63) if generator is None else None
        generators = self._generators(generator if seed is None else torch.Generator().manual_seed(seed), n)
        start = self._start_pictures(draft, prompts, generators, size)
        self.scheduler.set_timesteps(num_inference_steps, draft_strength if start is not None else 1.0,
                                     schedule_power)

        ids, mask = self.model.tokenize(prompts)
        if ids.shape[1] >= self.model.text_encoder.max_text_tokens:
            logger.warning("prompts longer than %d tokens were truncated", self.model.text_encoder.max_text_tokens)
        guided = guidance_scale != 1.0
        if guided:  # one batch: prompts, then the negative (by default empty) prompts
            u_ids, u_mask = self.model.tokenize(negatives)
            ids, mask = _concat_padded(ids, mask, u_ids, u_mask)

        # Strength 1 is pure noise, so without a start picture its content does not matter.
        image = start if start is not None else torch.zeros(n, 3, size, size, device=self.device)

        def level(t: float) -> torch.Tensor:
            return torch.full((n,), t, device=self.device)

        text = None  # the LM reads the prompts alone: once per call, not once per step
        if self.model.reader is not None:
            with torch.no_grad(), autocast(self.device, self.autocast):
                text = [h.to(self.dtype) for h in self.model.encode_text(ids, mask)]
        strengths = self.scheduler.timesteps
        draft = first_draft = self.scheduler.add_noise(image, randn(tuple(image.shape), generators, self.device),
                                                       level(strengths[0]))
        for k, t in enumerate(strengths):
            image = self._predict(ids, mask, draft, level(t), guidance_scale if guided else None, text,
                                  last=k + 1 == len(strengths))
            if k + 1 < len(strengths):
                draft = self.scheduler.step(image, level(t), draft, level(strengths[k + 1]), eta, generators)
            if callback_on_step_end is not None:
                changed = callback_on_step_end(self, k, t, {"prediction": image, "draft": draft}) or {}
                draft = changed.get("draft", draft)
        drafts = to_pil(start if start is not None else first_draft) if return_drafts else None
        return PipelineOutput(images=_convert(image, output_type), seed=seed, drafts=drafts)

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

    def _predict(self, ids, mask, draft, strength, guidance_scale: float | None,
                 text: list[torch.Tensor] | None = None, last: bool = False) -> torch.Tensor:
        """The clean picture predicted from `draft`; with a palette, guidance acts on the palette scores and the
        `last` prediction draws each pixel in its most likely colour."""
        draft, strength = draft.to(self.dtype), strength.to(self.dtype)  # fp32, unless the weights were cast
        palette = self.model.palette
        with autocast(self.device, self.autocast):
            tokens = self.model.image_encoder(draft)  # one ViT pass: both halves of guidance see the same draft
            if guidance_scale is not None:
                draft, strength, tokens = (torch.cat([x, x]) for x in (draft, strength, tokens))
            result = self.model(ids, mask, draft, strength, draft_tokens=tokens, text_states=text)
        out = (result.image if palette is None else result.palette_logits).float()
        if guidance_scale is not None:
            cond, uncond = out.chunk(2)
            out = uncond + guidance_scale * (cond - uncond)
        if palette is not None:
            out = palette.most_likely(out) if last else palette.expected(out)
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


def _as_prompts(prompt: Any, name: str) -> list[str]:
    """A prompt or a list of them, as a list; a TypeError naming the argument for anything else."""
    if isinstance(prompt, str):
        return [prompt]
    if not isinstance(prompt, list | tuple) or not all(isinstance(p, str) for p in prompt):
        raise TypeError(f"{name} must be a string or a list of strings, not {type(prompt).__name__}")
    if not prompt:
        raise ValueError(f"no {name}s given")
    return list(prompt)


def _convert(image: torch.Tensor, output_type: str) -> list[Image.Image] | np.ndarray | torch.Tensor:
    """[-1, 1] pictures as PIL, or in [0, 1] as a numpy (N, H, W, 3) or torch (N, 3, H, W) array."""
    if output_type == "pil":
        return to_pil(image)
    unit = ((image.float() + 1) / 2).clamp(0, 1).cpu()
    return unit if output_type == "pt" else unit.permute(0, 2, 3, 1).numpy()


def _concat_padded(ids_a, mask_a, ids_b, mask_b):
    """Stack two left-padded token batches of different lengths."""
    width = max(ids_a.shape[1], ids_b.shape[1])

    def pad(ids, mask):
        extra = width - ids.shape[1]
        return (torch.nn.functional.pad(ids, (extra, 0), value=0),
                torch.nn.functional.pad(mask, (extra, 0), value=0))

    (ids_a, mask_a), (ids_b, mask_b) = pad(ids_a, mask_a), pad(ids_b, mask_b)
    return torch.cat([ids_a, ids_b]), torch.cat([mask_a, mask_b])
