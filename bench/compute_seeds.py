"""One `compute_to_bar.py` run per training seed, side by side, and a table of the bars each met.

    .venv/bin/python bench/compute_seeds.py --seeds 0 1 2 3 -- --budget-tflop 200 --preset tiny-hour --precision fp32
    python3 bench/compute_seeds.py --seeds 0 1 2 3 4 5 6 7 --tune-too -- --device cuda --budget-tflop 200 ...

How steady a recipe is across seeds is what a single run cannot say. Each seed's run is judged on its own
validation captions, then (`--tune-too`) again on the tuning split. Logs and results go under --work.
On one GPU the `tiny` presets are small enough that a run is bound by launching kernels, not by the card: on
an H200 (16 CPU cores, fp32, `--threads 1`) eight `tiny-hour` runs at batch 16 side by side made 12 steps/s
each (~98 in all), two made 20 each: a 200-TFLOP run took 12-19 minutes there, against 46 (bf16) to 66 (fp32)
on one thread of a 2-core AVX512-BF16 EPYC, two runs side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from compute_to_bar import TUNING_SEED  # noqa: E402

from omni_gpt2o.bars import held_out_gap, missed_hour_bars  # noqa: E402
from omni_gpt2o.data.shapes import shapes_split  # noqa: E402


def last_step(log: Path) -> tuple[int, int] | None:
    """The latest "step/steps" of a run's training progress bar, from its log."""
    text = log.read_bytes() if log.exists() else b""
    planned = re.search(rb"= (\d+) steps; training", text)
    found = re.findall(rb"(\d+)/" + planned.group(1) + rb" \[", text[-4000:]) if planned else []
    return (int(found[-1]), int(planned.group(1))) if found else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", required=True)
    parser.add_argument("--work", default="runs/compute")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per run")
    parser.add_argument("--tune-too", action="store_true", help="judge each finished run on the tuning split too")
    parser.add_argument("rest", nargs=argparse.REMAINDER, help="-- then compute_to_bar.py's arguments")
    args = parser.parse_args()
    rest = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
    work = Path(args.work)
    (work / "logs").mkdir(parents=True, exist_ok=True)
    env = os.environ | {"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
                        "PYTHONUNBUFFERED": "1"}
    script = [sys.executable, str(HERE / "compute_to_bar.py"), "--work", str(work)]
    # The whole argument list names the logs: runs that differ only in a late flag (--precision) must not share one.
    tag = "-".join(a.lstrip("-").replace("=", "") for a in rest if "/" not in a)[:200]

    started, runs = time.time(), {}
    for seed in args.seeds:
        log = work / "logs" / f"{tag}-s{seed}.log"
        with open(log, "wb") as f:
            runs[seed] = (subprocess.Popen([*script, *rest, "--seed", str(seed)], stdout=f, stderr=subprocess.STDOUT,
                                           env=env), log)
    while any(p.poll() is None for p, _ in runs.values()):
        time.sleep(30)
        progress = {s: last_step(log) for s, (p, log) in runs.items() if p.poll() is None}
        print(f"{(time.time() - started) / 60:5.1f} min: " + ", ".join(
            f"s{s} {p[0]}/{p[1]}" if p else f"s{s} starting" for s, p in progress.items()), flush=True)

    finished = {}
    for seed, (proc, log) in runs.items():
        run = re.search(r"steps; training (\S+)", log.read_text(errors="replace"))
        if proc.returncode == 0 and run:
            finished[seed] = run.group(1)
        else:
            print(f"seed {seed}: no result (exit {proc.returncode}); see {log}")
    if args.tune_too:  # the same judge on the tuning split, with the runs' device and prompt count
        shared = argparse.ArgumentParser(add_help=False)
        shared.add_argument("--device", default="cpu")
        shared.add_argument("--prompts", type=int, default=400)
        known, _ = shared.parse_known_args(rest)
        passed = ["--device", known.device, "--prompts", str(known.prompts)]
        # Made here once, before the judges start side by side, so that none of them makes it while another reads.
        shapes_split(work / "data" / f"val-{TUNING_SEED}", known.prompts, split="val", seed=TUNING_SEED)
        judges = {seed: subprocess.Popen([*script, "--judge", run, "--tune", *passed], stdout=subprocess.DEVNULL,
                                         stderr=subprocess.PIPE, text=True, env=env)
                  for seed, run in finished.items()}
        for seed, judge in judges.items():
            if judge.wait():
                print(f"seed {seed}: judging on the tuning split failed:\n{judge.stderr.read()[-2000:]}")
    print_table(work / "results.jsonl", set(finished.values()))


def print_table(results: Path, runs: set[str]) -> None:
    """One line per run and split: the figures the bars are held against, and which bars were missed."""
    latest = {(r["run"], r["judged_on"]): r for r in map(json.loads, results.read_text().splitlines())
              if r["run"] in runs}  # a run trained or judged again replaces its earlier line
    rows = latest.values()
    print(f"\n{'seed':>4} {'precision':<9} {'judged on':<10} {'colour':>6} {'shape':>6} {'place':>6} {'size':>6} "
          f"{'one':>6} {'two':>6} {'held':>6} {'seen':>6} {'gap':>5} {'clean':>6}  hour bars missed")
    for r in sorted(rows, key=lambda r: (r["seed"], r["judged_on"])):
        sc = r["scores"]
        one, two = sc["one_object"], sc["two_object"]
        gap = held_out_gap(sc)
        missed = missed_hour_bars(sc)
        print(f"{r['seed']:>4} {r['precision']:<9} {r['judged_on']:<10} " + " ".join(
            f"{100 * v:6.1f}" for v in (one["colour"], one["shape"], one["position"], one["size"], one["full"],
                                        two["full"], sc["held_out"]["full"], sc["seen"]["full"]))
            + f" {gap:5.1f} {100 * sc['all']['clean']:6.1f}  " + (", ".join(missed) or "all met"))


if __name__ == "__main__":
    main()
