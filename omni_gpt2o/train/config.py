"""What a training run is told: every training option, its default and its help text, in one place."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from omni_gpt2o.fileio import OmniError
from omni_gpt2o.options import option

DEFAULT_EPOCHS = 10  # a run's length when no --epochs, --minutes or --max-steps is given
NONFINITE_STREAK = 3  # steps in a row with non-finite gradients (each skipped) that stop a run
LOG_DECIMALS = 5  # losses in the run's history and logs


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
    palette_weight: float = option(1.0, "weight of the cross-entropy of the decoder's palette scores (models with "
                                        "decoder_palette only)", minimum=0)
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
    snapshot_steps: int | None = option(None, "also keep the weights every this many steps (checkpoints/snapshots/, "
                                              "for a curve against training compute)", positive=True)
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
