"""What a run leaves behind, written by the main process only: its folder, checkpoints, snapshots, TensorBoard
and the loss history, validation and sample grids, the progress bar."""

from __future__ import annotations

import math
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from omni_gpt2o.checkpoint import save_checkpoint
from omni_gpt2o.data.dataset import CaptionedImages
from omni_gpt2o.fileio import OmniError, RunLock, json_text
from omni_gpt2o.model import OmniGPT2o
from omni_gpt2o.train.config import LOG_DECIMALS, NONFINITE_STREAK, TrainConfig
from omni_gpt2o.train.learner import Learner, NonFiniteLoss
from omni_gpt2o.train.plots import plot_history
from omni_gpt2o.train.schedule import Plan
from omni_gpt2o.train.validation import sample_grid, validate

RUN_OUTPUTS = ("checkpoints", "tensorboard", "train_config.json", "loss_curve.png", "samples_latest.png")


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
        """Keep the weights every `snapshot_minutes` of training or every `snapshot_steps` steps (a learning
        curve); True when it did."""
        every, state = self.cfg.snapshot_steps, self.state
        if every and state["step"] and state["step"] % every == 0 and state.get("snapshot_step") != state["step"]:
            state["snapshot_step"] = state["step"]
            self.checkpoint(f"snapshots/step-{state['step']:07d}", with_state=False)
            return True
        minutes = self.cfg.snapshot_minutes
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
