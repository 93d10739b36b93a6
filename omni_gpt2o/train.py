"""Training: only the glue learns; GPT-2 and the ViT stay frozen.

One step: pick a caption per picture (some dropped, for classifier-free guidance), make a draft of each
clean picture at a random strength (pure noise included), run the model, and minimise
reconstruction + edge_weight x outline error + kl_weight x KL (+ alignment with the frozen ViT's view of
the clean picture, when asked for).
On a share of the steps (`rollout`) the draft is the sampler's own next draft instead, so the model learns
to fix its early guesses. AdamW on the trained parameters only, warmup then cosine, gradient clipping, an
EMA of the weights (used for validation, samples and the saved model), `last` and `best` checkpoints.

On many processes (`accelerate launch`: DDP on GPUs, gloo on CPUs) `batch_size` stays the global batch: each
process trains its share of every batch, taking its pictures' rows of the step's random draws (made for the
whole batch from one stream seeded by (seed, step)), so the number of processes does not change what is trained. Stop
decisions (the clock, a signal, a batch of unreadable pictures) are agreed between processes; checkpoints,
logs, samples and validation come from the main process, written by our own safetensors + JSON saver.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from omni_gpt2o.checkpoint import (
    load_checkpoint,
    load_training_state,
    optimizer_from_tensors,
    optimizer_to_tensors,
    save_checkpoint,
)
from omni_gpt2o.config import get_preset
from omni_gpt2o.data.cache import feature_cache, pixel_cache
from omni_gpt2o.data.dataset import Batch, CaptionedImages, collate, to_unit_range
from omni_gpt2o.data.text_cache import TextStateCache
from omni_gpt2o.drafts import make_draft, randn, sample_strengths
from omni_gpt2o.fileio import OmniError, RunLock, json_text
from omni_gpt2o.model import LossWeights, OmniGPT2o, at_least_float32, build_model, compute_losses
from omni_gpt2o.options import option
from omni_gpt2o.pipeline import OmniGPT2oPipeline
from omni_gpt2o.scheduler import DraftScheduler
from omni_gpt2o.sd_drafts import describe, find_draft_store
from omni_gpt2o.utils import autocast, autocast_dtype, default_dtype, image_grid, resolve_device, seed_everything


@dataclass
class TrainConfig:
    data: str = option(help="training split folder (captions.json + images/)")
    out: str = option(help="run folder: checkpoints/, tensorboard/, samples")
    val_data: str | None = option(None, "validation split folder")
    preset: str = option("tiny", "model preset: tiny, tiny-hour (offline), gpt2-vit-b, gpt2-medium-vit-l")
    latent_dim: int | None = option(None, "VAE latent channels (default: the preset's)", positive=True)
    model_overrides: dict[str, Any] | None = option(None, flag=False)  # other OmniConfig fields, e.g. decoder_blocks
    epochs: int | None = option(None, "passes over the training split (10 when neither --minutes nor --max-steps is "
                                      "given; one of the three sets the run's length)", positive=True)
    minutes: float | None = option(None, "train for this many minutes of the clock (validation and saving not "
                                         "counted)", positive=True)
    max_steps: int | None = option(None, "train for this many optimisation steps", positive=True)
    batch_size: int = option(32, "the global batch: split across processes and --grad-accum passes", positive=True)
    grad_accum: int = option(1, "gradient accumulation: each process's share of a batch runs in this many passes",
                             positive=True)
    learning_rate: float = option(1e-3, "AdamW's peak learning rate (after warmup; cosine decay to a tenth)",
                                  positive=True, aliases=("--lr",))
    weight_decay: float = option(0.01, "AdamW's decoupled weight decay", minimum=0)
    warmup_epochs: float = option(0.2, "epochs of linear learning-rate warmup", minimum=0)
    gradient_clip: float = option(1.0, "0 turns clipping off", minimum=0)
    kl_weight: float = option(1e-3, "weight of the latent's KL term (at the run's end, with --kl-weight-start)",
                              minimum=0)
    kl_weight_start: float | None = option(None, "KL weight at the start: it moves geometrically to --kl-weight "
                                                 "over the run's steps or minutes (default: constant)", minimum=0)
    edge_weight: float = option(1.0, "weight of the loss on the picture's pixel differences (its outlines); "
                                     "0: plain MSE only", minimum=0)
    align_weight: float = option(0.0, "weight of the loss that predicts the frozen ViT's view of the clean "
                                      "picture (0: off, no ViT pass)", minimum=0)
    caption_dropout: float = option(0.1, "empty caption this often: the unconditional half of guidance", minimum=0,
                                    maximum=1)
    pure_noise: float = option(0.2, "share of drafts that are pure noise (drawing from text alone)", minimum=0,
                               maximum=1)
    noise_skew: float = option(1.0, "1: the other draft strengths uniform in (0, 1); > 1 leans them to strong "
                                    "noise", positive=True)
    rollout: float = option(0.0, "share of steps trained on the sampler's own next draft (0: off; each costs "
                                 "one more forward)", minimum=0, maximum=1)
    ema_decay: float = option(0.999, "decay of the weights' moving average (what is validated and saved)",
                              minimum=0, maximum=1)
    max_train_samples: int | None = option(None, "train on the first this many pictures of the split only",
                                           positive=True)
    max_val_samples: int | None = option(256, "validate on the first this many pictures of --val-data",
                                         positive=True)
    seed: int = option(0, "seed of every random draw (pictures' order, captions, noise): a run repeats")
    debug: bool = option(False, "a few samples, one epoch, log every step")
    save_interval: int = option(1, "epochs between `last` checkpoints", positive=True)
    save_every: int | None = option(None, "also save `last` every this many steps (a killed run loses at most "
                                          "these)", positive=True)
    save_every_minutes: float | None = option(None, "also save `last` every this many training minutes",
                                              positive=True)
    snapshot_minutes: float | None = option(None, "also keep the weights every this many training minutes "
                                                  "(checkpoints/snapshots/, for a learning curve)", positive=True)
    checkpoint_path: str | None = option(None, "resume from a `last` checkpoint (any number of processes)")
    overwrite: bool = option(False, "replace the run that --out holds (without it a new run refuses such a folder)")
    use_clearml: bool = option(False, "log to ClearML too")
    device: str = option("auto", "auto | cpu | cuda | mps (under accelerate launch: each process's own GPU)")
    precision: str = option("auto", "auto: bf16 where the hardware has it, fp16 + gradient scaling on GPUs "
                                    "without bf16, else fp32; fp64: the whole run in float64, to check the math "
                                    "(that many processes or --grad-accum train as one)",
                            choices=("auto", "bf16", "fp16", "fp32", "fp64"))
    num_workers: int = option(0, "data loading processes (per training process)", minimum=0)
    draft: str = option("noise", "sd: mix in the split's stored Stable Diffusion drafts (made by prepare-drafts)",
                        choices=("noise", "sd"))
    sd_draft_ratio: float = option(0.5, "with --draft sd: the share of pictures drafted by SD", minimum=0,
                                   maximum=1)
    cache_dir: str | None = option(None, "cache folder for ViT features and preprocessed pictures (filled by "
                                         "precompute or during the first epoch)")
    sample_steps: int = option(8, "sampling steps of the sample grid", positive=True)
    log_every: int = option(10, "steps between logged losses", positive=True)
    progress: bool = option(True, flag=False)


# --- the parts a step changes ------------------------------------------------------------------------------

class EMA:
    """Exponential moving average of the trained parameters."""

    def __init__(self, model: OmniGPT2o, decay: float):
        self.decay = decay
        self.params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        self.shadow = {n: p.detach().clone() for n, p in self.params.items()}

    @torch.no_grad()
    def update(self, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))  # short memory early on
        torch._foreach_lerp_(list(self.shadow.values()), [p.detach() for p in self.params.values()], 1 - decay)

    @contextmanager
    def applied(self):
        """Temporarily put the EMA weights into the model."""
        backup = {n: p.detach().clone() for n, p in self.params.items()}
        with torch.no_grad():
            for n, p in self.params.items():
                p.copy_(self.shadow[n])
        try:
            yield
        finally:
            with torch.no_grad():
                for n, p in self.params.items():
                    p.copy_(backup[n])

    def state_dict(self, model: OmniGPT2o) -> dict[str, torch.Tensor]:
        """The model's trained state dict with EMA values for the parameters."""
        sd = model.trainable_state_dict()
        return {k: self.shadow.get(k, v) for k, v in sd.items()}


