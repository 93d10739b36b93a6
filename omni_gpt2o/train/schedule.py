"""How a run follows its progress: its length and batch layout (Plan), the learning rate and the KL weight."""

from __future__ import annotations

import math
from dataclasses import dataclass

from omni_gpt2o.fileio import OmniError
from omni_gpt2o.train.config import DEFAULT_EPOCHS, TrainConfig


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


def learning_rate(cfg: TrainConfig, step: int, warmup_steps: int, progress: float) -> float:
    """Linear warmup, then cosine decay to 10% over the run's progress (steps or minutes)."""
    warm = min(1.0, (step + 1) / max(1, warmup_steps))
    return cfg.learning_rate * warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def kl_weight(cfg: TrainConfig, progress: float) -> float:
    """The KL weight at this point of the run: constant, or geometric from `kl_weight_start` to `kl_weight`
    (a loose latent early, when the decoder learns to draw; a tidier one late, for drawing from noise)."""
    start, end = cfg.kl_weight_start, cfg.kl_weight
    if start is None or start == end:
        return end
    if start == 0 or end == 0:
        return start + (end - start) * min(1.0, progress)
    return start * (end / start) ** min(1.0, progress)
