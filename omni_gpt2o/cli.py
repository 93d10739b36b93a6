"""`omni-gpt2o <subcommand>`: make-shapes, make-emoji, prepare-coco, precompute, prepare-drafts, train, generate,
evaluate, demo, serve.

Flags are --kebab-case; the --snake_case spellings of the original prototype (github.com/rapotekhin/omni-gpt2o)
work too. Bad input exits non-zero with one clear line on stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from omni_gpt2o.config import DEFAULT_GUIDANCE, SAME_COLOUR_PAIRS, SCHEDULE_POWER, TRAIN_IMAGES
from omni_gpt2o.fileio import OmniError
from omni_gpt2o.options import add_flags, checked, flag, from_flags
from omni_gpt2o.train import TrainConfig


class DefaultsFormatter(argparse.HelpFormatter):
    """Help that ends with the flag's default, where it has one worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if default is None or default is False or default == argparse.SUPPRESS or action.required \
                or "default" in text:
            return text
        return f"{text} (default: {default})" if text else f"default: {default}"


class Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", DefaultsFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # one line, no usage block
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        raise SystemExit(2)


DEVICE_HELP = "auto (a CUDA GPU, else Apple's MPS, else the CPU) | cpu | cuda | mps"
PRECISION_HELP = "auto: bf16 on GPUs and on CPUs with native bf16 (AVX512-BF16, AMX), else fp32"
positive_int = checked(int, positive=True)
non_negative_int = checked(int, minimum=0)
positive_float = checked(float, positive=True)
finite_float = checked(float)


def add_sampler_flags(p: argparse.ArgumentParser) -> None:
    flag(p, "--steps", type=positive_int, default=8, help="sampling steps per picture")
    flag(p, "--guidance", type=finite_float, default=DEFAULT_GUIDANCE, help="classifier-free guidance scale (1 = off)")
    flag(p, "--schedule-power", type=positive_float, default=SCHEDULE_POWER,
         help="the sampler's strengths fall as (1 - k/steps)^power (1 = equal steps)")


def add_device_flags(p: argparse.ArgumentParser) -> None:
    flag(p, "--device", default="auto", help=DEVICE_HELP)
    flag(p, "--precision", choices=["auto", "bf16", "fp32"], default="auto", help=PRECISION_HELP)


def add_sd_flags(p: argparse.ArgumentParser) -> None:
    flag(p, "--draft-model", default="stabilityai/sd-turbo", help="diffusers model id or folder for SD drafts")
    flag(p, "--draft-steps", type=positive_int, default=1, help="Stable Diffusion's own sampling steps")
    flag(p, "--draft-guidance", type=finite_float, default=0.0, help="Stable Diffusion's guidance (0 for sd-turbo)")
    flag(p, "--draft-resolution", type=positive_int, default=512, help="SD's picture size before resizing")
    flag(p, "--draft-dtype", choices=["auto", "fp16", "bf16", "fp32"], default="auto",
         help="Stable Diffusion's weights' dtype (auto: fp16 on GPUs, fp32 on CPUs)")


def sd_config(args: argparse.Namespace):
    from omni_gpt2o.sd_drafts import SDDraftConfig

    return SDDraftConfig(model=args.draft_model, steps=args.draft_steps, guidance=args.draft_guidance,
                         resolution=args.draft_resolution, dtype=args.draft_dtype)


def make_shapes_flags(p: Parser) -> None:
    flag(p, "--out", required=True, help="output folder")
    flag(p, "--num-images", type=positive_int, required=True, help="pictures to draw (one caption each)")
    flag(p, "--split", choices=["train", "val", "test"], default="train",
         help="which part of the grammar: val and test hold colour-shape pairs that train never shows")
    flag(p, "--seed", type=int, default=0, help="seed of the scenes drawn: a split repeats")
    flag(p, "--size", type=positive_int, default=64, help="picture side in pixels")
    flag(p, "--two-object-share", type=float, default=0.5, help="share of pictures with two objects")
    flag(p, "--same-colour-pairs", type=float, default=0.0,
         help="train only: share of pairs drawn in one colour (two shapes), outside the grammar's two-colour rule; "
              "it keeps a model from telling the objects apart by colour alone")
    flag(p, "--swappable-pairs", action="store_true",
         help="train only: keep only pairs whose shapes could trade places without making a held-out pair, so "
              "that which colour never takes which shape cannot tell a pair's objects apart")
    flag(p, "--wording", choices=["grammar", "unseen"], default="grammar",
         help="val and test only: unseen says every scene in words no training caption uses (other colour, "
              "shape, place, size and relation words, other sentences, Russian), for a frozen LM's knowledge")


