"""Training time to reach each bar of the Shapes issue (a benchmark, not a test).

    .venv/bin/python bench/time_to_bar.py --run runs/demo60               # read a finished demo's curve
    .venv/bin/python bench/time_to_bar.py --run runs/demo60 --minutes 60  # train it first (omni-gpt2o demo)

The demo keeps snapshots along its run and scores each on the validation captions (its report.json
"learning_curve"). This prints, for every bar, the first snapshot that met it: training minutes and steps.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

# (name, group, metric, at least): the bars of the demo's budget and of the hour.
BARS = [
    ("demo: one-object full >= 50%", "one_object", "full", 0.50),
    ("demo: two-object full >= 30%", "two_object", "full", 0.30),
    ("hour: one-object colour >= 95%", "one_object", "colour", 0.95),
    ("hour: one-object shape >= 95%", "one_object", "shape", 0.95),
    ("hour: one-object position >= 95%", "one_object", "position", 0.95),
    ("hour: one-object size >= 90%", "one_object", "size", 0.90),
    ("hour: one-object full >= 90%", "one_object", "full", 0.90),
    ("hour: two-object full >= 85%", "two_object", "full", 0.85),
]


def held_out_gap(scores: dict) -> float | None:
    """Points by which held-out pairs trail seen pairs (full prompt); the bar is at most 5."""
    seen, held = scores.get("seen", {}).get("full"), scores.get("held_out", {}).get("full")
    return None if seen is None or held is None else 100 * (seen - held)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", default="runs/demo60", help="a demo output folder")
    parser.add_argument("--minutes", type=float, help="train this demo first (else read its report.json)")
    args = parser.parse_args()
    run = Path(args.run)
    if args.minutes:
        from omni_gpt2o.demo import run_demo

        run_demo(run, minutes=args.minutes)
    report = json.loads((run / "report.json").read_text())
    curve = report.get("learning_curve") or []
    if not curve:
        raise SystemExit(f"{run / 'report.json'} has no learning curve (run the demo with --curve-points > 0)")
    print(f"{run}: {len(curve)} snapshots up to {curve[-1]['minutes']:.1f} training minutes "
          f"({report['machine']['cpu_threads']} CPU threads, {report['machine']['torch']})")
    for name, group, metric, bar in BARS:
        hit = next((p for p in curve if (p["scores"].get(group, {}).get(metric) or 0) >= bar), None)
        where = f"{hit['minutes']:6.1f} min (step {hit['step']})" if hit else "not reached"
        best = max(p["scores"].get(group, {}).get(metric) or 0 for p in curve)
        print(f"  {name:<36} {where:<24} best {100 * best:5.1f}%")
    gaps = [(p, held_out_gap(p["scores"])) for p in curve]
    hit = next((p for p, gap in gaps if gap is not None and gap <= 5 and p["scores"]["held_out"]["full"] > 0.5), None)
    where = f"{hit['minutes']:6.1f} min (step {hit['step']})" if hit else "not reached"
    print(f"  {'hour: held-out within 5 pts of seen':<36} {where:<24} last gap {gaps[-1][1]:5.1f} pts")


if __name__ == "__main__":
    main()
