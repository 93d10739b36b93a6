"""One optimisation step: the step's random draws, the drafts, the forward, the losses and the update.

A step's draws are made for every picture of the global batch from one stream seeded by (seed, step); each
process and each accumulation pass takes its own pictures' rows, so how a batch is split does not change what
is trained, and a resumed run repeats the uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from omni_gpt2o.data.text_cache import TextStateCache
from omni_gpt2o.drafts import randn, sample_strengths
from omni_gpt2o.model import LossWeights, OmniGPT2o, at_least_float32, compute_losses
from omni_gpt2o.scheduler import DraftScheduler
from omni_gpt2o.train.config import TrainConfig
from omni_gpt2o.train.learner import Learner
from omni_gpt2o.utils import autocast


@dataclass
class StepBatch:
    """This process's share of a batch, on the device."""
    clean: torch.Tensor  # (b, 3, H, W) in [-1, 1]
    captions: list[str]
    positions: list[int] | None = None  # each picture's row in the global batch (default: 0..b-1)
    batch_size: int | None = None  # the global batch's size (default: b)
    target: torch.Tensor | None = None  # the frozen ViT's tokens of the clean pictures (alignment loss)
    sd_pictures: torch.Tensor | None = None  # stored Stable Diffusion drafts, in [-1, 1] ...
    sd_stored: torch.Tensor | None = None  # ... and which rows have one
    text_cache: TextStateCache | None = None  # the LM's states of each caption (lm_reads_draft=False): no LM pass

    def __post_init__(self) -> None:
        self.positions = list(range(len(self.captions))) if self.positions is None else self.positions
        self.batch_size = self.batch_size or len(self.captions)

    def rows(self, part: slice) -> StepBatch:
        def cut(x):
            return None if x is None else x[part]

        return StepBatch(self.clean[part], self.captions[part], self.positions[part], self.batch_size,
                         cut(self.target), cut(self.sd_pictures), cut(self.sd_stored), self.text_cache)


@dataclass
class StepDraws:
    """Every random draw of a step, for every picture of the global batch, from one stream seeded by
    (seed, step): each process (and each accumulation pass) takes its own pictures' rows, so how the batch is
    split does not change what is trained, and a resumed run repeats the uninterrupted one."""
    sd_pick: torch.Tensor | None  # (B,) uniforms: which pictures start from a stored SD draft
    dropped: torch.Tensor  # (B,) bool: caption left out (the unconditional half of guidance)
    strength: torch.Tensor  # (B,) draft strengths
    draft_noise: torch.Tensor  # (B, 3, H, W)
    rollout: bool  # a rollout step: the draft is the sampler's own next one (the fields below)
    high: torch.Tensor | None
    low: torch.Tensor | None
    strong_noise: torch.Tensor | None
    latent_noise: torch.Tensor  # (B, P, latent_dim): the VAE's sampling noise

    @classmethod
    def draw(cls, cfg: TrainConfig, step: int, model: OmniGPT2o, batch: int, device: torch.device) -> StepDraws:
        # Uniforms on the host; noise on the device from its own stream (on a CPU both come from one).
        host = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        noise = host if device.type == "cpu" else torch.Generator(device).manual_seed(cfg.seed * 1_000_003 + step)
        size = model.config.image_size
        sd_pick = torch.rand(batch, generator=host) if cfg.draft == "sd" else None
        dropped = torch.rand(batch, generator=host) < cfg.caption_dropout
        strength = sample_strengths(batch, host, pure_noise=cfg.pure_noise, skew=cfg.noise_skew)
        draft_noise = randn((batch, 3, size, size), noise, device)
        rollout = bool(cfg.rollout) and torch.rand(1, generator=host).item() < cfg.rollout
        high = low = strong_noise = None
        if rollout:
            high = 0.5 + 0.5 * torch.rand(batch, generator=host)
            low = high * (0.3 + 0.6 * torch.rand(batch, generator=host))
            strong_noise = randn((batch, 3, size, size), noise, device)
        latent = (batch, model.image_encoder.num_patches, model.config.latent_dim)
        return cls(sd_pick, dropped, strength, draft_noise, rollout, high, low, strong_noise,
                   randn(latent, noise, device))

    def rows(self, positions: list[int], device: torch.device) -> StepDraws:
        index = torch.tensor(positions)

        def pick(x):
            return None if x is None else x[index.to(x.device)].to(device)

        return StepDraws(pick(self.sd_pick), pick(self.dropped), pick(self.strength), pick(self.draft_noise),
                         self.rollout, pick(self.high), pick(self.low), pick(self.strong_noise),
                         pick(self.latent_noise))


