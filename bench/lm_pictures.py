"""Seen and unseen-word prompts drawn by several runs side by side: one picture for people to look at.

    .venv/bin/python bench/lm_pictures.py runs/compute/fp32-60tf-s0 runs/compute/smollm2_fp32-60tf-s0 \\
        --labels "random GPT-2 (tiny)" "SmolLM2 (smollm2)" --out docs/unseen_words.png

Each row is a run's final weights (8 sampling steps, guidance 1.5, the same seed for every run); each column a
prompt: two in the grammar's words, then prompts in words no training caption used (docs/shapes.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from omni_gpt2o.config import DEFAULT_GUIDANCE
from omni_gpt2o.pipeline import OmniGPT2oPipeline
from omni_gpt2o.utils import comparison_sheet

PROMPTS = ["a red circle on the left", "a blue square above a yellow triangle",
           "a crimson ball on the west side", "draw a navy box in the upper half",
           "an image showing a huge emerald pyramid in the middle", "down low, a golden disc",
           "a turquoise block, with a scarlet wedge over it", "красный круг слева", "синий квадрат снизу"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="run folders (their checkpoints/last) or checkpoint folders")
    parser.add_argument("--labels", nargs="*")
    parser.add_argument("--out", default="runs/unseen_words.png")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    labels = args.labels or [Path(r).name for r in args.runs]
    rows = []
    for run in args.runs:
        ckpt = Path(run) / "checkpoints" / "last" if (Path(run) / "checkpoints").is_dir() else Path(run)
        pipe = OmniGPT2oPipeline.from_pretrained(ckpt, precision="fp32")
        gens = [torch.Generator().manual_seed(args.seed + i) for i in range(len(PROMPTS))]
        rows.append(pipe(PROMPTS, num_inference_steps=8, guidance_scale=DEFAULT_GUIDANCE, generator=gens).images)
    sheet = comparison_sheet(PROMPTS, list(zip(labels, rows)))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
