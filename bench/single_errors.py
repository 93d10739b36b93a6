"""Which colour-shape pairs fail as single objects? (a benchmark, not a test)

    .venv/bin/python bench/single_errors.py --checkpoint runs/demo/checkpoint runs/demo60/checkpoint

Draws every colour-shape pair of the Shapes grammar alone ("a cyan circle on the left", with each prefix, size
word or none, and position: 45 captions a pair, one picture each) and prints, for each pair, how often the
biggest blob has the named colour and shape, and what is drawn most often instead. The captions come from the
grammar, not from a split. A model that composes colour and shape scores the held-out pairs (marked *) as the
seen ones; a low row says which word a failing seed does not read as it reads the others (GPT-2 cuts
"magenta" into two pieces, " mag" + "enta", every other colour and shape is one).
"""

from __future__ import annotations

import argparse
from collections import Counter

from omni_gpt2o.config import DEFAULT_GUIDANCE
from omni_gpt2o.data.shapes import COLOURS, HELD_OUT_PAIRS, POSITIONS, PREFIXES, SHAPES, SIZE_RANGES
from omni_gpt2o.evaluate import draw_prompts
from omni_gpt2o.judge import find_objects
from omni_gpt2o.pipeline import OmniGPT2oPipeline


def single_object_captions(colour: str, shape: str) -> list[str]:
    sizes = ("", *(f"{s} " for s in SIZE_RANGES))
    return [f"{prefix}a {size}{colour} {shape} {place}" for prefix in PREFIXES for size in sizes for place in POSITIONS]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint", nargs="+", required=True)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--guidance", type=float, default=DEFAULT_GUIDANCE)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    args = parser.parse_args()

    pairs = [(c, s) for c in COLOURS for s in SHAPES]
    for checkpoint in args.checkpoint:
        pipe = OmniGPT2oPipeline.from_pretrained(checkpoint, device=args.device, precision=args.precision)
        print(f"\n{checkpoint}: single objects, the biggest blob's colour and shape (* held out in training)")
        print(f"{'pair':<20} {'n':>3} {'right':>7}   most often instead")
        held, seen = [], []
        for colour, shape in pairs:
            prompts = single_object_captions(colour, shape)
            drawn: Counter = Counter()
            for _, image in draw_prompts(pipe, prompts, 0, 45, False, num_inference_steps=args.steps,
                                         guidance_scale=args.guidance):
                blobs = find_objects(image)
                drawn["nothing" if not blobs else f"{blobs[0].colour} {blobs[0].shape}"] += 1
            right = 100 * drawn.pop(f"{colour} {shape}", 0) / len(prompts)
            (held if (colour, shape) in HELD_OUT_PAIRS else seen).append(right)
            instead = ", ".join(f"{k} {100 * v / len(prompts):.0f}%" for k, v in drawn.most_common(2))
            mark = "*" if (colour, shape) in HELD_OUT_PAIRS else " "
            print(f"{mark}{colour + ' ' + shape:<19} {len(prompts):>3} {right:>6.1f}%   {instead}")
        print(f"held-out pairs {sum(held) / len(held):.1f}% right, seen pairs {sum(seen) / len(seen):.1f}%")


if __name__ == "__main__":
    main()
