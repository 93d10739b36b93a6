"""Emoji retrieval against training compute: one run, scored at several points along it (a benchmark).

    .venv/bin/python bench/emoji_curve.py --preset tiny --budget-tflop 160 --points 4 --precision fp32
    .venv/bin/python bench/emoji_curve.py --preset smollm2 --budget-tflop 160 --model decoder_channels=(96,192)
    .venv/bin/python bench/emoji_curve.py --preset smollm2-emoji --budget-tflop 300 --size 32 --steps 1
    .venv/bin/python bench/emoji_curve.py --plot runs/emoji-curve/results.jsonl --out docs/emoji_curve.png

A run of `train --max-steps N` on the emoji train split of `--seed` (N = budget / FLOPs of one training step,
counted with `FlopCounterMode` on the real `train_step`), keeping its weights every N / points steps; each
snapshot draws the first `--per-category` val pictures of every category (docs/emoji.md) and the emoji judge
ranks them among all 3,944 renders (Lite0 features, and 16-px pixels, which no loss uses). The LM's states of
the captions are computed once per split and LM, and reported apart from the training compute. Each point goes
to WORK/results.jsonl with its machine and precision; `--plot` draws top-5 against TFLOP per category.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

from omni_gpt2o.compute import describe_machine, machine_info, run_flops, training_step_flops
from omni_gpt2o.config import DEFAULT_GUIDANCE, get_preset
from omni_gpt2o.data.emoji import emoji_split
from omni_gpt2o.demo import CPU_BATCH_SIZE, EMA_DECAY, learning_rate_for
from omni_gpt2o.evaluate import evaluate_emoji, format_emoji_scores
from omni_gpt2o.model import build_model
from omni_gpt2o.options import checked, parse_assignments
from omni_gpt2o.pipeline import OmniGPT2oPipeline
from omni_gpt2o.train import TrainConfig, train

CURVE_GROUPS = ("trained", "new_frames", "held_out_tones", "scenes")


def plot(results: Path, out: Path, metric: str = "lite0_top5") -> None:
    """Top-5 against training TFLOP, one panel per category, one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs: dict[str, list[dict]] = {}
    for line in results.read_text().splitlines():
        point = json.loads(line)
        runs.setdefault(point["label"], []).append(point)
    fig, axes = plt.subplots(1, len(CURVE_GROUPS), figsize=(4 * len(CURVE_GROUPS), 3.4), sharey=True)
    for ax, group in zip(axes, CURVE_GROUPS):
        for label, points in runs.items():
            points.sort(key=lambda p: p["tflop"])
            ax.plot([p["tflop"] for p in points], [100 * p["scores"][group][metric] for p in points], "o-",
                    label=label)
        ax.set_title(group.replace("_", " "))
        ax.set_xlabel("training TFLOP")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"{metric.replace('_', ' ')} (%)")
    axes[-1].legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--budget-tflop", type=checked(float, positive=True))
    parser.add_argument("--points", type=checked(int, positive=True), default=4)
    parser.add_argument("--per-category", type=checked(int, positive=True), default=57)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=checked(int, positive=True), default=64,
                        help="the emoji splits' picture size (the model's image_size should match it)")
    parser.add_argument("--steps", type=checked(int, positive=True), default=8, help="sampling steps when judged")
    parser.add_argument("--guidance", type=float, default=DEFAULT_GUIDANCE, help="guidance scale when judged")
    parser.add_argument("--precision", default="auto", help="training precision: auto | fp32 | bf16")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--set", nargs="*", action="extend", default=[], help="TrainConfig fields, key=value")
    parser.add_argument("--model", nargs="*", action="extend", default=[], help="the preset's fields, key=value")
    parser.add_argument("--label", help="the run's name in results and plots (default: from the settings)")
    parser.add_argument("--work", default="runs/emoji-curve")
    parser.add_argument("--plot", metavar="RESULTS", help="only draw the curves of a results.jsonl")
    parser.add_argument("--out", default="runs/emoji-curve/curve.png")
    args = parser.parse_args()
    if args.plot:
        return plot(Path(args.plot), Path(args.out))
    if not args.budget_tflop:
        parser.error("--budget-tflop is needed to train (or --plot to draw)")

    settings, model_settings = parse_assignments(args.set), parse_assignments(args.model)
    work = Path(args.work)
    suffix = "" if args.size == 64 else f"-{args.size}px"
    train_dir = emoji_split(work / "data" / f"emoji-train-{args.seed}{suffix}", "train", seed=args.seed, size=args.size)
    val_dir = emoji_split(work / "data" / f"emoji-val-{args.seed}{suffix}", "val", seed=args.seed, size=args.size)
    label = args.label or "_".join([args.preset, args.precision] + [f"{k}={v}" for k, v in
                                                                   {**settings, **model_settings}.items()])
    settings = {"batch_size": CPU_BATCH_SIZE, "ema_decay": EMA_DECAY} | settings
    settings.setdefault("learning_rate", learning_rate_for(settings["batch_size"]))
    out = work / f"{label}-{args.budget_tflop:g}tf-s{args.seed}"
    cfg = TrainConfig(data=str(train_dir), out=str(out), preset=args.preset, overwrite=True, seed=args.seed,
                      precision=args.precision, device=args.device, model_overrides=model_settings or None,
                      **settings)
    info = machine_info()
    torch.manual_seed(0)
    model = build_model(get_preset(args.preset).replace(**model_settings))
    model.text_encoder.use_attention_for(torch.device("cpu"))
    flops = training_step_flops(model, cfg)
    cfg.max_steps = math.floor(args.budget_tflop * 1e12 / flops["mean"])
    cfg.snapshot_steps = max(1, cfg.max_steps // args.points)
    print(f"machine: {describe_machine(info)}; {args.budget_tflop:g} TFLOP = {cfg.max_steps} steps of "
          f"{flops['mean'] / 1e9:.1f} GFLOP; a snapshot every {cfg.snapshot_steps} steps", flush=True)
    train(cfg)

    from omni_gpt2o.emoji_judge import EmojiJudge

    judge = EmojiJudge(args.size, cache_dir=val_dir)
    snapshots = sorted((out / "checkpoints" / "snapshots").glob("step-*"))
    for folder in snapshots or [out / "checkpoints" / "last"]:
        trained = json.loads((folder / "config.json").read_text())["trained"]
        pipe = OmniGPT2oPipeline.from_pretrained(folder, precision="fp32")
        result = evaluate_emoji(pipe, val_dir, args.per_category, steps=args.steps, guidance=args.guidance,
                                judge=judge)
        tflop = run_flops(flops, trained["step"], trained["rollout_steps"]) / 1e12
        print(f"\n{trained['step']} steps, {tflop:.1f} TFLOP, {trained['elapsed'] / 60:.1f} training minutes:")
        print(format_emoji_scores(result["scores"]), flush=True)
        point = {"label": label, "preset": args.preset, "model": model_settings, "settings": settings,
                 "seed": args.seed, "step": trained["step"], "tflop": tflop, "train_minutes": trained["elapsed"] / 60,
                 "step_gflop": flops["mean"] / 1e9, "precision": args.precision, "machine": info,
                 "size": args.size, "sampling": {"steps": args.steps, "guidance": args.guidance},
                 "scores": result["scores"], "run": str(out)}
        with open(work / "results.jsonl", "a") as f:
            f.write(json.dumps(point) + "\n")


if __name__ == "__main__":
    main()