class Learner:
    """The model, its optimizer, EMA and (for fp16) gradient scaler; with an accelerator of several processes,
    the forward runs through accelerate's DDP wrapper so gradients are averaged across processes."""

    def __init__(self, model: OmniGPT2o, cfg: TrainConfig, amp: torch.dtype | None, accelerator=None):
        self.model, self.amp = model, amp
        device = model.separator.device
        self.params = model.trainable_parameters()
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay,
                                           betas=(0.9, 0.99), fused=device.type in ("cuda", "cpu"))  # one kernel
        self.ema = EMA(model, cfg.ema_decay)
        self.scaler = torch.amp.GradScaler(device.type) if amp == torch.float16 else None  # bf16 needs none
        many = accelerator is not None and accelerator.num_processes > 1
        self.forward = accelerator.prepare_model(model) if many else model
        # Steps whose gradients were not finite: skipped, counted on the device (no host sync per step).
        self.skipped = torch.zeros((), device=device)
        self.streak = torch.zeros((), device=device)  # in a row, now
        self.worst_streak = torch.zeros((), device=device)  # in a row, the most since the loop last looked

    def no_sync(self, sync: bool) -> contextlib.AbstractContextManager:
        """Gradients meet across processes only on the last pass of an accumulated step."""
        return self.forward.no_sync() if not sync and hasattr(self.forward, "no_sync") else contextlib.nullcontext()

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def update(self, clip: float, step: int) -> torch.Tensor:
        """Clip, take the optimizer step, update the EMA; the gradient norm. A step whose gradients are not
        finite is skipped and counted (fp16: the scaler's own overflow skip)."""
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        norm = torch.nn.utils.clip_grad_norm_(self.params, clip if clip > 0 else math.inf)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            bad = (~torch.isfinite(norm)).float()
            self.skipped += bad
            self.streak = (self.streak + bad) * bad
            self.worst_streak = torch.maximum(self.worst_streak, self.streak)
            if self.optimizer.defaults.get("fused"):
                self.optimizer.found_inf = bad  # the fused kernel skips the update on the device
                self.optimizer.step()
            elif not bad.item():  # other optimizers cannot skip on the device
                self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.ema.update(step)  # a skipped step leaves the weights, so the EMA stays good too
        return norm

    def state(self) -> tuple[dict[str, torch.Tensor], list[dict]]:
        """Raw weights, EMA and optimizer as tensors (safetensors), and the optimizer's groups (JSON)."""
        tensors = {f"raw.{k}": v for k, v in self.model.trainable_state_dict().items()}
        tensors |= {f"ema.{n}": v for n, v in self.ema.shadow.items()}
        opt_tensors, groups = optimizer_to_tensors(self.optimizer)
        return tensors | opt_tensors, groups

    def load_state(self, tensors: dict[str, torch.Tensor], groups: list[dict]) -> None:
        device = self.model.separator.device
        self.model.load_state_dict({k[len("raw."):]: v for k, v in tensors.items() if k.startswith("raw.")},
                                   strict=False)
        self.ema.shadow = {n: tensors[f"ema.{n}"].to(device) for n in self.ema.params}
        optimizer_from_tensors(self.optimizer, tensors, groups)


