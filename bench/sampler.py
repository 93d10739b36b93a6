"""Which sampler settings draw best? (a benchmark, not a test)

    .venv/bin/python bench/sampler.py --checkpoint runs/demo/checkpoint runs/demo60/checkpoint \
        --scales 1.5 2 --powers 1 1.5

Scores each checkpoint at every combination of guidance scale, schedule power (how the draft strengths
fall, `sampling_schedule`), eta and step count with the pixel judge. The prompts come from a Shapes split
made for this purpose only (seed 101, held-out pairs included), never the demo's validation split, so the
defaults chosen here (`DEFAULT_GUIDANCE`, `SCHEDULE_POWER`) are not tuned to the captions the demo reports on.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

from omni_gpt2o.data.shapes import shapes_split
from omni_gpt2o.evaluate import evaluate_pipeline, split_prompts
from omni_gpt2o.pipeline import OmniGPT2oPipeline

TUNING_SEED = 101  # the demo's splits use seed 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint", nargs="+", required=True)
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0, 1.5, 2.0, 2.5, 3.0], help="guidance")
    parser.add_argument("--powers", type=float, nargs="+", default=[1.0, 1.5], help="schedule powers")
    parser.add_argument("--eta", type=float, nargs="+", default=[0.0], help="fresh noise mixed in per step")
    parser.add_argument("--steps", type=int, nargs="+", default=[8])
    parser.add_argument("--prompts", type=int, default=400, help="pictures in the tuning split, one prompt each")
    parser.add_argument("--work", default="runs/guidance")
    args = parser.parse_args()

    split = shapes_split(Path(args.work) / f"tune-{args.prompts}", args.prompts, split="val", seed=TUNING_SEED)
    prompts = split_prompts(split)
    print(f"{len(prompts)} prompts from {split}; full-prompt accuracy and clean-edge softness (lower is sharper)")
    print(f"{'checkpoint':<40} {'steps':>5} {'guidance':>8} {'power':>5} {'eta':>4} "
          f"{'one':>6} {'two':>6} {'held-out':>9} {'seen':>6} {'soft':>5}")
    for ckpt in args.checkpoint:
        pipe = OmniGPT2oPipeline.from_pretrained(ckpt, device="cpu")
        for steps, scale, power, eta in itertools.product(args.steps, args.scales, args.powers, args.eta):
            s = evaluate_pipeline(pipe, prompts, steps=steps, guidance=scale, schedule_power=power, eta=eta,
                                  progress=False)["scores"]
            one, two = s["one_object"]["full"], s["two_object"]["full"]
            held, seen = s["held_out"]["full"], s["seen"]["full"]
            print(f"{ckpt[-40:]:<40} {steps:>5} {scale:>8g} {power:>5g} {eta:>4g} {100 * one:>5.1f}% "
                  f"{100 * two:>5.1f}% {100 * held:>8.1f}% {100 * seen:>5.1f}% {s['all']['edge_softness']:>5.3f}",
                  flush=True)


if __name__ == "__main__":
    main()
