"""Score a model on Shapes: generate from each caption, judge the pixels, report accuracies.

Captions come from a Shapes split (one per picture, cycling through each picture's captions so every
prefix and word order is used), or pictures come ready-made from a `generate` folder's manifest.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from tqdm.auto import tqdm

from omni_gpt2o.checkpoint import read_config
from omni_gpt2o.config import DEFAULT_GUIDANCE, SCHEDULE_POWER
from omni_gpt2o.data.dataset import read_split
from omni_gpt2o.data.wordings import read_caption
from omni_gpt2o.fileio import OmniError, atomic_path, json_text
from omni_gpt2o.judge import HELD_OUT_PAIRS, find_objects, judge, summarise
from omni_gpt2o.pipeline import OmniGPT2oPipeline

GROUPS = ("all", "one_object", "two_object", "seen", "held_out")
METRICS = ("colour", "shape", "size", "position", "no_extra", "full", "clean")


def split_prompts(split_dir: str | Path, max_prompts: int | None = None) -> list[str]:
    records = read_split(split_dir)
    prompts = [r.captions[i % len(r.captions)] for i, r in enumerate(records)]
    return prompts[:max_prompts] if max_prompts else prompts


def draw_prompts(pipe: OmniGPT2oPipeline, prompts: list[str], seed: int = 0, batch_size: int = 32,
                 progress: bool = True, desc: str = "draw", **sampler: Any) -> Iterator[tuple[str, Image.Image]]:
    """(prompt, picture) for each prompt, in batches; picture i from its own generator seeded `seed + i`, so it
    does not depend on the batch size. `sampler`: the pipeline's keyword arguments."""
    for start in tqdm(range(0, len(prompts), batch_size), desc=desc, unit="batch", disable=not progress):
        batch = prompts[start: start + batch_size]
        gens = [torch.Generator().manual_seed(seed + start + i) for i in range(len(batch))]
        yield from zip(batch, pipe(batch, generator=gens, **sampler).images)


def evaluate_pipeline(pipe: OmniGPT2oPipeline, prompts: list[str], steps: int = 8, guidance: float = DEFAULT_GUIDANCE,
                      seed: int = 0, batch_size: int = 32, progress: bool = True,
                      schedule_power: float = SCHEDULE_POWER, eta: float = 0.0) -> dict:
    """Generate one picture per prompt (seed + index) and judge it."""
    judgements, records = [], []
    for prompt, image in draw_prompts(pipe, prompts, seed, batch_size, progress, "evaluate", num_inference_steps=steps,
                                      guidance_scale=guidance, schedule_power=schedule_power, eta=eta):
        j = judge(image, prompt)
        judgements.append(j)
        records.append({"prompt": prompt, **vars(j)})
    return {"scores": summarise(judgements), "steps": steps, "guidance": guidance, "schedule_power": schedule_power,
            "eta": eta, "seed": seed, "prompts": len(prompts), "judgements": records}


PAIR_OUTCOMES = ("right", "other's shape", "another shape", "missing")


def pair_outcomes(pipe: OmniGPT2oPipeline, prompts: list[str], steps: int = 8, guidance: float = DEFAULT_GUIDANCE,
                  batch_size: int = 32, progress: bool = True) -> Counter:
    """Where pairs fail: for each object of each two-object prompt, found by its colour in the drawn picture, one
    of PAIR_OUTCOMES (the named shape, the other object's shape, another shape, no blob of that colour). Counts
    by (held-out or seen colour-shape pair, first- or second-named object, outcome)."""
    pairs = [p for p in prompts if len(read_caption(p).objects) == 2]
    counts: Counter = Counter()
    for prompt, image in draw_prompts(pipe, pairs, 0, batch_size, progress, "pairs", num_inference_steps=steps,
                                      guidance_scale=guidance):
        named = read_caption(prompt).objects
        blobs = {}
        for blob in find_objects(image):  # largest first: keep each colour's main blob
            blobs.setdefault(blob.colour, blob)
        for k, (_, colour, shape) in enumerate(named):
            other_shape = named[1 - k][2]
            blob = blobs.get(colour)
            if blob is None:
                outcome = "missing"
            elif blob.shape == shape:
                outcome = "right"
            else:
                outcome = "other's shape" if blob.shape == other_shape else "another shape"
            kind = "held-out" if (colour, shape) in HELD_OUT_PAIRS else "seen"
            counts[kind, ("first", "second")[k], outcome] += 1
    return counts