# --- one step ------------------------------------------------------------------------------------------------

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
    return compute_losses(out, clean, batch.target, loss_weights(cfg))


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
    return LossWeights(kl=cfg.kl_weight, alignment=cfg.align_weight, edge=cfg.edge_weight)


@torch.no_grad()
def frozen_targets(model: OmniGPT2o, clean: torch.Tensor, amp: torch.dtype | None) -> torch.Tensor:
    """The frozen ViT's patch tokens of the clean pictures: the alignment loss's target."""
    with autocast(clean.device, amp):
        return model.image_encoder(clean)


def alignment_targets(model: OmniGPT2o, clean: torch.Tensor, cfg: TrainConfig,
                      amp: torch.dtype | None) -> torch.Tensor | None:
    """`frozen_targets` when the alignment loss is on; None (no ViT pass over the clean picture) when off."""
    return frozen_targets(model, clean, amp) if cfg.align_weight > 0 else None


# --- the run -------------------------------------------------------------------------------------------------

def kl_weight(cfg: TrainConfig, progress: float) -> float:
    """The KL weight at this point of the run: constant, or geometric from `kl_weight_start` to `kl_weight`
    (a loose latent early, when the decoder learns to draw; a tidier one late, for drawing from noise)."""
    start, end = cfg.kl_weight_start, cfg.kl_weight
    if start is None or start == end:
        return end
    if start == 0 or end == 0:
        return start + (end - start) * min(1.0, progress)
    return start * (end / start) ** min(1.0, progress)


def learning_rate(cfg: TrainConfig, step: int, warmup_steps: int, progress: float) -> float:
    """Linear warmup, then cosine decay to 10% over the run's progress (steps or minutes)."""
    warm = min(1.0, (step + 1) / max(1, warmup_steps))
    return cfg.learning_rate * warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


class NonFiniteLoss(OmniError):
    """Gradients were not finite several steps in a row: the run stops, the last checkpoint stays as it was."""


DEFAULT_EPOCHS = 10  # a run's length when no --epochs, --minutes or --max-steps is given
NONFINITE_STREAK = 3  # steps in a row with non-finite gradients (each skipped) that stop a run
LOG_DECIMALS = 5  # losses in the run's history and logs


@dataclass
class Plan:
    """How a run's batches are laid out over processes and passes, and when it ends."""
    batch_size: int  # global
    per_process: int
    steps_per_epoch: int
    warmup_steps: int
    total_steps: int
    budget: float | None  # seconds of training, or None

    @classmethod
    def of(cls, cfg: TrainConfig, pictures: int, processes: int) -> Plan:
        batch = min(cfg.batch_size, pictures)
        if batch % processes or batch // processes < cfg.grad_accum:
            raise OmniError(f"--batch-size {batch} must be a multiple of the {processes} processes, with at least "
                            f"--grad-accum {cfg.grad_accum} pictures for each")
        steps_per_epoch = pictures // batch
        return cls(batch, batch // processes, steps_per_epoch, max(1, round(cfg.warmup_epochs * steps_per_epoch)),
                   cfg.max_steps or (cfg.epochs or DEFAULT_EPOCHS) * steps_per_epoch,
                   cfg.minutes * 60 if cfg.minutes else None)

    def progress(self, state: dict) -> float:
        return state["elapsed"] / self.budget if self.budget else state["step"] / max(1, self.total_steps)

    def done(self, state: dict, cfg: TrainConfig) -> bool:
        return self.progress(state) >= 1.0 or (cfg.max_steps is not None and state["step"] >= cfg.max_steps)


