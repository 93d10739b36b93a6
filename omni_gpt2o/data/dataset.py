"""Captioned pictures from a split folder in COCO captions layout (Shapes and COCO alike).

    DIR/captions.json  {"images": [{"id", "file_name", ...}], "annotations": [{"image_id", "caption"}]}
    DIR/images/...     (file_name is relative to DIR/images, or absolute)

Each epoch shows every picture once, with one of its captions picked at random (seeded by seed, epoch
and index, so runs repeat and workers agree). Pictures that cannot be read are skipped and counted.
"""

from __future__ import annotations

import json
import random
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from omni_gpt2o.utils import OmniError, from_pil


@dataclass
class Record:
    image_id: int
    path: Path
    captions: list[str]


def read_split(root: str | Path, max_samples: int | None = None) -> list[Record]:
    """Index a split folder: one record per picture with all its non-empty captions."""
    root = Path(root)
    index = root / "captions.json"
    if not index.is_file():
        raise OmniError(f"{root} has no captions.json (make one with `omni-gpt2o make-shapes` or `prepare-coco`)")
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
        images, annotations = data["images"], data["annotations"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise OmniError(f"{index} is not a COCO captions file: {err}") from err
    captions: dict[int, list[str]] = defaultdict(list)
    for ann in annotations:
        text = " ".join(str(ann.get("caption", "")).split())
        if text:
            captions[ann["image_id"]].append(text)
    records = [
        Record(img["id"], root / "images" / img["file_name"], captions[img["id"]])
        for img in images if captions.get(img["id"])
    ]
    if not records:
        raise OmniError(f"{index} has no pictures with captions")
    return records[:max_samples] if max_samples else records


class CaptionedImages(Dataset):
    """Yields (picture in [-1, 1] of `image_size`, caption); None for a picture that cannot be read."""

    def __init__(self, root: str | Path, image_size: int, max_samples: int | None = None, seed: int = 0,
                 preload: bool | None = None):
        self.records = read_split(root, max_samples)
        self.image_size = image_size
        self.seed = seed
        self.epoch = 0
        # Small splits (Shapes) live in memory as uint8: decoding PNGs every step would cost more than
        # the model on a CPU.
        if preload is None:
            preload = len(self.records) * 3 * image_size**2 <= 2 * 1024**3
        self.cache: dict[int, torch.Tensor | None] | None = {} if preload else None

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def caption(self, index: int) -> str:
        rng = random.Random((self.seed * 1_000_003 + self.epoch) * 10_000_019 + index)
        return rng.choice(self.records[index].captions)

    def load(self, index: int) -> torch.Tensor | None:
        if self.cache is not None and index in self.cache:
            cached = self.cache[index]
            return None if cached is None else cached.float() / 127.5 - 1
        path = self.records[index].path
        try:
            with Image.open(path) as img:
                img.load()
                picture = from_pil(img, self.image_size)
        except (OSError, UnidentifiedImageError, ValueError) as err:
            warnings.warn(f"skipping unreadable picture {path}: {err}", stacklevel=2)
            picture = None
        if self.cache is not None:
            self.cache[index] = None if picture is None else ((picture + 1) * 127.5).round().to(torch.uint8)
        return picture

    def __getitem__(self, index: int) -> tuple[torch.Tensor | None, str]:
        return self.load(index), self.caption(index)


def collate(batch: list[tuple[torch.Tensor | None, str]]) -> tuple[torch.Tensor, list[str], int]:
    """Stack readable pictures; also return how many were skipped."""
    good = [(img, cap) for img, cap in batch if img is not None]
    skipped = len(batch) - len(good)
    if not good:
        return torch.empty(0), [], skipped
    images, captions = zip(*good)
    return torch.stack(images), list(captions), skipped
