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

from omni_gpt2o.bars import DEMO_BARS, HELD_OUT_BAR_NAME, HOUR_BARS, held_out_gap, meets_gap, score_of


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
    bars = [(f"demo: {name}", *bar) for name, *bar in DEMO_BARS] + [(f"hour: {name}", *bar) for name, *bar in HOUR_BARS]
    for name, group, metric, bar in bars:
        hit = next((p for p in curve if score_of(p["scores"], group, metric) >= bar), None)
        where = f"{hit['minutes']:6.1f} min (step {hit['step']})" if hit else "not reached"
        best = max(score_of(p["scores"], group, metric) for p in curve)
        print(f"  {name:<36} {where:<24} best {100 * best:5.1f}%")
    # A gap counts only once held-out pairs are mostly drawn right (an untrained model has no gap either).
    hit = next((p for p in curve if meets_gap(p["scores"]) and p["scores"]["held_out"]["full"] > 0.5), None)
    where = f"{hit['minutes']:6.1f} min (step {hit['step']})" if hit else "not reached"
    last_gap = held_out_gap(curve[-1]["scores"])
    print(f"  {'hour: ' + HELD_OUT_BAR_NAME:<36} {where:<24} last gap "
          + ("not judged" if last_gap is None else f"{last_gap:5.1f} pts"))


if __name__ == "__main__":
    main()
