"""Short training runs that compare one lever at a time on Shapes (a benchmark, not a test).

    .venv/bin/python bench/levers.py --minutes 4 --variants baseline uniform_noise
    .venv/bin/python bench/levers.py --steps 1000 --variants baseline decoder_32px

Each variant trains the `tiny` preset for the same number of minutes (or steps) on the same data, then
is scored by the pixel judge on validation captions. Prints one line per variant.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from omni_gpt2o.data.shapes import shapes_split
from omni_gpt2o.evaluate import evaluate_pipeline, split_prompts
from omni_gpt2o.pipeline import OmniGPT2oPipeline
from omni_gpt2o.train import TrainConfig, train

VARIANTS = {
    "baseline": {},
    "no_rollout": {"rollout": 0.0},
    "uniform_noise": {"noise_skew": 1.0, "pure_noise": 0.2},
    "decoder_32px": {"model_overrides": {"decoder_patch": 2, "decoder_channels": (64, 96, 128),
                                         "decoder_attention_levels": (1, 2)}},  # the tiny decoder before 4x4 folding
    "decoder_64px": {"model_overrides": {"decoder_patch": 1, "decoder_channels": (32, 64, 96, 128),
                                         "decoder_attention_levels": (2, 3)}},  # the first tiny decoder
    "latent_32": {"latent_dim": 32},
    "lr_2e-3": {"learning_rate": 2e-3},
    "batch_64": {"batch_size": 64},
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=4)
    parser.add_argument("--steps", type=int, help="train this many steps instead (not affected by other load)")
    parser.add_argument("--variants", nargs="+", default=["baseline"])
    parser.add_argument("--work", default="runs/levers")
    parser.add_argument("--prompts", type=int, default=200)
    args = parser.parse_args()
    work = Path(args.work)
    train_dir = shapes_split(work / "data" / "train", 20000, split="train", seed=0)
    val_dir = shapes_split(work / "data" / "val", 400, split="val", seed=0)
    prompts = split_prompts(val_dir, args.prompts)
    for name in args.variants:
        budget = {"max_steps": args.steps} if args.steps else {"minutes": args.minutes}
        cfg = TrainConfig(data=str(train_dir), val_data=str(val_dir), out=str(work / name), overwrite=True,
                          max_val_samples=64,
                          progress=False, **budget, **VARIANTS[name])
        best = train(cfg)
        trained = json.loads((best / "config.json").read_text())["trained"]
        steps, minutes = trained["step"], trained["elapsed"] / 60
        pipe = OmniGPT2oPipeline.from_pretrained(best, device="cpu")
        scores = evaluate_pipeline(pipe, prompts, steps=8, guidance=3.0, progress=False)["scores"]
        one, two = scores["one_object"], scores["two_object"]
        line = (f"{name:<14} {steps:>5} steps {minutes:5.1f} min | one: full {one['full']:.2f} "
                f"shape {one['shape']:.2f} size {one['size']:.2f} pos {one['position']:.2f} | "
                f"two: full {two['full']:.2f} shape {two['shape']:.2f} rel {two['position']:.2f} "
                f"extra-free {two['no_extra']:.2f}")
        print(line, flush=True)
        with open(work / "results.txt", "a") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