def run_make_shapes(args: argparse.Namespace) -> None:
    from omni_gpt2o.data.shapes import make_shapes

    out = make_shapes(args.out, args.num_images, split=args.split, seed=args.seed, size=args.size,
                      two_object_share=args.two_object_share, same_colour_pairs=args.same_colour_pairs,
                      swappable_pairs=args.swappable_pairs, wording=args.wording)
    print(f"wrote {args.num_images} {args.split} pictures to {out}")


def make_emoji_flags(p: Parser) -> None:
    flag(p, "--out", required=True, help="output folder")
    flag(p, "--split", choices=["train", "val", "test"], default="train",
         help="train: every trainable emoji and pairs that are not held out; val and test: held-out tones, "
              "wordings, frames and pairs beside trained emoji, each picture tagged with its category")
    flag(p, "--size", type=checked(int, minimum=16, maximum=1024), default=64, help="picture side in pixels")
    flag(p, "--seed", type=int, default=0, help="seed of the pictures drawn: a split repeats (what is held out "
                                                 "does not depend on it)")


def run_make_emoji(args: argparse.Namespace) -> None:
    from omni_gpt2o.data.emoji import make_emoji

    out = make_emoji(args.out, split=args.split, size=args.size, seed=args.seed)
    print(f"wrote the emoji {args.split} split to {out}")


def prepare_coco_flags(p: Parser) -> None:
    flag(p, "--annotations", required=True, help="captions_{train,val}2017.json, or a descriptions.txt")
    flag(p, "--images", required=True, help="the folder holding the pictures (referenced in place)")
    flag(p, "--out", required=True, help="split folder to write (captions.json)")
    flag(p, "--max-images", type=positive_int, help="index only the first this many pictures")
    flag(p, "--write-descriptions", help="also write the split as a seed-style descriptions.txt here")


def run_prepare_coco(args: argparse.Namespace) -> None:
    from omni_gpt2o.data.coco import prepare_coco, write_descriptions

    index, n_images, n_captions = prepare_coco(args.annotations, args.images, args.out, args.max_images)
    print(f"indexed {n_images} pictures with {n_captions} captions in {index}")
    if args.write_descriptions:
        n = write_descriptions(args.out, args.write_descriptions)
        print(f"wrote {n} lines to {args.write_descriptions}")


def precompute_flags(p: Parser) -> None:
    flag(p, "--data", required=True, help="split folder")
    flag(p, "--cache-dir", required=True, help="cache folder (give train the same --cache-dir)")
    model_source = p.add_mutually_exclusive_group()
    model_source.add_argument("--preset", default="tiny", help="the model preset whose ViT encodes the pictures")
    model_source.add_argument("--checkpoint", help="use this checkpoint's frozen backbones")
    flag(p, "--batch-size", type=positive_int, default=64, help="pictures encoded at once")
    flag(p, "--num-workers", type=non_negative_int, default=0, help="picture decoding processes (0: in this one)")
    add_device_flags(p)


def run_precompute(args: argparse.Namespace) -> None:
    from omni_gpt2o.checkpoint import load_checkpoint
    from omni_gpt2o.config import get_preset
    from omni_gpt2o.data.cache import precompute
    from omni_gpt2o.data.dataset import CaptionedImages
    from omni_gpt2o.model import build_model
    from omni_gpt2o.utils import autocast_dtype, resolve_device

    _check_dir(args.data, "--data")
    device = resolve_device(args.device)
    model = load_checkpoint(args.checkpoint, device)[0] if args.checkpoint else build_model(get_preset(args.preset))
    model = model.to(device)
    data = CaptionedImages(args.data, model.config.image_size, preload=False)
    cache, encoded, rate = precompute(model, data, args.cache_dir, args.batch_size, args.num_workers,
                                      autocast_dtype(device, args.precision))
    print(f"encoded {encoded} pictures ({rate:.0f}/s); {len(cache)}/{len(data)} cached in {cache.dir.parent}")
    if not len(cache):
        raise OmniError(f"no picture of {args.data} could be read: nothing was cached")


