"""How well the emoji judge recognises real drawings (a benchmark, not a test).

    .venv/bin/python bench/emoji_judge.py                 # 1,000 emoji, drawn at 32, 48 and 64 px
    .venv/bin/python bench/emoji_judge.py --queries 3944 --cache-dir runs/demo/data/emoji-val

The judge's bank is every emoji of the catalogue (3,944) rendered at 64 px. Each query is a real render of a
sampled emoji at 32, 48 or 64 px, scaled to 64 (bicubic): the judge's figures on pictures that are right by
construction, the ceiling a generator's figures are read against. Prints top-1 / top-5 in Lite0's features and
in 16-px pixels, the base and tone of the nearest emoji for skin-toned ones, and the time, with the machine.
"""

from __future__ import annotations

import argparse
import random
import time

from PIL import Image

from omni_gpt2o.compute import describe_machine, machine_info
from omni_gpt2o.data.emoji import catalogue, render
from omni_gpt2o.emoji_judge import EmojiJudge, retrieval_scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queries", type=int, default=1000, help="emoji drawn (a fixed random sample)")
    parser.add_argument("--size", type=int, default=64, help="the bank's picture size")
    parser.add_argument("--cache-dir", help="where the bank's features are kept (an emoji split folder)")
    args = parser.parse_args()
    print(f"machine: {describe_machine(machine_info())}", flush=True)
    emojis = catalogue()
    start = time.perf_counter()
    judge = EmojiJudge(args.size, emojis, progress=True, cache_dir=args.cache_dir)
    print(f"bank: {len(emojis)} renders at {args.size} px in {time.perf_counter() - start:.0f} s", flush=True)
    sample = random.Random(0).sample(list(emojis), min(args.queries, len(emojis)))
    for size in (32, 48, 64):
        start = time.perf_counter()
        pictures = [render((e.char,), size)[0].resize((args.size, args.size), Image.Resampling.BICUBIC)
                    for e in sample]
        scores = retrieval_scores(judge.rank(pictures, [e.char for e in sample]), [e.name for e in sample])
        print(f"real renders drawn at {size} px (n={len(sample)}): " + ", ".join(
            f"{k} {100 * v:.1f}%" for k, v in scores.items()) + f"; {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