class Stopper:
    """SIGTERM or Ctrl-C asks the run to stop after the current step (every process agrees, `last` is
    saved); a second Ctrl-C stops at once."""

    def __init__(self):
        self.requested = False
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> Stopper:
        if threading.current_thread() is threading.main_thread():  # signal handlers live on the main thread
            for sig in (signal.SIGTERM, signal.SIGINT):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True


def agree(accelerator, *values: float) -> list[float]:
    """The largest of each value over all processes (elapsed time, stop requests, empty shares)."""
    if accelerator.num_processes == 1:
        return list(values)
    return accelerator.reduce(torch.tensor(values, device=accelerator.device), reduction="max").tolist()


def make_accelerator(cfg: TrainConfig):
    """Accelerate's view of the processes (one, or those `accelerate launch` started) and the device of this
    one. Precision stays ours (autocast, and a gradient scaler for fp16), so one process and many train alike."""
    from accelerate import Accelerator

    device = resolve_device(cfg.device)
    accelerator = Accelerator(cpu=device.type == "cpu", mixed_precision="no")
    return accelerator, accelerator.device if accelerator.num_processes > 1 else device


def train(cfg: TrainConfig) -> Path:
    """Train the glue; returns the best checkpoint (`last` without validation data)."""
    with default_dtype(torch.float64 if cfg.precision == "fp64" else torch.get_default_dtype()):
        return _train(cfg)


def _train(cfg: TrainConfig) -> Path:
    cfg = with_debug_settings(cfg)
    seed_everything(cfg.seed)
    accelerator, device = make_accelerator(cfg)
    amp = autocast_dtype(device, cfg.precision)
    model, resume = build_or_resume(cfg, device)
    data = TrainingData(cfg, model, accelerator, fit_text=resume is None)
    plan = Plan.of(cfg, len(data.train), accelerator.num_processes)
    learner = Learner(model, cfg, amp, accelerator)
    state: dict[str, Any] = {"step": 0, "rollout_steps": 0, "epoch": 0, "batch_in_epoch": 0, "elapsed": 0.0,
                             "best_val": None, "history": []}
    if resume is not None:
        tensors, state = resume
        learner.load_state(tensors, state.pop("param_groups"))
    record = RunRecord(cfg, learner, state, plan, accelerator)
    record.announce(model, len(data.train), amp, accelerator.num_processes)
    with Stopper() as stopper:
        try:
            while not plan.done(state, cfg):
                if train_epoch(cfg, plan, data, learner, state, record, accelerator, stopper):
                    raise KeyboardInterrupt  # a signal asked every process to stop: as Ctrl-C
        except KeyboardInterrupt:
            record.checkpoint("last", with_state=True)
            raise OmniError(f"stopped at step {state['step']}; resume with --checkpoint-path "
                            f"{record.dir / 'checkpoints' / 'last'}") from None
        except NonFiniteLoss:
            raise  # the failing steps were skipped; the last checkpoint stays as it was
        except Exception:
            with contextlib.suppress(Exception):  # keep what was learnt, then report the original error
                record.checkpoint("last", with_state=True)
            raise
        finally:
            record.close()
    return record.finish()


