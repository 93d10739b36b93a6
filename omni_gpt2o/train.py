"""Training: only the glue learns; GPT-2 and the ViT stay frozen.

One step: pick a caption per picture (some dropped, for classifier-free guidance), make a draft of each
clean picture at a random strength (pure noise included), run the model, and minimise
reconstruction + edge_weight x outline error + kl_weight x KL (+ alignment with the frozen ViT's view of
the clean picture, when asked for).
On a share of the steps (`rollout`) the draft is the sampler's own next draft instead, so the model learns
to fix its early guesses. AdamW on the trained parameters only, warmup then cosine, gradient clipping, an
EMA of the weights (used for validation, samples and the saved model), `last` and `best` checkpoints.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
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
from omni_gpt2o.data.dataset import CaptionedImages, collate, to_unit_range
from omni_gpt2o.drafts import make_draft, sample_strengths
from omni_gpt2o.fileio import OmniError
from omni_gpt2o.model import LossWeights, OmniGPT2o, build_model, compute_losses
from omni_gpt2o.pipeline import OmniGPT2oPipeline
from omni_gpt2o.scheduler import DraftScheduler
from omni_gpt2o.sd_drafts import describe, find_draft_store
from omni_gpt2o.utils import autocast, autocast_dtype, image_grid, resolve_device, seed_everything


@dataclass
class TrainConfig:
    data: str
    out: str
    val_data: str | None = None
    preset: str = "tiny"
    latent_dim: int | None = None  # overrides the preset's
    model_overrides: dict[str, Any] | None = None  # any other OmniConfig field, e.g. {"decoder_blocks": 2}
    epochs: int = 10
    minutes: float | None = None  # a time budget instead of epochs: the schedule follows the clock
    max_steps: int | None = None
    batch_size: int = 32
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    warmup_epochs: float = 0.2
    gradient_clip: float = 1.0
    kl_weight: float = 1e-3
    edge_weight: float = 1.0  # > 0: also match the picture's pixel differences (its outlines)
    align_weight: float = 0.0  # > 0: also predict the frozen ViT's view of the clean picture (one more ViT pass)
    caption_dropout: float = 0.1  # empty caption this often: the unconditional half of CFG
    pure_noise: float = 0.2  # drafts that are pure noise (drawing from text alone)
    noise_skew: float = 1.0  # 1: the other strengths uniform, as the sampler visits them; > 1 leans to strong noise
    rollout: float = 0.0  # share of steps that train on the sampler's own next draft (see rollout_draft)
    ema_decay: float = 0.999
    max_train_samples: int | None = None
    max_val_samples: int | None = 256
    seed: int = 0
    debug: bool = False
    save_interval: int = 1  # epochs between `last` checkpoints
    snapshot_minutes: float | None = None  # also keep the weights every this many training minutes (a curve)
    checkpoint_path: str | None = None  # resume from this checkpoint (a `last` folder)
    use_clearml: bool = False
    device: str = "auto"
    precision: str = "auto"  # auto | bf16 | fp32
    num_workers: int = 0
    draft: str = "noise"  # noise: procedural drafts only; sd: mix in stored Stable Diffusion drafts
    sd_draft_ratio: float = 0.5  # with --draft sd: the share of pictures whose draft starts from SD's picture
    cache_dir: str | None = None  # on-disk caches: ViT embeddings of the clean pictures, preprocessed pictures
    sample_steps: int = 8
    log_every: int = 10
    progress: bool = True


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


def learning_rate(cfg: TrainConfig, step: int, warmup_steps: int, progress: float) -> float:
    """Linear warmup, then cosine decay to 10% over the run's progress (steps or minutes)."""
    warm = min(1.0, (step + 1) / max(1, warmup_steps))
    return cfg.learning_rate * warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


class Stop(Exception):
    """Raised by SIGTERM so a killed run saves `last` before it goes."""


