"""The moving average of the trained weights: what is validated, sampled and saved."""

from __future__ import annotations

from contextlib import contextmanager

import torch

from omni_gpt2o.model import OmniGPT2o


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