def train_epoch(cfg: TrainConfig, plan: Plan, data: TrainingData, learner: Learner, state: dict,
                record: RunRecord, accelerator, stopper: Stopper) -> bool:
    """Train to the end of this epoch or of the run; True when a stop was asked for."""
    data.train.set_epoch(state["epoch"])
    order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(cfg.seed + state["epoch"]))
    batches = order[: plan.steps_per_epoch * plan.batch_size].view(plan.steps_per_epoch, plan.batch_size)
    mine = slice(accelerator.process_index * plan.per_process, (accelerator.process_index + 1) * plan.per_process)
    shares = batches[state["batch_in_epoch"]:, mine].tolist()
    loader = DataLoader(data.train, batch_sampler=shares, collate_fn=collate, num_workers=cfg.num_workers,
                        pin_memory=data.device.type == "cuda")
    skipped: list[str] = []
    trained, whole = 0, state["batch_in_epoch"] == 0
    tick = time.perf_counter()  # training time counts data loading, not validation or saving
    for share, batch in zip(shares, loader):
        skipped += batch.errors
        now = time.perf_counter()
        elapsed, stop, empty = agree(accelerator, state["elapsed"] + now - tick, stopper.requested,
                                     not batch.captions)
        record.advance(elapsed - state["elapsed"])
        state["elapsed"], tick = elapsed, now
        if stop:
            return True
        if record.snapshot_due():
            tick = time.perf_counter()  # writing files is not training time
        if plan.done(state, cfg):
            break
        if not empty:  # a share of only unreadable pictures: every process skips the step
            progress = plan.progress(state)
            lr = learning_rate(cfg, state["step"], plan.warmup_steps, progress)
            for group in learner.optimizer.param_groups:
                group["lr"] = lr
            step_batch = data.step_batch(batch, learner, share, mine.start, plan.batch_size)
            step_cfg = cfg if cfg.kl_weight_start is None else replace(cfg, kl_weight=kl_weight(cfg, progress))
            losses, rollout = train_step(learner, step_batch, step_cfg, state["step"])
            state["step"] += 1
            trained += 1
            state["rollout_steps"] += int(rollout)
            record.advance(0.0, steps=1)
            if state["step"] % cfg.log_every == 0 or state["step"] == 1:
                record.log(losses, lr)
        state["batch_in_epoch"] += 1
        if not empty and record.save_due():
            record.checkpoint("last", with_state=True)
            tick = time.perf_counter()  # writing files is not training time
    elapsed, = agree(accelerator, state["elapsed"] + time.perf_counter() - tick)
    record.advance(elapsed - state["elapsed"])
    state["elapsed"] = elapsed
    record.snapshot_due()
    if skipped:
        record.write(f"epoch {state['epoch'] + 1}: skipped {len(skipped)} unreadable pictures (first: {skipped[0]})")
        state["skipped"] = state.get("skipped", 0) + len(skipped)
        if not trained and whole and state["batch_in_epoch"] == plan.steps_per_epoch:
            raise OmniError(f"no picture of {cfg.data} could be read in a whole epoch (first: {skipped[0]})")
    if state["batch_in_epoch"] == plan.steps_per_epoch:  # the epoch ran to its end
        state["epoch"] += 1
        state["batch_in_epoch"] = 0
        record.end_of_epoch(data.val)
    elif plan.done(state, cfg):  # stopped mid-epoch (budget, --max-steps): validate and save the final weights
        record.end_of_epoch(data.val, force_save=True)
    return False


def run_length_flags(cfg: TrainConfig) -> list[str]:
    """The flags that set the run's length; more than one is refused (none: DEFAULT_EPOCHS)."""
    given = [f"--{name.replace('_', '-')}" for name in ("epochs", "minutes", "max_steps")
             if getattr(cfg, name) is not None]
    if len(given) > 1:
        raise OmniError(f"{' and '.join(given)} each set the run's length: give one of them")
    return given


def with_debug_settings(cfg: TrainConfig) -> TrainConfig:
    length = run_length_flags(cfg)
    if not cfg.debug:
        return cfg
    return replace(cfg, max_train_samples=cfg.max_train_samples or 64, max_val_samples=cfg.max_val_samples or 16,
                   epochs=cfg.epochs if length else 1, log_every=1)


def build_or_resume(cfg: TrainConfig, device: torch.device) -> tuple[OmniGPT2o, tuple | None]:
    """Fresh glue on frozen backbones, or everything from a `last` checkpoint with its training state."""
    resume = None
    if cfg.checkpoint_path:
        resume = load_training_state(cfg.checkpoint_path)
        if resume is None:
            raise OmniError(f"{cfg.checkpoint_path} has no training state to resume from (use a `last` checkpoint)")
        model, _ = load_checkpoint(cfg.checkpoint_path, device)
    else:
        config = get_preset(cfg.preset)
        if cfg.latent_dim:
            config = config.replace(latent_dim=cfg.latent_dim)
        if cfg.model_overrides:
            config = config.replace(**cfg.model_overrides)
        model = build_model(config).to(device)
    model.to(torch.get_default_dtype())  # float64 for --precision fp64, else as built
    # Without the alignment loss its head gets no gradient: not a trained part then (DDP insists on that).
    model.alignment_head.requires_grad_(cfg.align_weight > 0)
    model.train()
    model.text_encoder.use_attention_for(device)
    return model, resume


