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

The package, each module one job, each importing only those above it:
    config      every training option and its default (TrainConfig)
    schedule    the run's length and batch layout (Plan), learning rate and KL weight over the run
    ema         the moving average of the trained weights
    learner     optimizer, EMA and gradient scaler; one update; non-finite steps skipped
    step        one optimisation step: draws, drafts, forward, losses (train_step)
    data        the run's pictures and caches; a loaded batch -> a StepBatch
    validation  validation loss and sample grids
    plots       the loss curve
    record      what a run leaves behind: folder, checkpoints, logs, progress bar
    loop        train(): build or resume, epochs of steps, every way out saved
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# The public names load lazily (as the package's own), so a command that only parses TrainConfig's flags does
# not import torch.
_EXPORTS = {
    "DEFAULT_EPOCHS": "config", "LOG_DECIMALS": "config", "NONFINITE_STREAK": "config", "TrainConfig": "config",
    "Plan": "schedule", "kl_weight": "schedule", "learning_rate": "schedule",
    "EMA": "ema",
    "Learner": "learner", "NonFiniteLoss": "learner",
    "StepBatch": "step", "StepDraws": "step", "alignment_targets": "step", "frozen_targets": "step",
    "rollout_draft": "step", "train_step": "step",
    "advance": "record",
    "train": "loop",
}
__all__ = ["DEFAULT_EPOCHS", "EMA", "LOG_DECIMALS", "NONFINITE_STREAK", "Learner", "NonFiniteLoss", "Plan",
           "StepBatch", "StepDraws", "TrainConfig", "advance", "alignment_targets", "frozen_targets", "kl_weight",
           "learning_rate", "rollout_draft", "train", "train_step"]

if TYPE_CHECKING:
    from omni_gpt2o.train.config import DEFAULT_EPOCHS, LOG_DECIMALS, NONFINITE_STREAK, TrainConfig
    from omni_gpt2o.train.ema import EMA
    from omni_gpt2o.train.learner import Learner, NonFiniteLoss
    from omni_gpt2o.train.loop import train
    from omni_gpt2o.train.record import advance
    from omni_gpt2o.train.schedule import Plan, kl_weight, learning_rate
    from omni_gpt2o.train.step import StepBatch, StepDraws, alignment_targets, frozen_targets, rollout_draft, train_step


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"omni_gpt2o.train.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'omni_gpt2o.train' has no attribute {name!r}")
