"""The trained parameters' optimizer, EMA and gradient scaler: one update, and skipping non-finite steps."""

from __future__ import annotations

import contextlib
import math

import torch

from omni_gpt2o.checkpoint import optimizer_from_tensors, optimizer_to_tensors
from omni_gpt2o.fileio import OmniError
from omni_gpt2o.model import OmniGPT2o
from omni_gpt2o.train.config import TrainConfig
from omni_gpt2o.train.ema import EMA


class NonFiniteLoss(OmniError):
    """Gradients were not finite several steps in a row: the run stops, the last checkpoint stays as it was."""


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