class TrainingData:
    """The training and validation pictures, their caches and stored SD drafts; a loaded batch -> a StepBatch."""

    def __init__(self, cfg: TrainConfig, model: OmniGPT2o, accelerator, fit_text: bool = True):
        size, self.cfg, self.device = model.config.image_size, cfg, model.separator.device
        self.train = CaptionedImages(cfg.data, size, cfg.max_train_samples, seed=cfg.seed)
        self.val = CaptionedImages(cfg.val_data, size, cfg.max_val_samples, seed=cfg.seed) if cfg.val_data else None
        self.features = self.pixels = self.sd_store = self.text_cache = None
        if model.reader is not None or (fit_text and model.text_standardizer is not None):
            self.text_cache = self.caption_states(model, accelerator, fit_text)
        if cfg.cache_dir:  # read what precompute (or an earlier epoch) stored; store what is missing
            with accelerator.main_process_first():  # the main process makes the cache files
                if cfg.align_weight > 0:  # the ViT's view of the clean pictures serves the alignment loss only
                    self.features = feature_cache(cfg.cache_dir, model, self.train.records, size)
                self.pixels = self.train.pixels = pixel_cache(cfg.cache_dir, self.train.records, size)
        if cfg.draft == "sd":
            self.sd_store = find_draft_store(cfg.data, self.train.records, size)
            self.caption_rows = np.cumsum([0] + [len(r.captions) for r in self.train.records]).tolist()
            if accelerator.is_main_process:
                print(f"mixing in {describe(self.sd_store)} for {cfg.sd_draft_ratio:.0%} of the pictures", flush=True)
        elif cfg.draft != "noise":
            raise OmniError(f"--draft must be noise or sd, not {cfg.draft!r}")

    def step_batch(self, batch: Batch, learner: Learner, share: list[int], offset: int, size: int) -> StepBatch:
        """`share`: the data set indices this process was given, from row `offset` of a global batch of `size`
        (the unreadable ones are missing from `batch`)."""
        clean = to_unit_range(batch.images.to(self.device, non_blocking=True))
        target = None
        if self.cfg.align_weight > 0:  # without the alignment loss the frozen ViT never sees the clean picture
            target = self.features.get(batch.indices) if self.features is not None else None
            if target is None:
                target = frozen_targets(learner.model, clean, learner.amp)
                if self.features is not None:
                    self.features.put(batch.indices, target)
            target = target.to(self.device)
        if self.pixels is not None and not self.pixels.done[batch.indices].all():
            self.pixels.put(batch.indices, batch.images)
        positions = [offset + share.index(i) for i in batch.indices]
        step = StepBatch(clean, batch.captions, positions, size, target, text_cache=self.text_cache)
        if self.sd_store is not None:
            rows = [self.caption_rows[i] + j for i, j in zip(batch.indices, batch.caption_indices)]
            step.sd_stored = torch.from_numpy(self.sd_store.done[rows].astype(bool)).to(self.device)
            step.sd_pictures = to_unit_range(torch.from_numpy(self.sd_store.rows[rows])).to(self.device)
        return step


    def caption_states(self, model: OmniGPT2o, accelerator, fit_text: bool) -> TextStateCache | None:
        """The LM's states of every training caption (and of the empty one, for caption dropout), computed once
        and cached beside the split (or under --cache-dir); the standardiser's statistics fitted from them."""
        captions = sorted({c for r in self.train.records for c in r.captions} | {""})
        root = Path(self.cfg.cache_dir) / "text" if self.cfg.cache_dir else Path(self.cfg.data) / "text_states"
        with accelerator.main_process_first():  # the main process computes, the others read
            cache = TextStateCache(root, model)
            try:
                computed = cache.fill(captions, progress=self.cfg.progress and accelerator.is_main_process)
            except OSError as err:  # a read-only data folder, a full disk
                raise OmniError(f"cannot store the caption states in {root} ({err.strerror or err}); point "
                                "--cache-dir at a writable folder") from None
        if accelerator.is_main_process:
            print(f"caption states: {len(captions)} captions, {computed} computed now; encoding them cost "
                  f"{cache.flops / 1e12:.3g} TFLOP in {cache.seconds:.0f} s, once ({cache.dir})", flush=True)
        if fit_text and model.text_standardizer is not None:
            model.text_standardizer.fit(*cache.statistics([c for c in captions if c]))
        return cache if model.reader is not None else None