@torch.no_grad()
def rollout_draft(model: OmniGPT2o, ids: torch.Tensor, mask: torch.Tensor, clean: torch.Tensor, high: torch.Tensor,
                  low: torch.Tensor, noise: torch.Tensor, amp: torch.dtype | None,
                  text_states: list[torch.Tensor] | None = None) -> torch.Tensor:
    """A draft as the sampler makes it: predict from a strong draft (strength `high`, holding `noise`), then
    step down to strength `low` with the scheduler. Training on these teaches the model to fix its own early
    guesses (a blob where a square belongs), not only degraded true pictures."""
    strong = DraftScheduler.add_noise(clean, noise.to(clean.dtype), high)
    with autocast(clean.device, amp):
        guess = at_least_float32(model(ids, mask, strong, high, text_states=text_states).image).clamp(-1, 1)
    return DraftScheduler.step(guess, high, strong, low)


def pass_losses(learner: Learner, batch: StepBatch, draws: StepDraws, cfg: TrainConfig) -> dict[str, torch.Tensor]:
    """Forward and losses of one pass over some pictures, with their rows of the step's draws."""
    model, clean = learner.model, batch.clean
    prompts = ["" if d else c for c, d in zip(batch.captions, draws.dropped.tolist())]
    ids, mask = model.tokenize(prompts)
    text = None if batch.text_cache is None else batch.text_cache.lookup(prompts, mask)
    strength, source = draws.strength, clean
    if batch.sd_pictures is not None:  # some drafts start from Stable Diffusion's picture; the target stays clean
        use = (draws.sd_pick < cfg.sd_draft_ratio) & batch.sd_stored
        source = torch.where(use.view(-1, 1, 1, 1), batch.sd_pictures, clean)
        strength = torch.where(use, strength.clamp(max=0.9), strength)  # keep some of SD's picture
    if draws.rollout:
        draft = rollout_draft(model, ids, mask, clean, draws.high, draws.low, draws.strong_noise, learner.amp, text)
        strength = draws.low
    else:
        draft = DraftScheduler.add_noise(source, draws.draft_noise.to(source.dtype), strength)
    with autocast(clean.device, learner.amp):
        out = learner.forward(ids, mask, draft, strength, latent_noise=draws.latent_noise, text_states=text)
    return compute_losses(out, clean, batch.target, loss_weights(cfg), model.palette)


def train_step(learner: Learner, batch: StepBatch, cfg: TrainConfig, step: int) -> tuple[dict[str, torch.Tensor], bool]:
    """One optimisation step over this process's share of the batch, in `cfg.grad_accum` passes. Returns the
    losses (tensors: reading them waits for the device, so the loop does that only when it logs) and whether
    this was a rollout step."""
    device = batch.clean.device
    draws = StepDraws.draw(cfg, step, learner.model, batch.batch_size, device)
    n = len(batch.captions)
    passes = min(cfg.grad_accum, n)
    edges = [n * k // passes for k in range(passes + 1)]
    totals: dict[str, torch.Tensor] = {}
    for a, b in zip(edges[:-1], edges[1:]):
        part = batch.rows(slice(a, b))
        with learner.no_sync(sync=b == n):
            losses = pass_losses(learner, part, draws.rows(part.positions, device), cfg)
            learner.backward(losses["loss"] * (b - a) / n)
        totals = {name: totals.get(name, 0) + v.detach() * (b - a) / n for name, v in losses.items()}
    totals["grad_norm"] = learner.update(cfg.gradient_clip, step)
    return totals, draws.rollout


def loss_weights(cfg: TrainConfig) -> LossWeights:
    return LossWeights(kl=cfg.kl_weight, alignment=cfg.align_weight, edge=cfg.edge_weight,
                       palette=cfg.palette_weight)


@torch.no_grad()
def frozen_targets(model: OmniGPT2o, clean: torch.Tensor, amp: torch.dtype | None) -> torch.Tensor:
    """The frozen ViT's patch tokens of the clean pictures: the alignment loss's target."""
    with autocast(clean.device, amp):
        return model.image_encoder(clean)


def alignment_targets(model: OmniGPT2o, clean: torch.Tensor, cfg: TrainConfig,
                      amp: torch.dtype | None) -> torch.Tensor | None:
    """`frozen_targets` when the alignment loss is on; None (no ViT pass over the clean picture) when off."""
    return frozen_targets(model, clean, amp) if cfg.align_weight > 0 else None
