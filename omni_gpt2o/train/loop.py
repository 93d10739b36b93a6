"""The training loop: build or resume the model, then epochs of steps until the run's length, a signal or an
error ends it; what was learnt is saved on every way out."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from omni_gpt2o.checkpoint import load_checkpoint, load_training_state
from omni_gpt2o.config import get_preset
from omni_gpt2o.data.dataset import collate
from omni_gpt2o.fileio import OmniError
from omni_gpt2o.model import OmniGPT2o, build_model
from omni_gpt2o.train.config import TrainConfig, with_debug_settings
from omni_gpt2o.train.data import TrainingData
from omni_gpt2o.train.learner import Learner, NonFiniteLoss
from omni_gpt2o.train.record import RunRecord
from omni_gpt2o.train.schedule import Plan, kl_weight, learning_rate
from omni_gpt2o.train.step import train_step
from omni_gpt2o.utils import autocast_dtype, default_dtype, resolve_device, seed_everything


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
    finish_epoch(cfg, plan, data, state, record, skipped, none_read=not trained and whole)
    return False


def finish_epoch(cfg: TrainConfig, plan: Plan, data: TrainingData, state: dict, record: RunRecord,
                 skipped: list[str], none_read: bool) -> None:
    """Report unreadable pictures (none readable in a whole epoch: an error); at the epoch's end, or the run's
    mid-epoch, validate and save."""
    record.snapshot_due()
    if skipped:
        record.write(f"epoch {state['epoch'] + 1}: skipped {len(skipped)} unreadable pictures (first: {skipped[0]})")
        state["skipped"] = state.get("skipped", 0) + len(skipped)
        if none_read and state["batch_in_epoch"] == plan.steps_per_epoch:
            raise OmniError(f"no picture of {cfg.data} could be read in a whole epoch (first: {skipped[0]})")
    if state["batch_in_epoch"] == plan.steps_per_epoch:  # the epoch ran to its end
        state["epoch"] += 1
        state["batch_in_epoch"] = 0
        record.end_of_epoch(data.val)
    elif plan.done(state, cfg):  # stopped mid-epoch (budget, --max-steps): validate and save the final weights
        record.end_of_epoch(data.val, force_save=True)


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
