import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from omni_gpt2o import scheduler as scheduler_module
from omni_gpt2o.checkpoint import load_checkpoint
from omni_gpt2o.config import get_preset
from omni_gpt2o.fileio import OmniError
from omni_gpt2o.model import build_model
from omni_gpt2o.pipeline import OmniGPT2oPipeline
from omni_gpt2o.train import LOG_DECIMALS, TrainConfig, train
from omni_gpt2o.train import data as data_module
from omni_gpt2o.train import loop as loop_module
from omni_gpt2o.train import record as record_module
from omni_gpt2o.train import step as step_module

from .numerics import assert_same_math

# Two runs of the same math log losses that differ by at most one step of the history's last decimal (float slack).
LOGGED_LOSS_ROUNDING = 1.5 * 10.0 ** -LOG_DECIMALS

def _cfg(shapes_splits, out, **kw) -> TrainConfig:
    train_dir, val_dir = shapes_splits
    base = dict(data=str(train_dir), val_data=str(val_dir), out=str(out), preset="micro", batch_size=8,
                learning_rate=3e-3, warmup_epochs=0.1, ema_decay=0.9, progress=False, log_every=1, sample_steps=2)
    return TrainConfig(**(base | kw))


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, shapes_splits):
    """A short real training run (micro preset, 4 epochs of 96 Shapes pictures), shared by the tests."""
    out = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    fresh = build_model(get_preset("micro"))  # the same frozen backbones (same seed), before any training
    best = train(_cfg(shapes_splits, out, epochs=4))
    return out, best, fresh


def test_loss_falls(trained_run):
    out, _, _ = trained_run
    state = json.loads((out / "checkpoints" / "last" / "trainer_state.json").read_text())
    losses = [h["recon"] for h in state["history"] if "recon" in h]
    val = [h["val_loss"] for h in state["history"] if "val_loss" in h]
    assert len(losses) == 48 and len(val) == 4
    assert np.mean(losses[-8:]) < 0.5 * np.mean(losses[:4])
    assert val[-1] < val[0]


def test_frozen_backbones_are_bit_identical_after_training(trained_run):
    _, best, fresh = trained_run
    model, _ = load_checkpoint(best)
    trained_sd, fresh_sd = model.state_dict(), fresh.state_dict()
    frozen = [k for k in trained_sd if k.startswith(("text_encoder", "image_encoder"))]
    assert len(frozen) > 50
    assert all(torch.equal(trained_sd[k], fresh_sd[k]) for k in frozen)
    changed = [k for k in trained_sd if k not in frozen and not torch.equal(trained_sd[k], fresh_sd[k])]
    assert len(changed) > 10  # while the glue did learn


def test_run_folder_has_checkpoints_samples_and_curves(trained_run):
    out, best, _ = trained_run
    assert best == out / "checkpoints" / "best"
    for name in ("best", "last"):
        files = {p.name for p in (out / "checkpoints" / name).rglob("*") if p.is_file()}
        assert "model.safetensors" in files and "config.json" in files
        assert not any(f.endswith((".bin", ".pt", ".pth", ".pkl")) for f in files)  # nothing to unpickle
    assert (out / "checkpoints" / "last" / "training_state.safetensors").is_file()
    assert not (out / "checkpoints" / "best" / "training_state.safetensors").exists()
    assert (out / "loss_curve.png").stat().st_size > 1000
    assert (out / "samples_latest.png").is_file()
    assert any((out / "tensorboard").iterdir())


def test_trained_model_draws_differently_from_untrained(trained_run):
    _, best, fresh = trained_run
    prompts = ["a red circle on the left", "a blue square at the top"]
    gens = lambda: [torch.Generator().manual_seed(i) for i in range(2)]  # noqa: E731
    trained = OmniGPT2oPipeline.from_pretrained(best, device="cpu")(prompts, num_inference_steps=3, generator=gens())
    untrained = OmniGPT2oPipeline(fresh.eval())(prompts, num_inference_steps=3, generator=gens())
    for a, b in zip(trained.images, untrained.images):
        a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
        assert np.abs(a - b).mean() > 5
        assert a.mean() < 80  # it learnt that Shapes pictures are mostly black


