"""The main job: make Shapes data (or emoji), train an offline preset (`tiny`, or `tiny-hour` for an hour's
budget; on a CUDA GPU when there is one, else the CPU), then write samples and a report.

    DIR/data/{train,val}/    Shapes splits (reused when already made with the same settings), or emoji splits
    DIR/run/                 the training run (checkpoints, tensorboard, loss curve)
    DIR/checkpoint/          the best checkpoint, for `omni-gpt2o generate`
    DIR/samples.png          prompts (held-out colour-shape pairs among them) and their pictures
    DIR/report.json          what was trained, for how long, its scores, and those of snapshots on the way
    DIR/learning_curve.png   accuracy against training minutes
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import torch

from omni_gpt2o.checkpoint import TRAINER_STATE, TRAINING_STATE, read_config
from omni_gpt2o.compute import describe_machine, machine_info, run_flops, training_step_flops
from omni_gpt2o.config import DEFAULT_GUIDANCE, SAME_COLOUR_PAIRS, SCHEDULE_POWER, TRAIN_IMAGES, get_preset
from omni_gpt2o.data.shapes import shapes_split
from omni_gpt2o.evaluate import (
    EMOJI_GROUPS,
    evaluate_emoji,
    evaluate_pipeline,
    format_emoji_scores,
    format_scores,
    learning_curve,
    plot_learning_curve,
    split_prompts,
)
from omni_gpt2o.fileio import atomic_path, json_text
from omni_gpt2o.pipeline import OmniGPT2oPipeline
from omni_gpt2o.train import TrainConfig, train
from omni_gpt2o.utils import autocast_dtype, image_grid, resolve_device

# Seen and held-out (magenta triangle, cyan circle, yellow square) pairs, one and two objects.
SAMPLE_PROMPTS = [
    "a red circle on the left",
    "a large blue square at the top",
    "a small green triangle in the center",
    "there is a yellow circle at the bottom",
    "a cyan circle on the right",
    "a picture of a magenta triangle at the top",
    "a large yellow square in the center",
    "a small cyan circle on the left",
    "a red circle to the left of a blue square",
    "there is a green triangle below a yellow circle",
    "a cyan circle above a red square",
    "a magenta triangle to the right of a green circle",
]


SAMPLE_STEPS = 8
# Small batches, more steps: what a short CPU budget learns most from (bench/compute_to_bar.py). Not smaller:
# `tiny-hour` at 8 met the hour bars no more often than at 16 (7 of 9 runs against 8 of 10, docs/levers.md),
# and two threads share a batch of 8 less well.
CPU_BATCH_SIZE = 16
GPU_BATCH_SIZE = 128  # a GPU runs `tiny` launch-bound below ~128 pictures: bigger batches cost little more
LEARNING_RATE = 1e-3  # at CPU_BATCH_SIZE; other batches scale it by the square root (the Adam habit)


def learning_rate_for(batch_size: int) -> float:
    """The peak learning rate for a batch: LEARNING_RATE at CPU_BATCH_SIZE pictures, scaled by the square root."""
    return LEARNING_RATE * (batch_size / CPU_BATCH_SIZE) ** 0.5


# The raw weights, not a moving average: in 10 runs of ~47 TFLOP (fp32, an AVX2 CPU's 15 minutes) the raw
# weights drew pairs right 2.0 points more often on average than the EMA (8 of 10 no worse), which lags
# behind a model still learning fast; after an hour (196 TFLOP) the two scored the same.
EMA_DECAY = 0.0


def emoji_splits(out: Path, seed: int) -> tuple[Path, Path]:
    """The emoji train and val splits of a seed (made once)."""
    from omni_gpt2o.data.emoji import emoji_split

    return (emoji_split(out / "data" / "emoji-train", "train", seed=seed),
            emoji_split(out / "data" / "emoji-val", "val", seed=seed))


def emoji_sample_prompts(val_dir: Path) -> list[str]:
    """The first two captions of each category of the emoji val split, and a Russian scene never trained."""
    from omni_gpt2o.evaluate import emoji_records

    return [r["prompt"] for r in emoji_records(val_dir, 2)] + ["кот слева от ракеты"]


def run_demo(out: str | Path = "runs/demo", minutes: float = 15.0, train_images: int = TRAIN_IMAGES,
             val_images: int = 400, seed: int = 0, batch_size: int | None = None, curve_points: int = 3,
             curve_prompts: int = 100, precision: str = "auto", device: str = "auto",
             same_colour_pairs: float = SAME_COLOUR_PAIRS, preset: str = "tiny", data: str = "shapes") -> dict:
    """Train `preset` (one that builds its frozen backbones offline) on Shapes (or `data="emoji"`) for `minutes`
    (on a CUDA GPU when there is one, else the CPU), then draw and judge every validation caption. The learning
    curve scores `curve_points` snapshots on the first `curve_prompts` captions (cheaper); the final weights are
    scored on all of them. On emoji every validation picture (at most val_images // 7 of each category) is
    judged by retrieval at the end, with no learning curve."""
    if get_preset(preset).needs_download:
        raise ValueError(f"the demo trains offline, so its preset must need no download (tiny, tiny-hour, smollm2); "
                         f"{preset!r} loads its backbones from a hub: train it with `omni-gpt2o train --preset "
                         f"{preset}`")
    if data not in ("shapes", "emoji"):
        raise ValueError(f"data must be shapes or emoji, not {data!r}")
    out = Path(out)
    started = time.time()
    if data == "emoji":
        (train_dir, val_dir), curve_points = emoji_splits(out, seed), 0
    else:
        train_dir = shapes_split(out / "data" / "train", train_images, split="train", seed=seed,
                                 same_colour_pairs=same_colour_pairs)
        val_dir = shapes_split(out / "data" / "val", val_images, split="val", seed=seed)

    dev = torch.device("cuda") if device == "auto" and torch.cuda.is_available() else resolve_device(
        "cpu" if device == "auto" else device)  # MPS only when asked for: its speed is unmeasured
    batch_size = batch_size or (CPU_BATCH_SIZE if dev.type == "cpu" else GPU_BATCH_SIZE)
    machine = machine_info()
    amp = autocast_dtype(dev, precision)
    precision_used = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(amp, "fp32")
    where = machine["cuda"] if dev.type == "cuda" else describe_machine(machine)
    print(f"training the `{preset}` preset for {minutes:g} minutes in {precision_used} on {where}, batch {batch_size}",
          flush=True)
    snapshots = out / "run" / "checkpoints" / "snapshots"
    # overwrite: a rerun replaces the demo's own earlier run (whose snapshots would mix into the curve)
    cfg = TrainConfig(data=str(train_dir), val_data=str(val_dir), out=str(out / "run"), preset=preset, overwrite=True,
                      minutes=minutes, batch_size=batch_size, seed=seed, max_val_samples=256, device=str(dev),
                      learning_rate=learning_rate_for(batch_size), ema_decay=EMA_DECAY,
                      precision=precision, snapshot_minutes=minutes / curve_points if curve_points else None)
    best = train(cfg)

    # The checkpoint people use: the best weights, without the state only resuming needs.
    ckpt = out / "checkpoint"
    if ckpt.exists():
        shutil.rmtree(ckpt)
    shutil.copytree(best, ckpt, ignore=shutil.ignore_patterns(TRAINING_STATE, TRAINER_STATE))

    pipe = OmniGPT2oPipeline.from_pretrained(ckpt, device=str(dev), precision=precision_used)
    sample_prompts = emoji_sample_prompts(val_dir) if data == "emoji" else SAMPLE_PROMPTS
    write_samples(pipe, sample_prompts, seed, out / "samples.png", cols=5 if data == "emoji" else 4)

    prompts = split_prompts(val_dir)
    curve = None
    if curve_points:
        n = min(curve_prompts, len(prompts))
        print(f"learning curve: scoring {curve_points} snapshots along the run on {n} captions", flush=True)
        curve = learning_curve(snapshots, prompts[:n], SAMPLE_STEPS, DEFAULT_GUIDANCE, seed, device=str(dev),
                               precision=precision_used)
        plot_learning_curve(curve, out / "learning_curve.png")

    trained = read_config(ckpt).get("trained", {})
    scores = final_scores(pipe, data, val_dir, prompts, curve, trained.get("step"), val_images, seed)
    report = {
        "preset": preset,
        "data": data,
        "training": trained,
        "train_minutes_budget": minutes,
        "run": run_summary(out / "run", pipe, cfg),
        "train_images": train_images,
        "same_colour_pairs": same_colour_pairs,
        "val_images": val_images,
        "batch_size": batch_size,
        "seed": seed,
        "sample_prompts": sample_prompts,
        "sample_steps": SAMPLE_STEPS,
        "guidance": DEFAULT_GUIDANCE,
        "schedule_power": SCHEDULE_POWER,
        "scores": scores,
        "learning_curve": curve,
        "curve_prompts": min(curve_prompts, len(prompts)) if curve_points else 0,
        "precision": precision_used,
        "device": str(dev),
        "machine": machine,
        "wall_minutes": round((time.time() - started) / 60, 2),
    }
    with atomic_path(out / "report.json") as tmp:
        tmp.write_text(json_text(report, indent=2))
    print(f"{report['run']['steps']:,} steps ({report['run']['steps_per_second']} steps/s, "
          f"{report['run']['tflop']} TFLOP) in {precision_used} on {where}")
    print(f"demo done in {report['wall_minutes']} min: {ckpt}, {out / 'samples.png'}, {out / 'report.json'}")
    return report


def write_samples(pipe: OmniGPT2oPipeline, prompts: list[str], seed: int, path: Path, cols: int) -> None:
    """The prompts drawn from text alone (prompt i with seed + i), as one captioned grid."""
    images = pipe(prompts, num_inference_steps=SAMPLE_STEPS, guidance_scale=DEFAULT_GUIDANCE,
                  generator=[torch.Generator().manual_seed(seed + i) for i in range(len(prompts))]).images
    with atomic_path(path) as tmp:
        image_grid(images, prompts, cols=cols, scale=2).save(tmp, format="PNG")


def final_scores(pipe: OmniGPT2oPipeline, data: str, val_dir: Path, prompts: list[str], curve: list | None,
                 step: int | None, val_images: int, seed: int) -> dict:
    """The final weights' scores on the validation split, printed as a table: Shapes judged on the pixels (the
    best checkpoint is often the last snapshot, already scored on every caption: its scores are reused), emoji
    by retrieval, category by category."""
    same = [p for p in curve or [] if p["step"] == step and p["scores"]["all"]["n"] == len(prompts)]
    if same:
        scores = same[0]["scores"]
    elif data == "emoji":
        per_category = max(1, val_images // len(EMOJI_GROUPS[1:]))
        print(f"scoring: drawing up to {per_category} validation captions of each category, judged by retrieval",
              flush=True)
        scores = evaluate_emoji(pipe, val_dir, per_category, steps=SAMPLE_STEPS, guidance=DEFAULT_GUIDANCE,
                                seed=seed)["scores"]
    else:
        print(f"scoring: drawing {len(prompts)} validation captions, judged on pixels", flush=True)
        scores = evaluate_pipeline(pipe, prompts, steps=SAMPLE_STEPS, guidance=DEFAULT_GUIDANCE, seed=seed)["scores"]
    print(format_emoji_scores(scores) if data == "emoji" else format_scores(scores), flush=True)
    return scores


def run_summary(run_dir: Path, pipe: OmniGPT2oPipeline, cfg: TrainConfig) -> dict:
    """Steps, steps/s and training TFLOP of the run (its steps times the FLOPs of each kind of step)."""
    state = json.loads((run_dir / "checkpoints" / "last" / TRAINER_STATE).read_text())
    flops = training_step_flops(pipe.model, cfg)
    compute = run_flops(flops, state["step"], state.get("rollout_steps", 0))
    return {"steps": state["step"], "rollout_steps": state.get("rollout_steps", 0),
            "train_minutes": round(state["elapsed"] / 60, 2),
            "steps_per_second": round(state["step"] / max(state["elapsed"], 1e-9), 3),
            "step_gflop": {k: round(v / 1e9, 2) for k, v in flops.items()}, "tflop": round(compute / 1e12, 2)}
