"""Real emoji beside what several runs drew from their captions: one picture for people to look at.

    .venv/bin/python bench/emoji_pictures.py runs/emoji-hour/tiny/checkpoint runs/emoji-hour/smollm2/checkpoint \\
        --labels "tiny" "smollm2" --val runs/emoji-hour/tiny/data/emoji-val --out docs/emoji_hour.png

Columns: the first val picture of each category (trained names, new frames, held-out tones, scenes, aliases,
Russian names, other languages; docs/emoji.md), then prompts of your own (`--prompts`; by default a Russian
scene never trained, "кот слева от ракеты", cat to the left of rocket). The first row is the real drawing
(rendered from the font for your own prompts when `--real` names their emoji), then one row per run: 8 sampling
steps, guidance 1.5, seed `--seed` + column for every run alike.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import Image

from omni_gpt2o.config import DEFAULT_GUIDANCE
from omni_gpt2o.data.emoji import render
from omni_gpt2o.evaluate import emoji_records
from omni_gpt2o.pipeline import OmniGPT2oPipeline
from omni_gpt2o.utils import comparison_sheet

OWN_PROMPTS = ["кот слева от ракеты"]
OWN_REAL = ["🐈|🚀|to the left of"]  # what each own prompt names: "A" or "A|B|relation" (docs/emoji.md)


def real_of(spec: str, size: int) -> Image.Image:
    """The font's rendering of "A|B|relation" (a scene) or "A" (one emoji)."""
    parts = spec.split("|")
    return render(tuple(parts[:2]), size, parts[2])[0] if len(parts) == 3 else render((parts[0],), size)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+", help="checkpoint folders (a demo's DIR/checkpoint)")
    parser.add_argument("--labels", nargs="*")
    parser.add_argument("--val", required=True, help="the emoji val split whose first picture per category is drawn")
    parser.add_argument("--prompts", nargs="*", default=OWN_PROMPTS)
    parser.add_argument("--real", nargs="*", default=OWN_REAL, help="the emoji of each of --prompts ('' for none)")
    parser.add_argument("--out", default="runs/emoji_pictures.png")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    labels = args.labels or [Path(c).parent.name for c in args.checkpoints]
    records = emoji_records(args.val, 1)
    prompts = [r["prompt"] for r in records] + list(args.prompts)
    size = records[0]["real"].size[0]
    reals = [r["real"].convert("RGB") for r in records]
    reals += [real_of(spec, size) if spec else Image.new("RGB", (size, size), "white")
              for spec in (args.real + [""] * len(args.prompts))[: len(args.prompts)]]
    rows = [("real", reals)]
    for label, ckpt in zip(labels, args.checkpoints):
        pipe = OmniGPT2oPipeline.from_pretrained(ckpt, precision="fp32")
        gens = [torch.Generator().manual_seed(args.seed + i) for i in range(len(prompts))]
        rows.append((label, pipe(prompts, num_inference_steps=8, guidance_scale=DEFAULT_GUIDANCE,
                                 generator=gens).images))
    heads = [f"[{r['category']}] {r['prompt']}" for r in records] + [f"[own] {p}" for p in args.prompts]
    sheet = comparison_sheet(heads, rows, label_width=120, resample=Image.Resampling.LANCZOS)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