@pytest.mark.parametrize("where", ["before a step", "inside a step's forward", "after a step", "ctrl-c"])
def test_a_run_stopped_anywhere_in_a_step_resumes_bit_for_bit(tmp_path, shapes_splits, monkeypatch, where):
    """SIGTERM (or Ctrl-C) at any point of a step: the run stops at the step's end, saves `last`, and the resumed
    run ends with exactly the weights of the uninterrupted one."""
    import os
    import signal

    straight = train(_cfg(shapes_splits, tmp_path / "straight", max_steps=6))
    calls = {"n": 0}

    def hit() -> None:
        calls["n"] += 1
        if calls["n"] == 4:
            os.kill(os.getpid(), signal.SIGINT if where == "ctrl-c" else signal.SIGTERM)

    # Patched where it is called: pass_losses by the step, train_step by the loop.
    module, target = (step_module, "pass_losses") if where == "inside a step's forward" else (loop_module, "train_step")
    real = getattr(module, target)

    def wrapped(*args, **kwargs):
        if where != "after a step":
            hit()
        out = real(*args, **kwargs)
        if where == "after a step":
            hit()
        return out

    monkeypatch.setattr(module, target, wrapped)
    with pytest.raises(OmniError, match="resume with --checkpoint-path"):
        train(_cfg(shapes_splits, tmp_path / "killed", max_steps=6))
    monkeypatch.setattr(module, target, real)
    last = tmp_path / "killed" / "checkpoints" / "last"
    assert json.loads((last / "trainer_state.json").read_text())["step"] == 4  # the step in flight was finished

    resumed = train(_cfg(shapes_splits, tmp_path / "killed", max_steps=6, checkpoint_path=str(last)))
    a = load_file(str(straight / "model.safetensors"))
    b = load_file(str(resumed / "model.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)  # bit for bit


def test_a_second_ctrl_c_stops_at_once_and_still_saves_last(tmp_path, shapes_splits, monkeypatch):
    real_step = loop_module.train_step
    calls = {"n": 0}

    def dying_step(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt  # as the second Ctrl-C raises in the middle of a step
        return real_step(*args, **kwargs)

    monkeypatch.setattr(loop_module, "train_step", dying_step)
    with pytest.raises(OmniError, match="resume with --checkpoint-path"):
        train(_cfg(shapes_splits, tmp_path / "killed", max_steps=6))
    last = tmp_path / "killed" / "checkpoints" / "last"
    assert json.loads((last / "trainer_state.json").read_text())["step"] == 3


def test_resume_needs_a_training_state(tmp_path, trained_run, shapes_splits):
    _, best, _ = trained_run
    with pytest.raises(OmniError, match="no training state"):
        train(_cfg(shapes_splits, tmp_path / "x", checkpoint_path=str(best)))


def test_rollout_trains_on_the_samplers_own_drafts(micro_model, shapes_splits):
    from omni_gpt2o.train import rollout_draft

    train_dir, _ = shapes_splits
    clean = torch.rand(4, 3, 32, 32) * 2 - 1
    ids, mask = micro_model.tokenize(["a red circle on the left"] * 4)
    high, low = torch.full((4,), 0.8), torch.full((4,), 0.4)
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
    draft = rollout_draft(micro_model, ids, mask, clean, high, low, noise, None)
    assert draft.shape == clean.shape and not torch.allclose(draft, clean, atol=0.1)
    best = train(_cfg(shapes_splits, train_dir.parent / "rollout_run", max_steps=3, rollout=1.0))
    assert (best / "model.safetensors").is_file()


def test_the_clock_bar_survives_an_overrun_budget():
    from tqdm import tqdm

    from omni_gpt2o.train import advance

    bar = tqdm(total=10, bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f}s{postfix}", disable=False)
    advance(bar, 7.5)
    advance(bar, 9.0)  # the last step ran past the budget
    assert bar.n == 10 and str(bar).endswith("10/10s")
    bar.close()


def test_an_unexpected_error_still_saves_last(tmp_path, shapes_splits, monkeypatch):
    real_step = loop_module.train_step
    calls = {"n": 0}

    def failing_step(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("a bug")
        return real_step(*args, **kwargs)

    monkeypatch.setattr(loop_module, "train_step", failing_step)
    with pytest.raises(RuntimeError, match="a bug"):
        train(_cfg(shapes_splits, tmp_path / "run", max_steps=6))
    state = json.loads((tmp_path / "run" / "checkpoints" / "last" / "trainer_state.json").read_text())
    assert state["step"] == 2


def test_snapshots_every_n_steps_hold_the_weights_of_that_step(tmp_path, shapes_splits):
    train(_cfg(shapes_splits, tmp_path / "run", max_steps=7, snapshot_steps=3))
    snapshots = tmp_path / "run" / "checkpoints" / "snapshots"
    assert sorted(p.name for p in snapshots.iterdir()) == ["step-0000003", "step-0000006"]
    steps = [json.loads((snapshots / n / "config.json").read_text())["trained"]["step"]
             for n in ("step-0000003", "step-0000006")]
    assert steps == [3, 6]
    first, second = (load_file(str(snapshots / n / "model.safetensors")) for n in ("step-0000003", "step-0000006"))
    assert any(not torch.equal(first[k], second[k]) for k in first)  # training moved the weights between them


def test_snapshots_along_the_clock_make_a_scored_learning_curve(tmp_path, shapes_splits, monkeypatch):
    clock = {"now": 0.0}

    def fake_clock() -> float:  # every reading is 7 s later: the schedule is exact, not timing-dependent
        clock["now"] += 7.0
        return clock["now"]

    monkeypatch.setattr(loop_module.time, "perf_counter", fake_clock)
    train(_cfg(shapes_splits, tmp_path / "run", minutes=2.0, snapshot_minutes=0.5))
    monkeypatch.undo()
    snapshots = tmp_path / "run" / "checkpoints" / "snapshots"
    assert sorted(p.name for p in snapshots.iterdir()) == ["min-000.5", "min-001.0", "min-001.5", "min-002.0"]

    from omni_gpt2o.cli import main

    _, val_dir = shapes_splits
    out = tmp_path / "curve.json"
    powers = []
    real_schedule = scheduler_module.sampling_schedule
    monkeypatch.setattr(scheduler_module, "sampling_schedule",
                        lambda n, start, power: powers.append(power) or real_schedule(n, start, power))
    assert main(["evaluate", "--snapshots", str(snapshots), "--data", str(val_dir), "--max-prompts", "4",
                 "--steps", "2", "--schedule-power", "1", "--out", str(out)]) == 0
    assert powers and set(powers) == {1.0}  # the sampler flags reach every snapshot's pictures
    points = json.loads(out.read_text())["points"]
    assert [p["snapshot"] for p in points] == ["min-000.5", "min-001.0", "min-001.5", "min-002.0"]
    steps = [p["step"] for p in points]
    assert steps == sorted(steps) and steps[0] < steps[-1]  # later snapshots hold later weights
    assert all(0.5 * (i + 1) <= p["minutes"] < 0.5 * (i + 1) + 0.2 for i, p in enumerate(points))
    assert all(p["scores"]["all"]["n"] == 4 for p in points)
    assert out.with_suffix(".png").stat().st_size > 1000


def test_without_the_alignment_loss_the_vit_never_sees_the_clean_picture(tmp_path, shapes_splits, monkeypatch):
    calls = []
    real = data_module.frozen_targets
    monkeypatch.setattr(data_module, "frozen_targets", lambda *a: calls.append(1) or real(*a))
    train(_cfg(shapes_splits, tmp_path / "aligned", max_steps=2, val_data=None, align_weight=0.1))
    assert len(calls) == 2  # one target per step
    calls.clear()
    out = tmp_path / "unaligned"
    train(_cfg(shapes_splits, out, max_steps=2, val_data=None, align_weight=0.0))
    assert calls == []
    state = json.loads((out / "checkpoints" / "last" / "trainer_state.json").read_text())
    assert all(h["alignment"] == 0.0 and h["loss"] > 0 for h in state["history"] if "alignment" in h)


@pytest.mark.numerics
def test_gradient_accumulation_trains_as_the_whole_batch(tmp_path, shapes_splits):
    # The same sums split in two: an identity of the math, so both runs are float64 (tests/numerics.py).
    runs, weights = {}, {}
    for passes in (1, 2):
        out = tmp_path / f"accum{passes}"
        train(_cfg(shapes_splits, out, max_steps=5, val_data=None, grad_accum=passes, precision="fp64"))
        state = json.loads((out / "checkpoints" / "last" / "trainer_state.json").read_text())
        runs[passes] = [h["loss"] for h in state["history"] if "loss" in h]
        weights[passes] = load_file(str(out / "checkpoints" / "last" / "model.safetensors"))
    assert len(runs[1]) == 5
    assert runs[2] == pytest.approx(runs[1], rel=0, abs=LOGGED_LOSS_ROUNDING)  # each picture: the same draws
    assert runs[1][-1] < runs[1][0]
    assert weights[1].keys() == weights[2].keys()
    for name, w in weights[1].items():
        assert w.dtype == torch.float64 or not w.is_floating_point(), name
        assert_same_math(weights[2][name], w)


def test_fp16_trains_through_a_gradient_scaler(micro_model):
    from omni_gpt2o.train import Learner, StepBatch, train_step

    cfg = TrainConfig(data="", out="", learning_rate=1e-2)
    learner = Learner(micro_model.train(), cfg, torch.float16)
    assert learner.scaler is not None
    before = {k: v.clone() for k, v in micro_model.trainable_state_dict().items()}
    clean = torch.rand(4, 3, 32, 32) * 2 - 1
    losses, _ = train_step(learner, StepBatch(clean, ["a red circle"] * 4), cfg, step=0)
    assert torch.isfinite(losses["loss"])
    after = micro_model.trainable_state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_a_snapshot_due_as_the_budget_ends_with_an_epoch_is_kept(tmp_path, shapes_splits, monkeypatch):
    clock = {"now": 0.0}

    def fake_clock() -> float:  # 1 s a reading: 2 batches + the epoch's end = 3 s an epoch, 6 s = 0.1 min at 2
        clock["now"] += 1.0
        return clock["now"]

    monkeypatch.setattr(loop_module.time, "perf_counter", fake_clock)
    train(_cfg(shapes_splits, tmp_path / "run", val_data=None, max_train_samples=16, minutes=0.1,
               snapshot_minutes=0.1))
    monkeypatch.undo()
    assert [p.name for p in (tmp_path / "run" / "checkpoints" / "snapshots").iterdir()] == ["min-000.1"]


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, shapes_splits, monkeypatch):
    real = step_module.compute_losses
    calls = {"n": 0}

    def spoilt(*args, **kwargs):
        losses = real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] >= 14:  # the second epoch's second step on
            losses["loss"] = losses["loss"] * float("nan")
        return losses

    monkeypatch.setattr(step_module, "compute_losses", spoilt)
    with pytest.raises(OmniError, match="not finite 3 steps in a row"):
        train(_cfg(shapes_splits, tmp_path / "run", val_data=None, epochs=3))
    state = json.loads((tmp_path / "run" / "checkpoints" / "last" / "trainer_state.json").read_text())
    assert state["step"] == 12  # the end of the first epoch, not the spoilt weights


def test_a_non_finite_step_is_skipped_never_applied(tmp_path, shapes_splits, monkeypatch):
    real = step_module.compute_losses

    def spoilt(*args, **kwargs):
        losses = real(*args, **kwargs)
        losses["loss"] = losses["loss"] * float("nan")
        return losses

    torch.manual_seed(0)
    fresh = build_model(get_preset("micro")).trainable_state_dict()  # the glue train() starts from (seed 0)
    monkeypatch.setattr(step_module, "compute_losses", spoilt)
    out = tmp_path / "run"
    train(_cfg(shapes_splits, out, val_data=None, max_steps=2))  # two bad steps: under the limit of 3
    state = json.loads((out / "checkpoints" / "last" / "trainer_state.json").read_text())
    assert state["step"] == 2 and state["nonfinite_steps"] == 2
    raw = {k[len("raw."):]: v for k, v in load_file(str(out / "checkpoints" / "last" /
                                                         "training_state.safetensors")).items() if k.startswith("raw.")}
    assert all(torch.equal(raw[k], fresh[k]) for k in fresh)  # nothing was applied


def test_a_split_of_only_unreadable_pictures_stops_with_one_line(tmp_path):
    from omni_gpt2o.data.shapes import make_shapes

    split = make_shapes(tmp_path / "broken", 32, split="train", seed=0, size=32)
    for png in (split / "images").glob("*.png"):
        png.write_bytes(b"")
    with pytest.raises(OmniError, match="no picture of .* could be read in a whole epoch"):
        train(TrainConfig(data=str(split), out=str(tmp_path / "run"), preset="micro", batch_size=8, max_steps=6,
                          progress=False))


def test_a_run_folder_is_not_overwritten_silently(tmp_path, shapes_splits):
    import os
    import subprocess
    import sys

    out = tmp_path / "run"
    train(_cfg(shapes_splits, out, max_steps=2, val_data=None))
    first = (out / "checkpoints" / "last" / "model.safetensors").read_bytes()
    with pytest.raises(OmniError, match="holds another run"):
        train(_cfg(shapes_splits, out, max_steps=2, val_data=None, seed=1))
    assert (out / "checkpoints" / "last" / "model.safetensors").read_bytes() == first  # untouched
    train(_cfg(shapes_splits, out, max_steps=2, val_data=None, seed=1, overwrite=True))
    assert (out / "checkpoints" / "last" / "model.safetensors").read_bytes() != first

    # A live writer's lock is refused; a lock left by a killed run is taken over.
    writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / ".lock").write_text(json.dumps({"host": os.uname().nodename, "pid": writer.pid}))
        with pytest.raises(OmniError, match="another run is writing"):
            train(_cfg(shapes_splits, out, max_steps=2, val_data=None, overwrite=True))
    finally:
        writer.kill()
        writer.wait()
    train(_cfg(shapes_splits, out, max_steps=2, val_data=None, overwrite=True))  # its process is gone: stale
    assert not (out / ".lock").exists()


@pytest.fixture
def last_saves(monkeypatch):
    """The `trained` metadata of every `last` a run saves."""
    saved = []
    real = record_module.save_checkpoint

    def spy(model, path, *args, **kwargs):
        if path.name == "last":
            saved.append(kwargs["metadata"]["trained"])
        return real(model, path, *args, **kwargs)

    monkeypatch.setattr(record_module, "save_checkpoint", spy)
    return saved


def test_save_every_keeps_last_within_n_steps(tmp_path, shapes_splits, last_saves):
    train(_cfg(shapes_splits, tmp_path / "run", val_data=None, max_steps=5, save_every=2))
    assert [s["step"] for s in last_saves] == [2, 4, 5]  # every 2 steps, then the end


def test_save_every_minutes_keeps_last_within_the_training_minutes(tmp_path, shapes_splits, last_saves,
                                                                   monkeypatch):
    clock = iter(range(0, 10**6, 7))  # every reading of the clock: 7 seconds later
    monkeypatch.setattr(loop_module.time, "perf_counter", lambda: float(next(clock)))
    train(_cfg(shapes_splits, tmp_path / "run", val_data=None, max_steps=12, save_every_minutes=0.5))
    saved = [s["elapsed"] for s in last_saves]
    assert len(saved) >= 3  # saves along the way, then the end
    assert all(b - a >= 30 for a, b in zip(saved[:-2], saved[1:-1]))  # no closer than 30 training seconds
    assert all(b - a < 30 + 2 * 7 * 3 for a, b in zip(saved[:-1], saved[1:]))  # nor much further apart


def test_a_finished_run_continues_with_more_epochs(tmp_path, shapes_splits):
    out = tmp_path / "run"
    train(_cfg(shapes_splits, out, val_data=None, epochs=1))
    last = out / "checkpoints" / "last"
    assert json.loads((last / "trainer_state.json").read_text())["step"] == 12
    train(_cfg(shapes_splits, out, val_data=None, epochs=2, checkpoint_path=str(last)))
    assert json.loads((last / "trainer_state.json").read_text())["step"] == 24  # one more epoch, into the same run


def test_the_kl_weight_moves_from_its_start_to_its_end_over_the_run():
    from omni_gpt2o.train import kl_weight

    ramp = TrainConfig(data="d", out="o", kl_weight=1e-2, kl_weight_start=1e-3)
    assert kl_weight(ramp, 0.0) == pytest.approx(1e-3) and kl_weight(ramp, 1.0) == pytest.approx(1e-2)
    assert kl_weight(ramp, 0.5) == pytest.approx(10 ** -2.5)  # geometric: halfway in the exponent
    assert kl_weight(ramp, 7.0) == pytest.approx(1e-2)  # past the end it stays there
    assert kl_weight(TrainConfig(data="d", out="o", kl_weight=3e-3), 0.3) == 3e-3  # no start: constant
    assert kl_weight(TrainConfig(data="d", out="o", kl_weight=1e-2, kl_weight_start=0.0), 0.25) == pytest.approx(
        2.5e-3)  # from 0: linear


def test_training_applies_the_moving_kl_weight(tmp_path, shapes_splits, monkeypatch):
    used = []
    real = step_module.loss_weights
    monkeypatch.setattr(step_module, "loss_weights", lambda cfg: used.append(cfg.kl_weight) or real(cfg))
    train(_cfg(shapes_splits, tmp_path / "run", val_data=None, max_steps=4, kl_weight=1e-2, kl_weight_start=1e-4))
    assert used == pytest.approx([1e-4, 10 ** -3.5, 1e-3, 10 ** -2.5])  # step k of 4: progress k / 4
