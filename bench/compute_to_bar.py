"""Compute to reach the Shapes bars, measured the same way on every machine (a benchmark, not a test).

    .venv/bin/python bench/compute_to_bar.py --breakdown                 # where one step's FLOPs go
    .venv/bin/python bench/compute_to_bar.py --budget-tflop 60           # the demo bar's budget
    .venv/bin/python bench/compute_to_bar.py --budget-tflop 200          # the hour bars' budget
    .venv/bin/python bench/compute_to_bar.py --budget-tflop 200 --preset tiny-hour
    .venv/bin/python bench/compute_to_bar.py --budget-tflop 60 --tune --set rollout=0 --model decoder_patch=2
    .venv/bin/python bench/compute_to_bar.py --judge runs/compute/RUN    # a finished run on the validation split
    python bench/compute_to_bar.py --budget-tflop 200 --preset tiny-hour --precision fp32 --device cuda

"Compute to bar X" is a run of `train --max-steps N`, N = budget / (FLOPs of an average training step),
judged on its final weights (raw, no moving average, as the demo keeps them) by the pixel judge on 400
validation captions. The FLOPs of each kind of step (plain, and rollout with its extra forward) are
counted once with `FlopCounterMode` on the real `train_step`: forward and backward, the frozen GPT-2 and
ViT included. A FLOP count leaves out norms, element-wise work and data loading, so the wall time of the
same run is printed beside it, with the machine (CPU flags, precision) that made it. `--tune` judges on a
split made only for choosing levers (seed 101), never the validation captions the README reports;
`--judge RUN` scores a run's final weights again on another split (its seed's validation split by default)
without training, so levers chosen on the tuning split are checked on captions they were not chosen on.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from omni_gpt2o.bars import DEMO_BARS, HELD_OUT_BAR_NAME, HOUR_BARS, held_out_gap, meets_gap, score_of
from omni_gpt2o.compute import describe_machine, machine_info, run_flops, training_step_flops
from omni_gpt2o.config import DEFAULT_GUIDANCE, SAME_COLOUR_PAIRS, TRAIN_IMAGES, get_preset
from omni_gpt2o.data.shapes import shapes_split
from omni_gpt2o.data.wordings import WORDINGS, wording_of
from omni_gpt2o.demo import CPU_BATCH_SIZE as DEMO_BATCH
from omni_gpt2o.demo import EMA_DECAY as DEMO_EMA_DECAY
from omni_gpt2o.demo import learning_rate_for
from omni_gpt2o.evaluate import evaluate_pipeline, format_scores, split_prompts
from omni_gpt2o.model import build_model
from omni_gpt2o.options import checked, parse_assignments
from omni_gpt2o.pipeline import OmniGPT2oPipeline
from omni_gpt2o.train import Learner, StepBatch, TrainConfig, alignment_targets, train, train_step

TUNING_SEED = 101  # the split levers are chosen on; the demo's validation splits use seeds 0 and 1



def breakdown(model, cfg: TrainConfig) -> list[tuple[str, float]]:
    """FLOPs of one plain training step by part: each part is run again on its own, on the inputs it got
    in the step, forward and (where the step needs gradients through it) backward, under FlopCounterMode.
    (FlopCounterMode's own per-module split misplaces backward FLOPs of modules whose inputs need no grad.)"""
    parts = {"the LM (frozen; backward to its inputs)": model.text_encoder, "ViT (frozen)": model.image_encoder,
             "draft projection + heads": [model.draft_projection, model.latent_heads, model.alignment_head]
             + ([model.reader] if model.reader is not None else []),
             "decoder: conditioning (strength, pooled prompt)":
                 [m for m in (model.decoder.strength_mlp, model.decoder.text_pool) if m is not None]}
    dec = model.decoder
    n = len(dec.down)
    side = model.config.image_size // model.config.decoder_patch
    for i in range(n):
        px = side >> i
        level = [dec.down[i]] + ([dec.downsample[i]] if i < n - 1 else []) + ([dec.up[i]] if i < n - 1 else [])
        if i == 0:
            level += [dec.conv_in, dec.conv_out, dec.norm_out] + ([dec.pixel_head] if dec.pixel_head else [])
        parts[f"decoder: level {i} ({px} x {px} px, {dec.down[i].blocks[0].conv1.out_channels} ch)"] = level
    parts[f"decoder: middle ({side >> (n - 1)} px) + latent in"] = [dec.middle, dec.latent_in]

    calls: list[tuple[torch.nn.Module, tuple, dict, bool]] = []
    hooks = []
    for modules in parts.values():
        for m in modules if isinstance(modules, list) else [modules]:
            hooks.append(m.register_forward_pre_hook(
                lambda mod, args, kwargs: calls.append((mod, args, kwargs, torch.is_grad_enabled())), with_kwargs=True))
    size, b = model.config.image_size, cfg.batch_size
    clean = torch.rand(b, 3, size, size) * 2 - 1
    cfg = replace(cfg, rollout=0.0, learning_rate=0.0)
    learner = Learner(model, cfg, None)
    with FlopCounterMode(display=False) as total:
        batch = StepBatch(clean, ["a small red circle to the left of a large blue square"] * b,
                          target=alignment_targets(model, clean, cfg, None))
        train_step(learner, batch, cfg, 0)
    for h in hooks:
        h.remove()

    def cost(mod, args, kwargs, grad) -> float:
        def prep(x):
            if isinstance(x, torch.Tensor):
                return x.detach().requires_grad_(x.requires_grad and grad and x.is_floating_point())
            return x
        args, kwargs = [prep(a) for a in args], {k: prep(v) for k, v in kwargs.items()}
        with FlopCounterMode(display=False) as counter, torch.set_grad_enabled(grad):
            out = mod(*args, **kwargs)
            outs = [o for o in (out if isinstance(out, tuple) else (out,)) if isinstance(o, torch.Tensor)]
            if grad and any(o.requires_grad for o in outs):
                sum(o.float().sum() for o in outs if o.requires_grad).backward()
        return float(counter.get_total_flops())

    rows = []
    for name, modules in parts.items():
        members = modules if isinstance(modules, list) else [modules]
        rows.append((name, sum(cost(*c) for c in calls if any(c[0] is m for m in members))))
    rest = total.get_total_flops() - sum(v for _, v in rows)
    rows.append(("the rest: losses, draft blurs (the total less the parts)", rest))
    return rows


def caption_encoding(train_dir: Path, model) -> dict | None:
    """What computing the LM's states of the split's captions cost (once; the training step never runs the LM),
    from the run's text cache; None for a model whose LM reads the draft (no cache: the LM is in every step)."""
    if model.reader is None:
        return None
    from omni_gpt2o.data.text_cache import TextStateCache

    cache = TextStateCache(train_dir / "text_states", model)
    return {"captions": len(cache), "tflop": cache.flops / 1e12, "seconds": cache.seconds}


def judge_unseen(checkpoint: Path, prompts: list[str], device: str = "cpu") -> dict:
    """Scores on unseen-word captions: all of them, then each wording apart."""
    pipe = OmniGPT2oPipeline.from_pretrained(checkpoint, device=device)
    groups = {"all": prompts} | {w: [p for p in prompts if wording_of(p) == w] for w in WORDINGS}
    return {name: evaluate_pipeline(pipe, group, steps=8, guidance=DEFAULT_GUIDANCE, progress=False)["scores"]
            for name, group in groups.items() if group}


def judge(checkpoint: Path, prompts: list[str], device: str = "cpu") -> dict:
    pipe = OmniGPT2oPipeline.from_pretrained(checkpoint, device=device)
    return evaluate_pipeline(pipe, prompts, steps=8, guidance=DEFAULT_GUIDANCE, progress=False)["scores"]


def bar_lines(scores: dict) -> list[str]:
    lines = []
    for name, group, metric, bar in DEMO_BARS + HOUR_BARS:
        value = score_of(scores, group, metric)
        lines.append(f"  {name:<28} {100 * value:5.1f}%  {'met' if value >= bar else 'not met'}")
    gap = held_out_gap(scores)
    lines.append(f"  {HELD_OUT_BAR_NAME:<28} {gap:+5.1f} pts  {'met' if meets_gap(scores) else 'not met'}")
    lines.append(f"  {'clean pictures':<28} {100 * scores['all']['clean']:5.1f}%")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget-tflop", type=checked(float, positive=True),
                        help="train for this much compute, then judge")
    parser.add_argument("--breakdown", action="store_true", help="print where one step's FLOPs go")
    parser.add_argument("--set", nargs="*", action="extend", default=[],
                        help="TrainConfig fields, e.g. rollout=0 learning_rate=2e-3 (may be repeated)")
    parser.add_argument("--model", nargs="*", action="extend", default=[],
                        help="OmniConfig fields, e.g. decoder_patch=4 (may be repeated)")
    parser.add_argument("--preset", default="tiny", choices=["tiny", "tiny-hour", "smollm2", "smollm2-hour"],
                        help="the offline preset trained (--model changes its fields)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--precision", default="auto", help="training precision: auto | fp32 | bf16")
    parser.add_argument("--device", default="cpu",
                        help="where to train and judge: cpu | cuda (FLOPs do not depend on it; fp32 on CUDA is "
                             "plain fp32 here, TF32 off)")
    parser.add_argument("--prompts", type=checked(int, positive=True), default=400)
    parser.add_argument("--two-object-share", type=float, default=0.5,
                        help="share of two-object pictures in the training split (the spec's 0.5)")
    parser.add_argument("--same-colour-pairs", type=float, default=SAME_COLOUR_PAIRS,
                        help="share of training pairs of one colour (two shapes): colour cannot tell them apart")
    parser.add_argument("--swappable-pairs", action="store_true",
                        help="keep only training pairs whose shapes could trade places (no held-out shortcut)")
    parser.add_argument("--train-images", type=checked(int, positive=True), default=TRAIN_IMAGES,
                        help="pictures in the training split, as the demo's flag (the warmup is counted in epochs: "
                             "scale --set warmup_epochs to keep its steps)")
    parser.add_argument("--tune", action="store_true", help="judge on the lever-tuning split (seed 101)")
    parser.add_argument("--unseen", action="store_true",
                        help="also judge on a split of the same seed in words no training caption uses "
                             "(make-shapes --wording unseen: synonyms, paraphrases, Russian)")
    parser.add_argument("--work", default="runs/compute")
    parser.add_argument("--name", help="run folder name under --work (default: from the settings)")
    parser.add_argument("--judge", metavar="RUN",
                        help="no training: judge this finished run's final weights (its seed, settings and model "
                             "from RUN/train_config.json) on the validation split, or the tuning split with --tune")
    args = parser.parse_args()

    settings, model_settings = parse_assignments(args.set), parse_assignments(args.model)
    if args.judge:  # the run's own settings, so its FLOPs per step are counted as they were
        run_config = json.loads((Path(args.judge) / "train_config.json").read_text())
        args.seed, args.precision, args.preset = run_config["seed"], run_config["precision"], run_config["preset"]
        model_settings = run_config["model_overrides"] or {}
        settings = {k: run_config[k] for k in ("batch_size", "ema_decay", "rollout", "learning_rate")}
    work = Path(args.work)
    variant = "" if args.two_object_share == 0.5 else f"-pairs{args.two_object_share:g}"
    variant += f"-same{args.same_colour_pairs:g}" if args.same_colour_pairs else ""
    variant += "-swap" if args.swappable_pairs else ""
    variant += "" if args.train_images == TRAIN_IMAGES else f"-n{args.train_images}"
    train_dir = Path(run_config["data"]) if args.judge else shapes_split(
        work / "data" / f"train-{args.seed}{variant}", args.train_images, split="train", seed=args.seed,
        two_object_share=args.two_object_share, same_colour_pairs=args.same_colour_pairs,
        swappable_pairs=args.swappable_pairs)
    val_seed = TUNING_SEED if args.tune else args.seed
    val_dir = shapes_split(work / "data" / f"val-{val_seed}", args.prompts, split="val", seed=val_seed)
    name = args.name or "_".join(([] if args.preset == "tiny" else [args.preset])
                                 + ([] if args.precision == "auto" else [args.precision])
                                 + [f"{k}={v}" for k, v in {**settings, **model_settings}.items()] or ["default"])
    # The demo's batch and moving average, unless told otherwise; the learning rate follows the batch as there.
    settings = {"batch_size": DEMO_BATCH, "ema_decay": DEMO_EMA_DECAY} | settings
    settings.setdefault("learning_rate", learning_rate_for(settings["batch_size"]))
    out = Path(args.judge) if args.judge else work / f"{name}-{args.budget_tflop or 0:g}tf-s{args.seed}"
    cfg = TrainConfig(data=str(train_dir), out=str(out), preset=args.preset, overwrite=True,
                      seed=args.seed, precision=args.precision, progress=True, device=args.device,
                      model_overrides=model_settings or None, **settings)

    if args.device == "cuda" and args.precision == "fp32":  # PyTorch's convolutions default to TF32 on CUDA
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    info = machine_info()
    where = describe_machine(info) + (f", training on {info['cuda']}" if args.device == "cuda" else "")
    print(f"machine: {where}; torch {info['torch']}")
    torch.manual_seed(0)
    model = build_model(get_preset(cfg.preset).replace(**model_settings))
    model.text_encoder.use_attention_for(torch.device("cpu"))
    flops = training_step_flops(model, cfg)
    print(f"settings: {settings}; model: preset {args.preset}{f' with {model_settings}' if model_settings else ''}; "
          f"batch {cfg.batch_size}")
    print(f"one training step: plain {flops['plain'] / 1e9:.1f} GFLOP, rollout {flops['rollout'] / 1e9:.1f} GFLOP; "
          f"average at rollout {cfg.rollout:g}: {flops['mean'] / 1e9:.1f} GFLOP")
    if args.breakdown:
        rows = breakdown(model, cfg)
        total = sum(v for _, v in rows)
        print(f"\nwhere a plain step's {total / 1e9:.1f} GFLOP go (forward + backward, batch {cfg.batch_size}):")
        for part, value in rows:
            print(f"  {part:<52} {value / 1e9:7.2f} GFLOP  {100 * value / total:5.1f}%")
        extra = flops["rollout"] - flops["plain"]
        print(f"  {'a rollout step adds (a forward of the whole model)':<52} {extra / 1e9:7.2f} GFLOP")
    if not (args.budget_tflop or args.judge):
        return

    started = time.perf_counter()
    if not args.judge:
        steps = math.floor(args.budget_tflop * 1e12 / flops["mean"])
        cfg.max_steps = steps
        print(f"\n{args.budget_tflop:g} TFLOP = {steps} steps; training {cfg.out}", flush=True)
        train(cfg)
    minutes = (time.perf_counter() - started) / 60
    last = Path(cfg.out) / "checkpoints" / "last"
    trained = json.loads((last / "config.json").read_text())["trained"]
    spent = run_flops(flops, trained["step"], trained["rollout_steps"])
    args.budget_tflop = args.budget_tflop or round(spent / 1e12)
    captions = caption_encoding(train_dir, model)
    scores = judge(last, split_prompts(val_dir), args.device)
    print(format_scores(scores))
    unseen = None
    if args.unseen:
        unseen_dir = shapes_split(work / "data" / f"val-unseen-{val_seed}", args.prompts, split="val", seed=val_seed,
                                  wording="unseen")
        unseen = judge_unseen(last, split_prompts(unseen_dir), args.device)
        for wording, table in unseen.items():
            print(f"\nthe same weights on captions in unseen words, {wording} (seed {val_seed}):")
            print(format_scores(table))
    print(f"\n{trained['step']} steps, {spent / 1e12:.1f} TFLOP, {trained['elapsed'] / 60:.1f} training minutes "
          f"({'judged again' if args.judge else f'{minutes:.1f} wall'}) on {where}, "
          f"precision {args.precision}; judged on "
          f"{len(split_prompts(val_dir))} {'tuning' if args.tune else 'validation'} captions (seed {val_seed}):")
    if captions:
        print(f"caption encoding, once per distinct caption and apart from the training compute: "
              f"{captions['tflop']:.2f} TFLOP, {captions['seconds'] / 60:.1f} minutes")
    print("\n".join(bar_lines(scores)))
    result = {"settings": settings, "preset": args.preset, "model": model_settings, "seed": args.seed,
              "budget_tflop": args.budget_tflop,
              "two_object_share": args.two_object_share, "same_colour_pairs": args.same_colour_pairs,
              "swappable_pairs": args.swappable_pairs,
              "train_images": args.train_images,
              "step_gflop": {k: v / 1e9 for k, v in flops.items()}, "steps": trained["step"],
              "caption_encoding": captions,
              "tflop": spent / 1e12, "train_minutes": trained["elapsed"] / 60, "precision": args.precision,
              "device": args.device, "machine": info, "judged_on": "tuning" if args.tune else "validation",
              "scores": scores, "unseen_scores": unseen,
              "run": str(cfg.out), "judged_again": bool(args.judge)}
    with open(work / "results.jsonl", "a") as f:
        f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