def evaluate_manifest(folder: str | Path) -> dict:
    """Judge pictures a `generate` run already wrote (its manifest names the prompt of each file)."""
    folder = Path(folder)
    manifest = folder / "manifest.jsonl"
    if not manifest.is_file():
        raise OmniError(f"{folder} has no manifest.jsonl (make one with `omni-gpt2o generate`)")
    judgements, records = [], []
    for line in manifest.read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        with Image.open(folder / entry["file"]) as image:
            j = judge(image.convert("RGB"), entry["prompt"])
        judgements.append(j)
        records.append({"prompt": entry["prompt"], "file": entry["file"], **vars(j)})
    return {"scores": summarise(judgements), "prompts": len(records), "judgements": records}


def learning_curve(snapshots: str | Path, prompts: list[str], steps: int = 8, guidance: float = DEFAULT_GUIDANCE,
                   seed: int = 0, device: str = "auto", progress: bool = True, precision: str = "auto",
                   schedule_power: float = SCHEDULE_POWER) -> list[dict]:
    """Score every snapshot a run kept (`train --snapshot-minutes`): accuracy against training time."""
    folders = sorted(f for f in Path(snapshots).glob("*") if (f / "config.json").is_file())  # names sort by time
    if not folders:
        raise OmniError(f"{snapshots} holds no snapshots (train with --snapshot-minutes)")
    points = []
    for folder in tqdm(folders, desc="snapshots", unit="ckpt", disable=not progress):
        trained = read_config(folder).get("trained", {})
        pipe = OmniGPT2oPipeline.from_pretrained(folder, device=device, precision=precision)
        scores = evaluate_pipeline(pipe, prompts, steps, guidance, seed, progress=False,
                                   schedule_power=schedule_power)["scores"]
        points.append({"snapshot": folder.name, "minutes": round(trained.get("elapsed", 0.0) / 60, 2),
                       "step": trained.get("step"), "scores": scores})
    return points


def plot_learning_curve(points: list[dict], path: str | Path) -> None:
    """Full-prompt accuracy (one object, two objects, held-out pairs) and shape accuracy against minutes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [p["minutes"] for p in points]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    for group, metric, label in (("one_object", "full", "one object: full prompt"),
                                 ("two_object", "full", "two objects: full prompt"),
                                 ("held_out", "full", "held-out pairs: full prompt"),
                                 ("all", "shape", "shape (all prompts)")):
        ax.plot(minutes, [100 * (p["scores"].get(group, {}).get(metric) or 0) for p in points], "o-", label=label)
    ax.set_xlabel("training minutes")
    ax.set_ylabel("accuracy on validation captions (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def is_emoji_split(split_dir: str | Path) -> bool:
    """An emoji split (make-emoji) rather than Shapes: its ground truth names emoji."""
    path = Path(split_dir) / "captions.json"
    if not path.is_file():
        return False
    try:  # a few MB at most; its objects come after every picture and caption, so the whole index is read
        objects = json.loads(path.read_text(encoding="utf-8")).get("objects") or []
    except (ValueError, AttributeError):
        return False  # not an index of ours: left to the Shapes path, which says what is wrong with it
    return bool(objects) and isinstance(objects[0], dict) and "emoji" in objects[0]


def emoji_records(split_dir: str | Path, max_per_category: int | None = None) -> list[dict]:
    """An emoji split's pictures: prompt (the first caption), category, relation, objects, real picture."""
    split = Path(split_dir)
    index = json.loads((split / "captions.json").read_text(encoding="utf-8"))
    captions: dict[int, str] = {}
    for a in index["annotations"]:
        captions.setdefault(a["image_id"], a["caption"])
    objects: dict[int, list] = {}
    for o in index["objects"]:
        objects.setdefault(o["image_id"], []).append(o)
    taken: Counter = Counter()
    records = []
    for img in index["images"]:
        if max_per_category and taken[img["category"]] >= max_per_category:
            continue
        taken[img["category"]] += 1
        records.append({"prompt": captions[img["id"]], "category": img["category"], "relation": img.get("relation"),
                        "objects": objects[img["id"]], "real": Image.open(split / "images" / img["file_name"])})
    return records