def train(cfg: TrainConfig) -> Path:
    run_dir = Path(cfg.out)
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.debug:
        cfg.max_train_samples, cfg.max_val_samples = cfg.max_train_samples or 64, cfg.max_val_samples or 16
        cfg.epochs, cfg.log_every = min(cfg.epochs, 1), 1
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    amp = autocast_dtype(device, cfg.precision)

    # --- model: fresh glue on frozen backbones, or everything from a checkpoint to resume ---------
    resume = load_training_state(cfg.checkpoint_path) if cfg.checkpoint_path else None
    if cfg.checkpoint_path:
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
    model.train()
    model.text_encoder.use_attention_for(device)
    params = model.trainable_parameters()
    n_trained, n_all = sum(p.numel() for p in params), sum(p.numel() for p in model.parameters())

    # --- data ---------------------------------------------------------------------------------------
    size = model.config.image_size
    train_set = CaptionedImages(cfg.data, size, cfg.max_train_samples, seed=cfg.seed)
    val_set = CaptionedImages(cfg.val_data, size, cfg.max_val_samples, seed=cfg.seed) if cfg.val_data else None
    cache = pixels = None
    if cfg.cache_dir:  # read what precompute (or an earlier epoch) stored; store what is missing
        if cfg.align_weight > 0:  # the ViT's view of the clean pictures serves the alignment loss only
            cache = feature_cache(cfg.cache_dir, model, train_set.records, size)
        pixels = train_set.pixels = pixel_cache(cfg.cache_dir, train_set.records, size)
    sd_store, caption_offsets = None, []
    if cfg.draft == "sd":
        sd_store = find_draft_store(cfg.data, train_set.records, size)
        caption_offsets = np.cumsum([0] + [len(r.captions) for r in train_set.records]).tolist()  # row of caption 0
        print(f"mixing in {describe(sd_store)} for {cfg.sd_draft_ratio:.0%} of the pictures", flush=True)
    elif cfg.draft != "noise":
        raise OmniError(f"--draft must be noise or sd, not {cfg.draft!r}")
    batch_size = min(cfg.batch_size, len(train_set))
    steps_per_epoch = len(train_set) // batch_size
    warmup_steps = max(1, round(cfg.warmup_epochs * steps_per_epoch))
    total_steps = cfg.max_steps or cfg.epochs * steps_per_epoch
    budget = cfg.minutes * 60 if cfg.minutes else None

    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay, betas=(0.9, 0.99),
                                  fused=device.type in ("cuda", "cpu"))  # one kernel for all parameters
    ema = EMA(model, cfg.ema_decay)
    state: dict[str, Any] = {"step": 0, "epoch": 0, "batch_in_epoch": 0, "elapsed": 0.0, "best_val": None,
                             "history": []}
    if resume is not None:
        tensors, state = resume
        model.load_state_dict({k[len("raw."):]: v for k, v in tensors.items() if k.startswith("raw.")}, strict=False)
        ema.shadow = {n: tensors[f"ema.{n}"].to(device) for n in ema.params}
        optimizer_from_tensors(optimizer, tensors, state.pop("param_groups"))

    writer = _tensorboard(run_dir)
    if cfg.use_clearml:
        _clearml(run_dir, cfg)
    (run_dir / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2))
    print(f"training {n_trained / 1e6:.2f}M of {n_all / 1e6:.2f}M parameters (the rest frozen) on {device}"
          f"{' with ' + str(amp).replace('torch.', '') + ' autocast' if amp else ''}; "
          f"{len(train_set)} pictures, {steps_per_epoch} steps/epoch, "
          + (f"time budget {cfg.minutes:g} min" if budget else f"{total_steps} steps"), flush=True)

    def progress() -> float:
        return state["elapsed"] / budget if budget else state["step"] / max(1, total_steps)

    def done() -> bool:
        return progress() >= 1.0 or (cfg.max_steps is not None and state["step"] >= cfg.max_steps)

    def checkpoint(name: str, with_state: bool) -> None:
        tensors = {f"raw.{k}": v for k, v in model.trainable_state_dict().items()}
        tensors |= {f"ema.{n}": v for n, v in ema.shadow.items()}
        opt_tensors, groups = optimizer_to_tensors(optimizer)
        tensors |= opt_tensors
        meta = {"trained": {k: state.get(k, 0) for k in ("step", "rollout_steps", "epoch", "elapsed", "best_val")},
                "train_config": asdict(cfg)}
        save_checkpoint(model, run_dir / "checkpoints" / name, weights=ema.state_dict(model), metadata=meta,
                        training_state=(tensors, state | {"param_groups": groups}) if with_state else None)

    def one_step(batch) -> tuple[dict[str, float], float]:
        clean = to_unit_range(batch.images.to(device, non_blocking=True))
        lr = learning_rate(cfg, state["step"], warmup_steps, progress())
        for group in optimizer.param_groups:
            group["lr"] = lr
        # Every random choice of a step comes from (seed, step): a resumed run repeats exactly.
        generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + state["step"])
        target = None
        if cfg.align_weight > 0:  # without the alignment loss the frozen ViT never sees the clean picture
            target = cache.get(batch.indices) if cache is not None else None
            if target is None:
                target = frozen_targets(model, clean, amp)
                if cache is not None:
                    cache.put(batch.indices, target)
        if pixels is not None and not pixels.done[batch.indices].all():
            pixels.put(batch.indices, batch.images)
        sd = None
        if sd_store is not None:
            rows = [caption_offsets[i] + j for i, j in zip(batch.indices, batch.caption_indices)]
            stored = torch.from_numpy(sd_store.done[rows].astype(bool))
            pick = (torch.rand(len(rows), generator=generator) < cfg.sd_draft_ratio) & stored
            if pick.any():
                sd = (to_unit_range(torch.from_numpy(sd_store.rows[rows])).to(device), pick.to(device))
        if target is not None:
            target = target.to(device)
        losses = train_step(model, optimizer, ema, clean, target, batch.captions, cfg, generator, amp, state["step"],
                            sd_drafts=sd)
        return losses, lr

    def log(losses: dict[str, float], lr: float) -> None:
        logged = {k: round(v, 5) for k, v in losses.items()} | {"lr": lr}
        state["history"].append({"step": state["step"], "elapsed": round(state["elapsed"], 1), **logged})
        for k, v in logged.items():
            writer.add_scalar(f"train/{k}", v, state["step"])
        bar.set_postfix(step=state["step"], loss=f"{losses['loss']:.4f}", lr=f"{lr:.1e}")

    old_handler = signal.signal(signal.SIGTERM, _raise_stop)
    if budget:  # the bar follows the clock: seconds of the training budget
        bar = tqdm(total=round(budget), initial=min(round(state["elapsed"]), round(budget)), disable=not cfg.progress,
                   unit="s",
                   dynamic_ncols=True, desc="train", bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f}s{postfix}")
    else:
        bar = tqdm(total=total_steps, initial=state["step"], disable=not cfg.progress, unit="step",
                   dynamic_ncols=True, desc="train")
    try:
        while not done():
            train_set.set_epoch(state["epoch"])
            order = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(cfg.seed + state["epoch"]))
            batches = order[: steps_per_epoch * batch_size].view(steps_per_epoch, batch_size).tolist()
            loader = DataLoader(train_set, batch_sampler=batches[state["batch_in_epoch"]:], collate_fn=collate,
                                num_workers=cfg.num_workers, pin_memory=device.type == "cuda")
            skipped: list[str] = []
            tick = time.perf_counter()  # training time counts data loading, not validation
            for batch in loader:
                skipped += batch.errors
                if batch.captions:  # a batch of only unreadable pictures is skipped whole
                    losses, lr = one_step(batch)
                    state["step"] += 1
                    state["rollout_steps"] = state.get("rollout_steps", 0) + int(losses.pop("rollout"))
                    now = time.perf_counter()
                    state["elapsed"] += now - tick
                    advance(bar, now - tick if budget else 1)
                    tick = now
                    if budget and not state.get("forecast") and state["elapsed"] >= min(60.0, budget / 4):
                        state["forecast"] = forecast(state, budget)
                        tqdm.write(state["forecast"])
                    if cfg.snapshot_minutes and state["elapsed"] >= 60 * cfg.snapshot_minutes * (
                            state.get("snapshots", 0) + 1):
                        state["snapshots"] = int(state["elapsed"] // (60 * cfg.snapshot_minutes))
                        checkpoint(snapshot_name(state["snapshots"] * cfg.snapshot_minutes), with_state=False)
                        tick = time.perf_counter()  # writing files is not training time
                    if state["step"] % cfg.log_every == 0 or state["step"] == 1:
                        log(losses, lr)
                state["batch_in_epoch"] += 1
                if done():
                    break
            if skipped:
                tqdm.write(f"epoch {state['epoch'] + 1}: skipped {len(skipped)} unreadable pictures "
                           f"(first: {skipped[0]})")
                state["skipped"] = state.get("skipped", 0) + len(skipped)
            if state["batch_in_epoch"] == steps_per_epoch:  # the epoch ran to its end
                state["epoch"] += 1
                state["batch_in_epoch"] = 0
                end_of_epoch(model, ema, val_set, cfg, state, writer, run_dir, amp, device, checkpoint)
            elif done():  # stopped mid-epoch (budget, --max-steps): validate and save the final weights too
                end_of_epoch(model, ema, val_set, cfg, state, writer, run_dir, amp, device, checkpoint,
                             force_save=True)
    except (KeyboardInterrupt, Stop):
        bar.close()
        checkpoint("last", with_state=True)
        raise OmniError(f"stopped at step {state['step']}; resume with --checkpoint-path "
                        f"{run_dir / 'checkpoints' / 'last'}") from None
    except Exception:
        bar.close()
        with contextlib.suppress(Exception):  # keep what was learnt, then report the original error
            checkpoint("last", with_state=True)
        raise
    finally:
        signal.signal(signal.SIGTERM, old_handler)
        bar.close()
        writer.close()
    plot_history(state["history"], run_dir / "loss_curve.png")
    print(f"done: {state['step']} steps in {state['elapsed'] / 60:.1f} min; best val "
          f"{state['best_val'] if state['best_val'] is not None else 'n/a'}; checkpoints in {run_dir / 'checkpoints'}")
    return run_dir / "checkpoints" / ("best" if state["best_val"] is not None else "last")


def forecast(state: dict, budget: float) -> str:
    """After the first minute of a timed run: how many steps the whole budget will give at this pace."""
    rate = state["step"] / state["elapsed"]
    return (f"{rate:.2f} steps/s over the first {state['elapsed']:.0f} s: the {budget / 60:g}-minute budget "
            f"gives about {round(rate * budget):,} steps")


def snapshot_name(minutes: float) -> str:
    """`snapshots/min-010.0`: the EMA weights after that many minutes of training (the exact time and
    step are in its config.json)."""
    return f"snapshots/min-{minutes:05.1f}"


def loss_weights(cfg: TrainConfig) -> LossWeights:
    return LossWeights(kl=cfg.kl_weight, alignment=cfg.align_weight, edge=cfg.edge_weight)


def params_of(optimizer: torch.optim.Optimizer) -> list[torch.nn.Parameter]:
    return [p for group in optimizer.param_groups for p in group["params"]]


@torch.no_grad()
def frozen_targets(model: OmniGPT2o, clean: torch.Tensor, amp: torch.dtype | None) -> torch.Tensor:
    """The frozen ViT's patch tokens of the clean pictures: the alignment loss's target."""
    with autocast(clean.device, amp):
        return model.image_encoder(clean)


def alignment_targets(model: OmniGPT2o, clean: torch.Tensor, cfg: TrainConfig,
                      amp: torch.dtype | None) -> torch.Tensor | None:
    """`frozen_targets` when the alignment loss is on; None (no ViT pass over the clean picture) when off."""
    return frozen_targets(model, clean, amp) if cfg.align_weight > 0 else None


@torch.no_grad()
def rollout_draft(model: OmniGPT2o, ids: torch.Tensor, mask: torch.Tensor, clean: torch.Tensor,
                  generator: torch.Generator, amp: torch.dtype | None) -> tuple[torch.Tensor, torch.Tensor]:
    """A draft as the sampler makes it: predict from a strong draft, then step down to a weaker one built
    from that prediction and the noise the strong draft held. Training on these teaches the model to fix
    its own early guesses (a blob where a square belongs), not only degraded true pictures."""
    b = clean.shape[0]
    high = 0.5 + 0.5 * torch.rand(b, generator=generator)
    low = high * (0.3 + 0.6 * torch.rand(b, generator=generator))
    high, low = high.to(clean.device), low.to(clean.device)
    strong = make_draft(clean, high, generator)
    with autocast(clean.device, amp):
        guess = model(ids, mask, strong, high).image.float().clamp(-1, 1)
    return DraftScheduler.step(guess, high, strong, low), low


def train_step(model: OmniGPT2o, optimizer: torch.optim.Optimizer, ema: EMA, clean: torch.Tensor,
               target_tokens: torch.Tensor | None, captions: list[str], cfg: TrainConfig, generator: torch.Generator,
               amp: torch.dtype | None, step: int,
               sd_drafts: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict[str, float]:
    """One optimisation step. `sd_drafts` = (SD pictures, which rows use them) replaces, for those rows,
    the clean picture that the draft is made from; the target stays the clean picture."""
    b = clean.shape[0]
    drop = torch.rand(b, generator=generator) < cfg.caption_dropout
    captions = ["" if d else c for c, d in zip(captions, drop.tolist())]
    ids, mask = model.tokenize(captions)
    strength = sample_strengths(b, generator, pure_noise=cfg.pure_noise, skew=cfg.noise_skew).to(clean.device)
    source = clean
    if sd_drafts is not None:
        pictures, use = sd_drafts
        source = torch.where(use.view(-1, 1, 1, 1), pictures, clean)
        strength = torch.where(use, strength.clamp(max=0.9), strength)  # keep some of SD's picture
    draft = make_draft(source, strength, generator)
    rollout = bool(cfg.rollout) and torch.rand(1, generator=generator).item() < cfg.rollout
    if rollout:
        draft, strength = rollout_draft(model, ids, mask, clean, generator, amp)
    with autocast(clean.device, amp):
        out = model(ids, mask, draft, strength, sample_latents=True, generator=generator)
    losses = compute_losses(out, clean, target_tokens, loss_weights(cfg))
    optimizer.zero_grad(set_to_none=True)
    losses["loss"].backward()
    losses = {k: v.detach() for k, v in losses.items()}
    if cfg.gradient_clip > 0:
        losses["grad_norm"] = torch.nn.utils.clip_grad_norm_(params_of(optimizer), cfg.gradient_clip)
    optimizer.step()
    ema.update(step)
    values = {k: v.item() for k, v in losses.items()} | {"rollout": float(rollout)}
    if not math.isfinite(values["loss"]):
        raise OmniError(f"loss became {values['loss']} at step {step}; lower --learning-rate or --kl-weight")
    return values


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


def end_of_epoch(model, ema, val_set, cfg, state, writer, run_dir, amp, device, checkpoint, force_save=False):
    epoch = state["epoch"]
    with ema.applied():
        if val_set is not None:
            val = validate(model, val_set, cfg, amp, device)
            for k, v in val.items():
                writer.add_scalar(f"val/{k}", v, state["step"])
            state["history"].append({"step": state["step"], "elapsed": round(state["elapsed"], 1),
                                     **{f"val_{k}": round(v, 5) for k, v in val.items()}})
            tqdm.write(f"epoch {epoch}: val loss {val['loss']:.4f} (recon {val['recon']:.4f})")
            if state["best_val"] is None or val["loss"] < state["best_val"]:
                state["best_val"] = round(val["loss"], 6)
                checkpoint("best", with_state=False)
            prompts = [r.captions[0] for r in val_set.records[:8]]
            grid = sample_grid(model, prompts, cfg.sample_steps, device, cfg.seed)
            grid.save(run_dir / "samples_latest.png")
            writer.add_image("samples", np.asarray(grid), state["step"], dataformats="HWC")
    if force_save or epoch % cfg.save_interval == 0:
        checkpoint("last", with_state=True)


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


def _raise_stop(signum, frame):
    raise Stop()


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
