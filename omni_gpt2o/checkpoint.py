"""Checkpoints: a folder with a JSON config and safetensors weights, written atomically.

    CKPT/config.json              model config + training metadata
    CKPT/model.safetensors        the trained glue (EMA weights when training kept an EMA)
    CKPT/text_encoder/, tokenizer/, image_encoder/
                                  frozen backbones, only those that exist nowhere else (built from a seed);
                                  a hub or packaged model is named in config.json (id, or package, file, sha256)
    CKPT/training_state.safetensors + trainer_state.json
                                  optimizer, raw weights, counters: only to resume training

Loading never unpickles: safetensors and JSON only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from omni_gpt2o import __version__
from omni_gpt2o.config import OmniConfig
from omni_gpt2o.fileio import OmniError, atomic_dir, json_text
from omni_gpt2o.model import OmniGPT2o, build_model

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
TRAINING_STATE = "training_state.safetensors"
TRAINER_STATE = "trainer_state.json"


def save_checkpoint(model: OmniGPT2o, path: str | Path, weights: dict[str, torch.Tensor] | None = None,
                    metadata: dict[str, Any] | None = None,
                    training_state: tuple[dict[str, torch.Tensor], dict[str, Any]] | None = None) -> Path:
    """Write a checkpoint folder atomically. `weights` defaults to the model's trained weights."""
    path = Path(path)
    weights = model.trainable_state_dict() if weights is None else weights
    with atomic_dir(path) as tmp:
        config = {"omni_gpt2o_version": __version__, "model": model.config.to_dict(), **(metadata or {})}
        (tmp / CONFIG).write_text(json_text(config, indent=2, sort_keys=True))
        save_file({k: v.detach().contiguous().cpu() for k, v in weights.items()}, str(tmp / WEIGHTS))
        if model.config.builds_text_model:
            model.text_encoder.save(tmp)
        if model.config.builds_image_model:
            model.image_encoder.save(tmp, model.config.image_model_kwargs)
        if training_state is not None:
            tensors, state = training_state
            save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp / TRAINING_STATE))
            (tmp / TRAINER_STATE).write_text(json_text(state, indent=2, sort_keys=True))
    return path


def read_config(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not (path / CONFIG).is_file() or not (path / WEIGHTS).is_file():
        raise OmniError(f"{path} is not an Omni-GPT2o checkpoint (needs {CONFIG} and {WEIGHTS})")
    try:
        return json.loads((path / CONFIG).read_text())
    except json.JSONDecodeError as err:
        raise OmniError(f"{path / CONFIG} is not valid JSON: {err}") from err


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> tuple[OmniGPT2o, dict[str, Any]]:
    """Rebuild the model from a checkpoint folder: backbones as the config says, trained weights loaded."""
    path = Path(path)
    meta = read_config(path)
    model = build_model(OmniConfig.from_dict(meta["model"]), ckpt_dir=path)
    weights = read_weights(path / WEIGHTS)
    try:
        missing, unexpected = model.load_state_dict(weights, strict=False)
    except RuntimeError as err:  # tensors of other shapes (another --latent-dim, say)
        raise OmniError(f"{path / WEIGHTS} does not match its config.json: {str(err).splitlines()[-1].strip()}") \
            from None
    missing = [k for k in missing if not k.startswith(OmniGPT2o.FROZEN)]
    if missing or unexpected:
        raise OmniError(f"{path / WEIGHTS} does not match its config: missing {missing[:3]}, "
                        f"unexpected {unexpected[:3]}")
    return model.to(device).eval(), meta


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file, or one clear error when it is cut short or not safetensors at all."""
    try:
        return load_file(str(path))
    except Exception as err:  # safetensors raises its own error types (header, size, I/O)
        raise OmniError(f"{path} cannot be read as safetensors ({str(err).splitlines()[0]}): the file is damaged or "
                        "incomplete; use another checkpoint (`last` is written whole or not at all)") from None


def load_training_state(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    path = Path(path)
    if not (path / TRAINING_STATE).is_file():
        return None
    return read_weights(path / TRAINING_STATE), json.loads((path / TRAINER_STATE).read_text())


def optimizer_to_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """Split an optimizer's state into tensors (for safetensors) and JSON-able param groups."""
    sd = optimizer.state_dict()
    tensors = {f"optim.{idx}.{key}": value for idx, slot in sd["state"].items()
               for key, value in slot.items() if torch.is_tensor(value)}
    return tensors, sd["param_groups"]


def optimizer_from_tensors(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                           param_groups: list[dict]) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": param_groups})
