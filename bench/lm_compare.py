"""Random against pretrained frozen LM, seen against unseen words: one table from compute_to_bar's runs.

    .venv/bin/python bench/lm_compare.py                        # every run in runs/compute/results.jsonl
    .venv/bin/python bench/lm_compare.py --markdown             # the table in docs/frozen-lm.md

Reads the result lines `bench/compute_to_bar.py --unseen` wrote (the latest per run folder and split) and
prints, per run: preset and lever, seed, training TFLOP, the one-time caption encoding, and the judge's
full-prompt scores (every attribute right, nothing extra) on the seen wording (one object, pairs, held-out
pairs) and on unseen words (one object, pairs; then each wording's one- and two-object scores together; then
one-object colour, shape and position right, apart).
No torch: it only reads JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from omni_gpt2o.bars import DEMO_BARS, score_of

COLUMNS = ("run", "seed", "precision", "TFLOP", "captions TFLOP", "seen 1", "seen 2", "held-out", "unseen 1",
           "unseen 2", "synonyms", "paraphrase", "russian", "unseen 1 colour", "shape", "position")


def pct(scores: dict | None, group: str, metric: str = "full") -> str:
    if not scores or not scores.get(group, {}).get("n"):
        return "-"
    return f"{100 * score_of(scores, group, metric):.1f}"


def row(result: dict) -> list[str]:
    seen, unseen = result["scores"], result.get("unseen_scores") or {}
    lever = ", ".join(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}"  # a template's newlines as \\n
                      for k, v in (result.get("model") or {}).items())
    captions = result.get("caption_encoding")
    return [result["preset"] + (f" ({lever})" if lever else ""), str(result["seed"]), result.get("precision", "-"),
            f"{result['tflop']:.0f}",
            f"{captions['tflop']:.1f}" if captions else "in the step",
            pct(seen, "one_object"), pct(seen, "two_object"), pct(seen, "held_out"),
            pct(unseen.get("all"), "one_object"), pct(unseen.get("all"), "two_object"),
            *(pct(unseen.get(w), "all") for w in ("synonyms", "paraphrase", "russian")),
            *(pct(unseen.get("all"), "one_object", m) for m in ("colour", "shape", "position"))]


def latest(results: list[dict]) -> list[dict]:
    """The last line per (run, judged split): a run judged again shows its latest figures once."""
    kept: dict[tuple, dict] = {}
    for r in results:
        key = (r["run"], r["judged_on"])
        if r.get("unseen_scores") or key not in kept or not kept[key].get("unseen_scores"):
            kept[key] = r
    return sorted(kept.values(), key=lambda r: (r["budget_tflop"], r["preset"], str(r.get("model")), r["seed"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", default="runs/compute/results.jsonl")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    results = [json.loads(line) for line in Path(args.results).read_text().splitlines() if line.strip()]
    rows = [row(r) for r in latest(results) if r["judged_on"] == "validation"]
    if args.markdown:
        print("| " + " | ".join(COLUMNS) + " |")
        print("|" + "---|" * len(COLUMNS))
        for r in rows:  # a chat template's "<|im_start|>" would end a cell
            print("| " + " | ".join(cell.replace("|", "\\|") for cell in r) + " |")
    else:
        widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(COLUMNS)]
        print("  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths)))
        for r in rows:
            print("  ".join(v.ljust(w) for v, w in zip(r, widths)))
    bars = ", ".join(name for name, *_ in DEMO_BARS)
    print(f"\nfull-prompt scores in %; seen = the grammar's words (demo bars: {bars}), held-out = captions naming a "
          "held-out colour-shape pair; unseen = words no training "
          "caption uses (docs/shapes.md); the wordings' columns count one and two objects together")


if __name__ == "__main__":
    main()