class RunRecord:
    """What a run leaves behind, written by the main process only: checkpoints, snapshots, TensorBoard and the
    loss history, sample grids, the progress bar."""

    def __init__(self, cfg: TrainConfig, learner: Learner, state: dict, plan: Plan, accelerator):
        self.cfg, self.learner, self.state, self.plan, self.accelerator = cfg, learner, state, plan, accelerator
        self.main = accelerator.is_main_process
        self.dir = Path(cfg.out)
        self.writer = self.lock = None
        if self.main:
            self.lock = RunLock(self.dir).acquire()  # only the main process writes the folder
            try:
                claim_run_folder(self.dir, cfg)
            except OmniError:
                self.lock.release()
                raise
            self.writer = _tensorboard(self.dir)
            if cfg.use_clearml:
                _clearml(self.dir, cfg)
            (self.dir / "train_config.json").write_text(json_text(asdict(cfg), indent=2))
        self.bar = progress_bar(plan, state, enabled=self.main and cfg.progress)

    def announce(self, model: OmniGPT2o, pictures: int, amp: torch.dtype | None, processes: int) -> None:
        n_trained = sum(p.numel() for p in self.learner.params)
        n_all = sum(p.numel() for p in model.parameters())
        plan, cfg = self.plan, self.cfg
        self.write(f"training {n_trained / 1e6:.2f}M of {n_all / 1e6:.2f}M parameters (the rest frozen) on "
                   f"{model.separator.device}{' with ' + str(amp).replace('torch.', '') + ' autocast' if amp else ''}"
                   f"{f' x {processes} processes' if processes > 1 else ''}; {pictures} pictures, batch "
                   f"{plan.batch_size}, {plan.steps_per_epoch} steps/epoch, "
                   + (f"time budget {cfg.minutes:g} min" if plan.budget else f"{plan.total_steps} steps"))

    def write(self, text: str) -> None:
        if self.main:
            tqdm.write(text)

    def advance(self, seconds: float, steps: int = 0) -> None:
        """Move the bar on by training seconds (a timed run) or steps."""
        advance(self.bar, seconds if self.plan.budget else steps)
        if self.plan.budget and not self.state.get("forecast") and self.state["step"] > 0 \
                and self.state["elapsed"] >= min(60.0, self.plan.budget / 4):
            self.state["forecast"] = forecast(self.state, self.plan.budget)
            self.write(self.state["forecast"])

    def snapshot_due(self) -> bool:
        """Keep the weights every `snapshot_minutes` of training (a learning curve); True when it did."""
        minutes, state = self.cfg.snapshot_minutes, self.state
        if not minutes or state["elapsed"] < 60 * minutes * (state.get("snapshots", 0) + 1):
            return False
        state["snapshots"] = int(state["elapsed"] // (60 * minutes))
        self.checkpoint(snapshot_name(state["snapshots"] * minutes), with_state=False)
        return True

    def save_due(self) -> bool:
        """A `last` is due after a step: every `save_every` steps or `save_every_minutes` of training (the
        agreed clock, so every process decides alike)."""
        cfg, state = self.cfg, self.state
        due = bool(cfg.save_every) and state["step"] % cfg.save_every == 0
        if cfg.save_every_minutes and state["elapsed"] >= state.get("saved_at", 0.0) + 60 * cfg.save_every_minutes:
            due = True
        if due:
            state["saved_at"] = state["elapsed"]
        return due

    def log(self, losses: dict[str, torch.Tensor], lr: float) -> None:
        """Losses averaged over processes (every process takes part); NONFINITE_STREAK skipped steps in a row
        stop the run."""
        names = list(losses)
        values = torch.stack([losses[k].float() for k in names])
        if self.accelerator.num_processes > 1:
            values = self.accelerator.reduce(values, reduction="mean")
        logged = {k: round(v, LOG_DECIMALS) for k, v in zip(names, values.tolist())}
        learner = self.learner
        self.state["nonfinite_steps"] = int(learner.skipped.item())
        if learner.worst_streak.item() >= NONFINITE_STREAK:
            raise NonFiniteLoss(f"the loss or its gradients were not finite {NONFINITE_STREAK} steps in a row by step "
                                f"{self.state['step']} (those steps were skipped); lower --learning-rate or "
                                "--kl-weight (the last checkpoint is kept as it was)")
        learner.worst_streak.zero_()
        if not self.main:
            return
        logged["lr"] = lr
        self.state["history"].append({"step": self.state["step"], "elapsed": round(self.state["elapsed"], 1),
                                      **logged})
        for k, v in logged.items():
            self.writer.add_scalar(f"train/{k}", v, self.state["step"])
        self.bar.set_postfix(step=self.state["step"], loss=f"{logged['loss']:.4f}", lr=f"{lr:.1e}")

    def checkpoint(self, name: str, with_state: bool) -> None:
        if not self.main:
            return
        learner, state = self.learner, self.state
        weights = learner.ema.state_dict(learner.model)
        if not all(torch.isfinite(t).all() for t in [*weights.values(), *learner.params]):  # a sync, once a save
            raise NonFiniteLoss(f"the weights are no longer finite at step {state['step']} (a step too large for "
                                "them); lower --learning-rate (the last checkpoint is kept as it was)")
        training_state = None
        if with_state:
            tensors, groups = learner.state()
            training_state = (tensors, state | {"param_groups": groups})
        meta = {"trained": {k: state.get(k, 0) for k in ("step", "rollout_steps", "epoch", "elapsed", "best_val")},
                "train_config": asdict(self.cfg)}
        save_checkpoint(learner.model, self.dir / "checkpoints" / name, weights=weights,
                        metadata=meta, training_state=training_state)

    def end_of_epoch(self, val_set: CaptionedImages | None, force_save: bool = False) -> None:
        """Validate the EMA weights, keep `best`, draw samples (main process); save `last`; others wait."""
        if self.main and val_set is not None:
            with self.learner.ema.applied():
                self._validate(val_set)
        if self.main and (force_save or self.state["epoch"] % self.cfg.save_interval == 0):
            self.checkpoint("last", with_state=True)
        self.accelerator.wait_for_everyone()

    def _validate(self, val_set: CaptionedImages) -> None:
        model, state, step = self.learner.model, self.state, self.state["step"]
        val = validate(model, val_set, self.cfg, self.learner.amp, model.separator.device)
        for k, v in val.items():
            self.writer.add_scalar(f"val/{k}", v, step)
        state["history"].append({"step": step, "elapsed": round(state["elapsed"], 1),
                                 **{f"val_{k}": round(v, LOG_DECIMALS) for k, v in val.items()}})
        tqdm.write(f"epoch {state['epoch']}: val loss {val['loss']:.4f} (recon {val['recon']:.4f})")
        if math.isfinite(val["loss"]) and (state["best_val"] is None or val["loss"] < state["best_val"]):
            state["best_val"] = round(val["loss"], 6)
            self.checkpoint("best", with_state=False)
        prompts = [r.captions[0] for r in val_set.records[:8]]
        grid = sample_grid(model, prompts, self.cfg.sample_steps, model.separator.device, self.cfg.seed)
        grid.save(self.dir / "samples_latest.png")
        self.writer.add_image("samples", np.asarray(grid), step, dataformats="HWC")

    def close(self) -> None:
        self.bar.close()
        if self.writer is not None:
            self.writer.close()
        if self.lock is not None:
            self.lock.release()

    def finish(self) -> Path:
        state = self.state
        if self.main:
            plot_history(state["history"], self.dir / "loss_curve.png")
            print(f"done: {state['step']} steps in {state['elapsed'] / 60:.1f} min; best val "
                  f"{state['best_val'] if state['best_val'] is not None else 'n/a'}; checkpoints in "
                  f"{self.dir / 'checkpoints'}")
        return self.dir / "checkpoints" / ("best" if state["best_val"] is not None else "last")


RUN_OUTPUTS = ("checkpoints", "tensorboard", "train_config.json", "loss_curve.png", "samples_latest.png")


def claim_run_folder(folder: Path, cfg: TrainConfig) -> None:
    """A new run takes an empty folder, its own (resuming), or one it is told to overwrite (whose outputs go)."""
    if not (folder / "train_config.json").exists() or cfg.checkpoint_path:
        return
    if not cfg.overwrite:
        raise OmniError(f"{folder} holds another run: resume it with --checkpoint-path "
                        f"{folder / 'checkpoints' / 'last'}, train into another --out, or replace it with --overwrite")
    for name in RUN_OUTPUTS:
        target = folder / name
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)


