"""Captioned pictures from a split folder in COCO captions layout (Shapes and COCO alike).

    DIR/captions.json  {"images": [{"id", "file_name", ...}], "annotations": [{"image_id", "caption"}]}
    DIR/images/...     (file_name is relative to DIR/images, or absolute)

Each epoch shows every picture once, with one of its captions picked at random (seeded by seed, epoch
and index, so runs repeat and workers agree). Any picture mode is converted to RGB; pictures that cannot
be read are left out of their batch and reported, never a crash.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from omni_gpt2o.fileio import OmniError


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


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode to 8-bit RGB: 16-bit and 32-bit grey are scaled (not clipped), transparency is laid
    on black (the Shapes background), CMYK/grey/palette are converted."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or arr.max() > 255 else 255.0
        image = Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


@dataclass
class Batch:
    images: torch.Tensor  # (B, 3, S, S) uint8
    captions: list[str]
    indices: list[int]  # rows of the split's records (for the feature cache)
    caption_indices: list[int]  # which of its picture's captions each caption is (for stored SD drafts)
    errors: list[str]  # "path: reason" for each picture skipped in this batch


class Sample(NamedTuple):
    picture: torch.Tensor | None  # (3, S, S) uint8, None when the file cannot be read
    caption: str
    index: int
    caption_index: int
    error: str | None


class CaptionedImages(Dataset):
    """Yields (uint8 picture of `image_size`, caption, index, error); the picture is None when the file
    cannot be read, and error says why."""

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
        self.memory: dict[int, tuple[torch.Tensor | None, str | None]] | None = {} if preload else None
        self.pixels = None  # an on-disk cache of preprocessed pictures (data.cache.pixel_cache), if given

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def caption_index(self, index: int) -> int:
        rng = random.Random((self.seed * 1_000_003 + self.epoch) * 10_000_019 + index)
        return rng.randrange(len(self.records[index].captions))

    def caption(self, index: int) -> str:
        return self.records[index].captions[self.caption_index(index)]

    def load(self, index: int) -> tuple[torch.Tensor | None, str | None]:
        """(uint8 picture resized and centre-cropped, None) or (None, why it could not be read)."""
        if self.memory is not None and index in self.memory:
            return self.memory[index]
        if self.pixels is not None and self.pixels.done[index]:
            return torch.from_numpy(np.array(self.pixels.rows[index])), None
        path = self.records[index].path
        try:
            with Image.open(path) as img:
                img.load()
                result = (resize_crop(to_rgb(img), self.image_size), None)
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as err:
            result = (None, f"{path}: {str(err).splitlines()[0] if str(err) else type(err).__name__}")
        if self.memory is not None:
            self.memory[index] = result
        return result

    def __getitem__(self, index: int) -> Sample:
        picture, error = self.load(index)
        j = self.caption_index(index)
        return Sample(picture, self.records[index].captions[j], index, j, error)


def resize_crop(image: Image.Image, size: int) -> torch.Tensor:
    """Shorter side to `size` (bicubic), centre crop, as a (3, size, size) uint8 tensor."""
    w, h = image.size
    if (w, h) != (size, size):
        scale = size / min(w, h)
        image = image.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)
        w, h = image.size
        left, top = (w - size) // 2, (h - size) // 2
        image = image.crop((left, top, left + size, top + size))
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 pictures -> floats in [-1, 1], the model's range (float32, or the default dtype where a run made it
    float64)."""
    return images.to(torch.get_default_dtype()) / 127.5 - 1


def collate(samples: list[Sample]) -> Batch:
    """Stack the readable pictures; the others are left out and reported in `errors`."""
    good = [s for s in samples if s.picture is not None]
    errors = [s.error for s in samples if s.picture is None]
    if not good:
        return Batch(torch.empty(0, dtype=torch.uint8), [], [], [], errors)
    return Batch(torch.stack([s.picture for s in good]), [s.caption for s in good], [s.index for s in good],
                 [s.caption_index for s in good], errors)