def prepare_drafts_flags(p: Parser) -> None:
    flag(p, "--data", required=True, help="split folder; drafts are stored in DIR/drafts/")
    flag(p, "--preset", default="tiny", help="the model preset the drafts are for (sets their picture size)")
    flag(p, "--seed", type=int, default=0, help="seed of the drafts: caption i gets seed + i")
    flag(p, "--batch-size", type=positive_int, default=8, help="captions drawn at once")
    flag(p, "--device", default="auto", help=DEVICE_HELP)
    add_sd_flags(p)


def run_prepare_drafts(args: argparse.Namespace) -> None:
    from omni_gpt2o.config import get_preset
    from omni_gpt2o.data.dataset import read_split
    from omni_gpt2o.sd_drafts import SDDraftSource, describe, prepare_drafts
    from omni_gpt2o.utils import resolve_device

    _check_dir(args.data, "--data")
    records = read_split(args.data)
    size = get_preset(args.preset).image_size
    source = SDDraftSource(sd_config(args), resolve_device(args.device))
    store, drawn, rate = prepare_drafts(args.data, records, source, size, seed=args.seed,
                                        batch_size=args.batch_size)
    print(f"drew {drawn} drafts ({rate:.2f} img/s); {describe(store)}")


def train_flags(p: Parser) -> None:
    add_flags(p, TrainConfig)  # every flag, its default, help and range come from TrainConfig


def run_train(args: argparse.Namespace) -> None:
    from omni_gpt2o.train import train

    cfg = from_flags(TrainConfig, args)
    _check_dir(cfg.data, "--data")
    if cfg.val_data:
        _check_dir(cfg.val_data, "--val-data")
    train(cfg)


def generate_flags(p: Parser) -> None:
    flag(p, "--checkpoint", required=True, help="checkpoint folder (a run's checkpoints/best or last)")
    prompts = p.add_mutually_exclusive_group(required=True)
    prompts.add_argument("--prompt", nargs="+", help="one or more prompts")
    prompts.add_argument("--prompts-file", "--prompts_file", help="one prompt per line, UTF-8")
    flag(p, "--out-dir", required=True, help="folder for the pictures and manifest.jsonl")
    flag(p, "--seed", type=int, default=0, help="prompt i is drawn with seed + i: the same pictures every time")
    add_sampler_flags(p)
    flag(p, "--batch-size", type=positive_int, default=16, help="pictures drawn at once")
    flag(p, "--draft", default="noise", help="noise (text alone), sd (a Stable Diffusion draft), or a picture")
    flag(p, "--draft-strength", type=float, default=1.0, help="how far from the draft to start (0-1]")
    flag(p, "--save-drafts", action="store_true", help="save each starting draft beside its picture")
    add_sd_flags(p)
    add_device_flags(p)


def run_generate(args: argparse.Namespace) -> None:
    from PIL import Image

    from omni_gpt2o.generate import generate_to_dir, read_prompts
    from omni_gpt2o.pipeline import OmniGPT2oPipeline

    prompts = read_prompts(args.prompts_file) if args.prompts_file else args.prompt
    _check_dir(args.checkpoint, "--checkpoint")
    draft = args.draft
    if draft not in ("noise", "sd"):
        try:
            draft = Image.open(args.draft).convert("RGB")
        except (OSError, ValueError) as err:
            raise OmniError(f"--draft {args.draft}: not noise, sd or a readable picture ({err})") from err
    if not 0 < args.draft_strength <= 1:
        raise OmniError("--draft-strength must be in (0, 1]")
    pipe = OmniGPT2oPipeline.from_pretrained(args.checkpoint, device=args.device, precision=args.precision,
                                             draft_config=sd_config(args))
    records = generate_to_dir(pipe, prompts, args.out_dir, seed=args.seed, steps=args.steps,
                              guidance=args.guidance, batch_size=args.batch_size, draft=draft,
                              draft_strength=args.draft_strength, save_drafts=args.save_drafts,
                              schedule_power=args.schedule_power)
    print(f"wrote {len(records)} pictures, manifest.jsonl and grid.png to {args.out_dir}")