def evaluate_emoji(pipe: OmniGPT2oPipeline, split_dir: str | Path, max_per_category: int | None = None,
                   steps: int = 8, guidance: float = DEFAULT_GUIDANCE, seed: int = 0, batch_size: int = 32,
                   progress: bool = True, schedule_power: float = SCHEDULE_POWER, judge: Any = None) -> dict:
    """Draw each picture's caption of an emoji split and judge the pictures by retrieval (emoji_judge.py;
    `judge`: an EmojiJudge made already, e.g. over fewer emoji)."""
    from omni_gpt2o.emoji_judge import EmojiJudge, judge_split

    records = emoji_records(split_dir, max_per_category)
    if not records:
        raise OmniError(f"{split_dir} holds no pictures to evaluate")
    size = records[0]["real"].width
    drawn = [image.resize((size, size), Image.Resampling.BICUBIC) if image.width != size else image
             for _, image in draw_prompts(pipe, [r["prompt"] for r in records], seed, batch_size, progress,
                                          "evaluate", num_inference_steps=steps, guidance_scale=guidance,
                                          schedule_power=schedule_power)]
    judge = judge or EmojiJudge(size, progress=progress, cache_dir=split_dir)
    return {"scores": judge_split(judge, drawn, records), "steps": steps, "guidance": guidance, "seed": seed,
            "schedule_power": schedule_power, "prompts": len(records)}


EMOJI_GROUPS = ("all", "trained", "new_frames", "held_out_tones", "scenes", "aliases", "russian", "languages")
EMOJI_METRICS = ("lite0_top1", "lite0_top5", "pixels_top1", "pixels_top5", "right_base", "right_tone")


def format_emoji_scores(scores: dict) -> str:
    """Categories as rows, retrieval figures as columns (percentages); Lite0-FID and KID below."""
    head = f"{'category':<16}{'n':>6}" + "".join(f"{m:>13}" for m in EMOJI_METRICS)
    lines = [head, "-" * len(head)]
    for group in EMOJI_GROUPS:
        g = scores.get(group)
        if g and g.get("n"):
            cells = "".join(f"{'-' if g.get(m) is None else f'{100 * g[m]:.1f}':>13}" for m in EMOJI_METRICS)
            lines.append(f"{group:<16}{g['n']:>6}{cells}")
    if "lite0_fid" in scores.get("all", {}):
        lines.append(f"Lite0-FID {scores['all']['lite0_fid']:.3f}, Lite0-KID {scores['all']['lite0_kid']:.4f} "
                     "(EfficientNet-Lite0's pooled features, not Inception's)")
    return "\n".join(lines)


def format_scores(scores: dict) -> str:
    """A table people can read: groups as rows, metrics as columns, percentages."""
    head = f"{'group':<12}{'n':>6}" + "".join(f"{m:>10}" for m in METRICS)
    lines = [head, "-" * len(head)]
    for group in GROUPS:
        g = scores.get(group)
        if not g or not g.get("n"):
            continue
        cells = "".join(f"{'-' if g.get(m) is None else f'{100 * g[m]:.1f}':>10}" for m in METRICS)
        lines.append(f"{group:<12}{g['n']:>6}{cells}")
    return "\n".join(lines)


def write_report(result: dict, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json_text(result, indent=2))
