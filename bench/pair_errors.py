"""Where do pairs fail? (a benchmark, not a test)

    .venv/bin/python bench/pair_errors.py --checkpoint runs/demo/checkpoint runs/demo60/checkpoint

For every two-object caption of a Shapes split (the tuning split by default, never the demo's validation
split), draws a picture, finds each named object by its colour, and sorts what was drawn there: the named
shape, the shape the caption gives the *other* object (colour and shape not bound together), another shape,
or nothing of that colour. Objects of a held-out colour-shape pair ("a cyan circle ...") and of seen pairs
are counted apart, and so are the first- and second-named objects (GPT-2 is causal: the first object's words
never see the relation). A model that reads each shape word where its colour word is read scores the same
on held-out and seen objects.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from omni_gpt2o.config import DEFAULT_GUIDANCE
from omni_gpt2o.data.shapes import shapes_split
from omni_gpt2o.evaluate import PAIR_OUTCOMES, pair_outcomes, split_prompts
from omni_gpt2o.pipeline import OmniGPT2oPipeline

TUNING_SEED = 101  # bench/sampler.py's split: the demo's splits use seed 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint", nargs="+", required=True)
    parser.add_argument("--data", help="a Shapes split (default: the 400-picture tuning split, made if missing)")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--guidance", type=float, default=DEFAULT_GUIDANCE)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--work", default="runs/guidance")
    args = parser.parse_args()

    split = args.data or shapes_split(Path(args.work) / "tune-400", 400, split="val", seed=TUNING_SEED)
    prompts = split_prompts(split)
    for checkpoint in args.checkpoint:
        pipe = OmniGPT2oPipeline.from_pretrained(checkpoint, device=args.device, precision=args.precision)
        counts = pair_outcomes(pipe, prompts, args.steps, args.guidance)
        print(f"\n{checkpoint}: objects of two-object captions, share of each outcome")
        print(f"{'objects':<18} {'n':>4} " + " ".join(f"{o:>14}" for o in PAIR_OUTCOMES))
        for kind in ("held-out", "seen"):
            for which in ("first", "second", None):
                rows = {o: sum(v for (k, w, out), v in counts.items()
                               if k == kind and (which is None or w == which) and out == o) for o in PAIR_OUTCOMES}
                n = sum(rows.values())
                label = f"{kind} {which or 'both'}"
                print(f"{label:<18} {n:>4} " + " ".join(f"{100 * rows[o] / max(n, 1):>13.1f}%" for o in PAIR_OUTCOMES))


if __name__ == "__main__":
    main()
