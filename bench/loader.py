"""Does the loader keep a training step fed? Data wait vs step time (a benchmark, not a test).

    .venv/bin/python bench/loader.py --workers 2 --batch-size 64

Makes a COCO-layout split of 640 x 480 JPEGs (decoded, resized and centre-cropped on every read: no
in-memory copy), then runs real `tiny` training steps and measures how long each step waits for its batch.
Also reports the frozen-feature cache's effect on step time.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from omni_gpt2o.config import get_preset
from omni_gpt2o.data.cache import feature_cache
from omni_gpt2o.data.dataset import CaptionedImages, collate, to_unit_range
from omni_gpt2o.model import build_model
from omni_gpt2o.train import Learner, StepBatch, TrainConfig, frozen_targets, train_step
from omni_gpt2o.utils import autocast_dtype


def make_split(root: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    base = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    for i in range(n):  # smooth pictures, so JPEG sizes are photo-like (~40-80 kB)
        arr = np.roll(base, i, axis=1)
        Image.fromarray(arr).resize((640, 480), Image.BICUBIC).save(root / "images" / f"{i:012d}.jpg", quality=90)
    data = {"images": [{"id": i, "file_name": f"{i:012d}.jpg"} for i in range(n)],
            "annotations": [{"id": i * 5 + k, "image_id": i, "caption": f"a photo number {i} seen from side {k}"}
                            for i in range(n) for k in range(5)]}
    (root / "captions.json").write_text(json.dumps(data))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=12)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = build_model(get_preset("tiny"))
    amp = autocast_dtype(torch.device("cpu"), "auto")
    cfg = TrainConfig(data="", out="", rollout=0.0)  # a plain step: the figure the README quotes
    learner = Learner(model, cfg, amp)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "split"
        make_split(root, args.batch_size * (args.steps + 2))
        data = CaptionedImages(root, model.config.image_size, preload=False)
        cache = feature_cache(Path(tmp) / "cache", model, data.records, data.image_size)
        for use_cache in (False, True):
            loader = DataLoader(data, batch_size=args.batch_size, collate_fn=collate, num_workers=args.workers,
                                persistent_workers=False, prefetch_factor=2 if args.workers else None)
            waits, steps = [], []
            it = iter(loader)
            for i in range(args.steps + 2):
                t0 = time.perf_counter()
                batch = next(it)
                t1 = time.perf_counter()
                clean = to_unit_range(batch.images)
                target = cache.get(batch.indices) if use_cache else None
                if target is None:
                    target = frozen_targets(model, clean, amp)
                    cache.put(batch.indices, target)
                train_step(learner, StepBatch(clean, batch.captions, target=target), cfg, i)
                t2 = time.perf_counter()
                if i >= 2:  # the first batches include worker start-up
                    waits.append(t1 - t0)
                    steps.append(t2 - t1)
            wait, step = np.mean(waits), np.mean(steps)
            label = "with the feature cache" if use_cache else "computing ViT targets "
            print(f"{label}: step {step * 1000:.0f} ms, data wait {wait * 1000:.1f} ms "
                  f"({100 * wait / (wait + step):.1f}% of the step); batch {args.batch_size}, {args.workers} workers")


if __name__ == "__main__":
    main()