def progress_bar(plan: Plan, state: dict, enabled: bool) -> tqdm:
    if plan.budget:  # the bar follows the clock: seconds of the training budget
        return tqdm(total=round(plan.budget), initial=min(round(state["elapsed"]), round(plan.budget)),
                    disable=not enabled, unit="s", dynamic_ncols=True, desc="train",
                    bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f}s{postfix}")
    return tqdm(total=plan.total_steps, initial=state["step"], disable=not enabled, unit="step", dynamic_ncols=True,
                desc="train")


def forecast(state: dict, budget: float) -> str:
    """After the first minute of a timed run: how many steps the whole budget will give at this pace."""
    rate = state["step"] / state["elapsed"]
    return (f"{rate:.2f} steps/s over the first {state['elapsed']:.0f} s: the {budget / 60:g}-minute budget "
            f"gives about {round(rate * budget):,} steps")


def snapshot_name(minutes: float) -> str:
    """`snapshots/min-010.0`: the EMA weights after that many minutes of training (the exact time and
    step are in its config.json)."""
    return f"snapshots/min-{minutes:05.1f}"


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
        for k, v in compute_losses(out, clean, target, loss_weights(cfg)).items():
            totals[k] = totals.get(k, 0.0) + float(v) * b
        n += b
    model.train()
    return {k: v / max(n, 1) for k, v in totals.items()}


def sample_grid(model: OmniGPT2o, prompts: list[str], steps: int, device, seed: int):
    pipe = OmniGPT2oPipeline(model, device)
    images = pipe(prompts, num_inference_steps=steps, generator=torch.Generator().manual_seed(seed)).images
    model.train()
    return image_grid(images, prompts, cols=4)


def plot_history(history: list[dict], path: Path) -> None:
    """Training and validation loss against steps, as a picture."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train_pts = [(h["step"], h["loss"]) for h in history if "loss" in h]
    val_pts = [(h["step"], h["val_loss"]) for h in history if "val_loss" in h]
    if not train_pts:
        return
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot(*zip(*train_pts), label="train loss", lw=1)
    if val_pts:
        ax.plot(*zip(*val_pts), "o-", label="val loss (EMA)")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def advance(bar: tqdm, amount: float) -> None:
    """Move a bar on, never past its total (tqdm drops a total that is overrun, breaking the format)."""
    if bar.total is not None:
        amount = min(amount, bar.total - bar.n)
    bar.update(amount)


def _tensorboard(run_dir: Path):
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(run_dir / "tensorboard"))


def _clearml(run_dir: Path, cfg: TrainConfig) -> None:
    try:
        from clearml import Task
    except ImportError as err:
        raise OmniError("--use-clearml needs ClearML: pip install 'omni-gpt2o[clearml]'") from err
    task = Task.init(project_name="omni-gpt2o", task_name=run_dir.name)
    task.connect(asdict(cfg))
