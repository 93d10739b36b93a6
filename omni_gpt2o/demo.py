"""The main job: make Shapes data, train the offline `tiny` preset, then write samples and a report.

    DIR/data/{train,val}/    Shapes splits (reused when already made with the same settings)
    DIR/run/                 the training run (checkpoints, tensorboard, loss curve)
    DIR/checkpoint/          the best checkpoint, for `omni-gpt2o generate`
    DIR/samples.png          prompts (held-out colour-shape pairs among them) and their pictures
    DIR/report.json          what was trained, for how long, its scores, and those of snapshots on the way
    DIR/learning_curve.png   accuracy against training minutes
"""

from __future__ import annotations

import json
import platform
import shutil
import time
from pathlib import Path

import torch

from omni_gpt2o.checkpoint import TRAINER_STATE, TRAINING_STATE, read_config
from omni_gpt2o.config import DEFAULT_GUIDANCE
from omni_gpt2o.data.shapes import shapes_split
from omni_gpt2o.evaluate import evaluate_pipeline, format_scores, learning_curve, plot_learning_curve, split_prompts
from omni_gpt2o.fileio import atomic_path
from omni_gpt2o.pipeline import OmniGPT2oPipeline
from omni_gpt2o.train import TrainConfig, train
from omni_gpt2o.utils import image_grid

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


def run_demo(out: str | Path = "runs/demo", minutes: float = 15.0, train_images: int = 20000,
             val_images: int = 400, seed: int = 0, batch_size: int = 32, curve_points: int = 6) -> dict:
    out = Path(out)
    started = time.time()
    train_dir = shapes_split(out / "data" / "train", train_images, split="train", seed=seed)
    val_dir = shapes_split(out / "data" / "val", val_images, split="val", seed=seed)

    print(f"training the `tiny` preset for {minutes:g} minutes on {torch.get_num_threads()} CPU threads",
          flush=True)
    snapshots = out / "run" / "checkpoints" / "snapshots"
    shutil.rmtree(snapshots, ignore_errors=True)  # a fresh run: an earlier demo's snapshots would mix into the curve
    cfg = TrainConfig(data=str(train_dir), val_data=str(val_dir), out=str(out / "run"), preset="tiny",
                      minutes=minutes, batch_size=batch_size, seed=seed, max_val_samples=256,
                      snapshot_minutes=minutes / curve_points if curve_points else None)
    best = train(cfg)

    # The checkpoint people use: the best weights, without the state only resuming needs.
    ckpt = out / "checkpoint"
    if ckpt.exists():
        shutil.rmtree(ckpt)
    shutil.copytree(best, ckpt, ignore=shutil.ignore_patterns(TRAINING_STATE, TRAINER_STATE))

    pipe = OmniGPT2oPipeline.from_pretrained(ckpt, device="cpu")
    images = pipe(SAMPLE_PROMPTS, num_inference_steps=SAMPLE_STEPS, guidance_scale=DEFAULT_GUIDANCE,
                  generator=[torch.Generator().manual_seed(seed + i) for i in range(len(SAMPLE_PROMPTS))]).images
    with atomic_path(out / "samples.png") as tmp:
        image_grid(images, SAMPLE_PROMPTS, cols=4, scale=2).save(tmp, format="PNG")

    curve = None
    if curve_points:
        print(f"learning curve: scoring {curve_points} snapshots along the run", flush=True)
        curve = learning_curve(snapshots, split_prompts(val_dir), SAMPLE_STEPS, DEFAULT_GUIDANCE, seed, device="cpu")
        plot_learning_curve(curve, out / "learning_curve.png")

    meta = read_config(ckpt)
    # The best checkpoint is often the final snapshot (same step, same EMA weights): reuse its scores.
    same = [p for p in curve or [] if p["step"] == meta.get("trained", {}).get("step")]
    if same:
        scores = same[0]["scores"]
    else:
        print(f"scoring: drawing {val_images} validation captions, judged on pixels", flush=True)
        scores = evaluate_pipeline(pipe, split_prompts(val_dir), steps=SAMPLE_STEPS, guidance=DEFAULT_GUIDANCE,
                                   seed=seed)["scores"]
    print(format_scores(scores), flush=True)
    report = {
        "preset": "tiny",
        "training": meta.get("trained", {}),
        "train_minutes_budget": minutes,
        "train_images": train_images,
        "val_images": val_images,
        "batch_size": batch_size,
        "seed": seed,
        "sample_prompts": SAMPLE_PROMPTS,
        "sample_steps": SAMPLE_STEPS,
        "guidance": DEFAULT_GUIDANCE,
        "scores": scores,
        "learning_curve": curve,
        "machine": {"cpu_threads": torch.get_num_threads(), "platform": platform.platform(),
                    "torch": torch.__version__},
        "wall_minutes": round((time.time() - started) / 60, 2),
    }
    with atomic_path(out / "report.json") as tmp:
        tmp.write_text(json.dumps(report, indent=2))
    print(f"demo done in {report['wall_minutes']} min: {ckpt}, {out / 'samples.png'}, {out / 'report.json'}")
    return report