def evaluate_flags(p: Parser) -> None:
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="generate from this checkpoint and judge the pictures")
    source.add_argument("--manifest", help="judge the pictures of a `generate` output folder instead")
    source.add_argument("--snapshots", help="score every snapshot of a run (RUN/checkpoints/snapshots) and plot "
                        "accuracy against training minutes")
    flag(p, "--data", help="Shapes split whose captions are the prompts (with --checkpoint)")
    flag(p, "--max-prompts", type=positive_int, help="at most this many prompts (one per picture)")
    add_sampler_flags(p)
    flag(p, "--seed", type=int, default=0, help="prompt i is drawn with seed + i")
    flag(p, "--batch-size", type=positive_int, default=32, help="pictures drawn at once")
    flag(p, "--out", help="write the scores and every judgement as JSON here")
    add_device_flags(p)


def run_evaluate(args: argparse.Namespace) -> None:
    from omni_gpt2o.evaluate import (
        EMOJI_GROUPS,
        evaluate_emoji,
        evaluate_manifest,
        evaluate_pipeline,
        format_emoji_scores,
        format_scores,
        is_emoji_split,
        learning_curve,
        plot_learning_curve,
        split_prompts,
        write_report,
    )
    from omni_gpt2o.pipeline import OmniGPT2oPipeline

    show = format_scores  # the table of a Shapes judgement; emoji's has other rows and columns
    if args.manifest:
        result = evaluate_manifest(args.manifest)
    elif args.snapshots:
        if not args.data:
            raise OmniError("--data is needed with --snapshots: the split whose captions to draw")
        _check_dir(args.snapshots, "--snapshots")
        _check_dir(args.data, "--data")
        points = learning_curve(args.snapshots, split_prompts(args.data, args.max_prompts), steps=args.steps,
                                guidance=args.guidance, seed=args.seed, device=args.device,
                                schedule_power=args.schedule_power)
        for p in points:
            print(f"{p['snapshot']}: {p['minutes']:.1f} min, step {p['step']}: one-object full "
                  f"{100 * p['scores']['one_object']['full']:.1f}%, two-object full "
                  f"{100 * p['scores']['two_object']['full']:.1f}%")
        out = Path(args.out) if args.out else Path(args.snapshots) / "learning_curve.json"
        write_report({"points": points}, out)
        plot_learning_curve(points, out.with_suffix(".png"))
        print(f"wrote {out} and {out.with_suffix('.png')}")
        return
    else:
        if not args.data:
            raise OmniError("--data is needed with --checkpoint: the split whose captions to draw")
        _check_dir(args.checkpoint, "--checkpoint")
        _check_dir(args.data, "--data")
        pipe = OmniGPT2oPipeline.from_pretrained(args.checkpoint, device=args.device, precision=args.precision)
        if is_emoji_split(args.data):  # judged by retrieval among every emoji's real render
            per_category = max(1, args.max_prompts // len(EMOJI_GROUPS[1:])) if args.max_prompts else None
            result = evaluate_emoji(pipe, args.data, per_category, steps=args.steps, guidance=args.guidance,
                                    seed=args.seed, batch_size=args.batch_size, schedule_power=args.schedule_power)
            show = format_emoji_scores
        else:
            result = evaluate_pipeline(pipe, split_prompts(args.data, args.max_prompts), steps=args.steps,
                                       guidance=args.guidance, seed=args.seed, batch_size=args.batch_size,
                                       schedule_power=args.schedule_power)
    print(show(result["scores"]))
    if args.out:
        write_report(result, args.out)
        print(f"wrote {args.out}")


def demo_flags(p: Parser) -> None:
    flag(p, "--out", default="runs/demo", help="folder for the data, the run, samples.png and report.json")
    flag(p, "--minutes", type=positive_float, default=15.0, help="training time budget")
    flag(p, "--train-images", type=positive_int, default=TRAIN_IMAGES, help="Shapes pictures to train on")
    flag(p, "--same-colour-pairs", type=float, default=SAME_COLOUR_PAIRS,
         help="share of the training pairs drawn in one colour (0: the grammar's two-colour pairs only)")
    flag(p, "--val-images", type=positive_int, default=400, help="validation captions, all scored at the end")
    flag(p, "--seed", type=int, default=0, help="seed of the data and the run")
    flag(p, "--preset", choices=["tiny", "tiny-hour", "smollm2", "smollm2-hour", "tiny-lite0", "smollm2-lite0"],
         default="tiny", help="tiny: the 15-minute recipe; tiny-hour: narrower, reads whole words, for an hour (200 "
                              "TFLOP); smollm2*: a pretrained LM; *-lite0: a pretrained image tower")
    flag(p, "--data", choices=["shapes", "emoji"], default="shapes",
         help="shapes: 18 words, judged on the pixels; emoji: OpenMoji's drawings with their real names, judged by "
              "retrieval (docs/emoji.md)")
    flag(p, "--curve-points", type=non_negative_int, default=3,
         help="snapshots along the run, each scored, for learning_curve.png (0: none)")
    flag(p, "--curve-prompts", type=positive_int, default=100,
         help="validation captions each snapshot is scored on (the final weights: all of them)")
    flag(p, "--precision", choices=["auto", "bf16", "fp32"], default="auto", help=PRECISION_HELP)
    flag(p, "--device", default="auto", help="auto: a CUDA GPU when there is one (batch 128), else the CPU (batch 16)")


def run_demo(args: argparse.Namespace) -> None:
    from omni_gpt2o.demo import run_demo

    run_demo(args.out, minutes=args.minutes, train_images=args.train_images, val_images=args.val_images,
             seed=args.seed, curve_points=args.curve_points, curve_prompts=args.curve_prompts,
             precision=args.precision, device=args.device, same_colour_pairs=args.same_colour_pairs,
             preset=args.preset, data=args.data)


def serve_flags(p: Parser) -> None:
    flag(p, "--checkpoint", required=True, help="checkpoint folder, loaded once")
    flag(p, "--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every network, anyone who can "
                                                "reach this machine)")
    flag(p, "--port", type=checked(int, minimum=1, maximum=65535), default=7860, help="port to listen on")
    flag(p, "--queue", type=non_negative_int, default=4,
         help="requests that may wait behind the one being drawn; more are answered busy")
    flag(p, "--max-steps", type=positive_int, default=50, help="the most sampling steps a request may ask for")
    add_sd_flags(p)
    add_device_flags(p)


def run_serve(args: argparse.Namespace) -> None:
    from omni_gpt2o.serve import ServeLimits, serve

    _check_dir(args.checkpoint, "--checkpoint")
    serve(args.checkpoint, host=args.host, port=args.port, device=args.device, precision=args.precision,
          limits=ServeLimits(queue=args.queue, max_steps=args.max_steps), draft_config=sd_config(args))


DATA_COMMANDS = ("make-shapes", "make-emoji", "prepare-coco")

# Each subcommand: its help line, its flags, and what it runs (which imports what it needs, when it runs).
COMMANDS = {
    "make-shapes": ("write a Shapes split (no download needed)",
        make_shapes_flags, run_make_shapes),
    "make-emoji": ("write an emoji split: OpenMoji's drawings with their CLDR names (no download needed)",
        make_emoji_flags, run_make_emoji),
    "prepare-coco": ("index COCO captions (or a seed descriptions.txt) as a split folder",
        prepare_coco_flags, run_prepare_coco),
    "precompute": ("fill a split's caches: preprocessed pictures and frozen ViT features",
        precompute_flags, run_precompute),
    "prepare-drafts": ("draw a Stable Diffusion draft of every caption of a split, once",
        prepare_drafts_flags, run_prepare_drafts),
    "train": ("train the glue on a split folder (many processes: accelerate launch)",
        train_flags, run_train),
    "generate": ("draw pictures from prompts",
        generate_flags, run_generate),
    "evaluate": ("score a model's pictures on Shapes captions, judged on pixels",
        evaluate_flags, run_evaluate),
    "demo": ("the main job: Shapes data, train the offline preset, samples and report",
        demo_flags, run_demo),
    "serve": ("a local web page (and a JSON endpoint) to try a checkpoint",
        serve_flags, run_serve),
}


def build_parser() -> Parser:
    parser = Parser(prog="omni-gpt2o", description="Text-to-image from a frozen GPT-2 and ViT; only the glue trains.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for name, (help_line, add_flags_of, _) in COMMANDS.items():
        add_flags_of(sub.add_parser(name, help=help_line))
    return parser


def run(args: argparse.Namespace) -> None:
    COMMANDS[args.command][2](args)


def _check_dir(path: str, name: str) -> None:
    if not Path(path).is_dir():
        raise OmniError(f"{name} {path}: no such folder")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.command not in DATA_COMMANDS:  # the data commands never load a model: no model library imported
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # our own bars say what is going on
    try:
        run(args)
    except (OmniError, ValueError, OSError) as err:  # OSError: a path that cannot be written or read
        sys.stderr.write(f"omni-gpt2o {args.command}: error: {err}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write(f"omni-gpt2o {args.command}: interrupted\n")
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
