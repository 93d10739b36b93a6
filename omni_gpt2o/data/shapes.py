"""Shapes: the embedded caption data set (its contract: docs/shapes.md).

Pictures of one or two flat coloured shapes on black, each with captions that state everything the
picture must show. Because the caption language is a small fixed grammar, a generated picture can be
scored exactly from its caption alone (see :func:`parse_caption`).

All geometry is in fractions of the picture side S (x to the right, y down); pixels are filled when
their centre ``((i + 0.5) / S, (j + 0.5) / S)`` lies inside a shape, so no anti-aliasing is involved
and every colour in a picture is exactly one of :data:`COLOURS` or black.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

__all__ = [
    "COLOURS",
    "SHAPES",
    "SIZE_RANGES",
    "POSITIONS",
    "RELATIONS",
    "REVERSED_RELATION",
    "HELD_OUT_PAIRS",
    "PREFIXES",
    "SPLITS",
    "ShapeObject",
    "Scene",
    "CaptionMeaning",
    "sample_scene",
    "render_scene",
    "captions_for_scene",
    "parse_caption",
    "make_shapes",
    "shapes_split",
]

# --- The spec's tables -------------------------------------------------------------------------------

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0),
    "green": (0, 200, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
    "magenta": (255, 0, 255),
    "cyan": (0, 255, 255),
}
SHAPES: tuple[str, ...] = ("square", "circle", "triangle")
SIZE_RANGES: dict[str, tuple[float, float]] = {"small": (0.20, 0.26), "large": (0.32, 0.40)}

# Single object: phrase -> ((x lo, x hi), (y lo, y hi)) for the centre of its bounding box.
POSITIONS: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "on the left": ((0.22, 0.32), (0.40, 0.60)),
    "on the right": ((0.68, 0.78), (0.40, 0.60)),
    "at the top": ((0.40, 0.60), (0.22, 0.32)),
    "at the bottom": ((0.40, 0.60), (0.68, 0.78)),
    "in the center": ((0.45, 0.55), (0.45, 0.55)),
}
# Two objects, "A <relation> B": phrase -> ((dx lo, dx hi), (dy lo, dy hi)) of A's centre minus B's.
RELATIONS: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "to the left of": ((-0.60, -0.40), (-0.08, 0.08)),
    "to the right of": ((0.40, 0.60), (-0.08, 0.08)),
    "above": ((-0.08, 0.08), (-0.60, -0.40)),
    "below": ((-0.08, 0.08), (0.40, 0.60)),
}
# "A rel B" says the same as "B REVERSED_RELATION[rel] A".
REVERSED_RELATION: dict[str, str] = {
    "to the left of": "to the right of",
    "to the right of": "to the left of",
    "above": "below",
    "below": "above",
}
# Range of the midpoint of the two centres, on both axes.
PAIR_MIDPOINT_RANGE: tuple[float, float] = (0.42, 0.58)
# Two-object pictures use small objects only.
PAIR_SIZE = "small"

HELD_OUT_PAIRS: frozenset[tuple[str, str]] = frozenset(
    {("magenta", "triangle"), ("cyan", "circle"), ("yellow", "square")}
)
# frozenset iteration order follows the (salted) string hash; sample from a sorted tuple instead so
# that the same seed gives the same data in every process.
_HELD_OUT_SORTED: tuple[tuple[str, str], ...] = tuple(sorted(HELD_OUT_PAIRS))

PREFIXES: tuple[str, ...] = ("", "a picture of ", "there is ")
SPLITS: tuple[str, ...] = ("train", "val", "test")

# Rejection sampling gives up after this many geometry draws. With the spec's ranges nearly every draw
# fits (about 0.5% are rejected at S = 32, fewer at larger S), so hitting the limit means a bug.
_MAX_ATTEMPTS = 10_000
_MIN_SIZE = 32
_PROGRESS_MIN_IMAGES = 500


# --- Scenes ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShapeObject:
    """One shape; ``cx, cy`` (centre of its bounding box) and ``s`` (box side) are fractions of S."""

    colour: str
    shape: str
    size: str
    cx: float
    cy: float
    s: float


@dataclass(frozen=True)
class Scene:
    """One or two objects; ``position`` is set for one object, ``relation`` (objects[0] rel objects[1])
    for two."""

    objects: tuple[ShapeObject, ...]
    position: str | None
    relation: str | None


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}.")


def _check_share(share: float, name: str = "two_object_share") -> None:
    if isinstance(share, bool) or not isinstance(share, int | float) or not 0 <= share <= 1:
        raise ValueError(f"{name} must be a number in [0, 1], got {share!r}.")


def _check_same_colour(share: float, split: str) -> None:
    _check_share(share, "same_colour_pairs")
    if share and split != "train":
        raise ValueError(f"same_colour_pairs is for training splits only: {split} keeps the spec's two colours.")


def _check_swappable(swappable: bool, split: str) -> None:
    if not isinstance(swappable, bool):
        raise ValueError(f"swappable_pairs must be True or False, got {swappable!r}.")
    if swappable and split != "train":
        raise ValueError(f"swappable_pairs is for training splits only: {split} keeps the spec's pairs.")


def _check_size(size: int) -> None:
    if isinstance(size, bool) or not isinstance(size, int) or size < _MIN_SIZE:
        raise ValueError(f"size must be an integer of at least {_MIN_SIZE} pixels, got {size!r}.")


def _swappable(first: tuple[str, str], second: tuple[str, str]) -> bool:
    """True when the two objects' shapes could trade places without making a held-out pair."""
    return (first[0], second[1]) not in HELD_OUT_PAIRS and (second[0], first[1]) not in HELD_OUT_PAIRS


def _sample_identities(rng: random.Random, n: int, split: str, same_colour: float = 0.0,
                       swappable: bool = False) -> list[tuple[str, str]]:
    """Colour-shape pairs for n objects: distinct colours (in train, the same colour and another shape with
    probability ``same_colour``); train avoids held-out pairs, and with ``swappable`` keeps only pairs whose
    shapes could trade places."""
    colours = list(COLOURS)
    if split == "train":
        allowed = [(c, s) for c in colours for s in SHAPES if (c, s) not in HELD_OUT_PAIRS]
        first = rng.choice(allowed)
        if n == 1:
            return [first]
        if same_colour and rng.random() < same_colour:
            return [first, rng.choice([p for p in allowed if p[0] == first[0] and p != first])]
        others = [p for p in allowed if p[0] != first[0]]
        while True:  # rejection keeps the draws of the plain split when swappable is off
            second = rng.choice(others)
            if not swappable or _swappable(first, second):
                return [first, second]

    # val / test: any pair, but half of the scenes are forced to show a held-out pair so that the
    # composition score has enough samples (held-out pairs are only 3 of 18 otherwise).
    anything = [(c, s) for c in colours for s in SHAPES]
    if rng.random() < 0.5:
        forced = rng.choice(_HELD_OUT_SORTED)
        if n == 1:
            return [forced]
        other = rng.choice([p for p in anything if p[0] != forced[0]])
        return [forced, other] if rng.random() < 0.5 else [other, forced]
    first = rng.choice(anything)
    if n == 1:
        return [first]
    second = rng.choice([p for p in anything if p[0] != first[0]])
    return [first, second]


def _fits(objects: tuple[ShapeObject, ...], size: int) -> bool:
    """True when every shape leaves a black pixel to the border and to the other shapes."""
    masks = [_object_mask(o, size) for o in objects]
    for m in masks:
        if not m.any():  # cannot happen with the spec's sizes, but an invisible shape is no picture
            return False
        if m[0, :].any() or m[-1, :].any() or m[:, 0].any() or m[:, -1].any():
            return False
    if len(masks) == 2:
        # Grow one mask by a pixel in all 8 directions: the two may not even touch diagonally.
        if (_dilate(masks[0]) & masks[1]).any():
            return False
    return True


def sample_scene(rng: random.Random, split: str = "train", size: int = 64, two_object_share: float = 0.5,
                 same_colour_pairs: float = 0.0, swappable_pairs: bool = False) -> Scene:
    """Draw one scene: one or two objects (two with probability ``two_object_share``, 0.5 by the spec) with
    all numbers uniform in the spec's ranges.

    Geometry is rejection-sampled on the pixel footprint at ``size`` so that shapes neither touch the
    border nor each other (at least one black pixel in between). Two-object scenes use two small
    objects of different colours, their midpoint within 0.42-0.58 on both axes. ``same_colour_pairs``
    (train only, 0 by the spec) draws that share of the pairs in one colour with two different shapes:
    with them a model cannot tell the two objects apart by colour alone, and must read which shape
    the caption puts where. ``swappable_pairs`` (train only, off by the spec) keeps only two-colour pairs
    whose shapes could trade places without making a held-out pair: otherwise ~28% of the pairs can be
    told apart by which colour never takes which shape, a shortcut that draws held-out pairs with their
    shapes swapped.

    ``split="train"`` never uses a held-out colour-shape pair. ``"val"`` / ``"test"`` may use any
    pair, and with probability 0.5 one object is forced to be a held-out pair (chosen uniformly), so
    that the held-out score has enough samples.
    """
    _check_split(split)
    _check_size(size)
    _check_share(two_object_share)
    n = 1 if rng.random() < 1 - two_object_share else 2  # 0.5: the draws of the spec's splits
    _check_same_colour(same_colour_pairs, split)
    _check_swappable(swappable_pairs, split)
    identities = _sample_identities(rng, n, split, same_colour_pairs, swappable_pairs)

    if n == 1:
        ((colour, shape),) = identities
        size_word = rng.choice(tuple(SIZE_RANGES))
        position = rng.choice(tuple(POSITIONS))
        (x_lo, x_hi), (y_lo, y_hi) = POSITIONS[position]
        # Keep the phrase and size word fixed and redraw only the numbers, so that rejection does
        # not skew how often each phrase appears.
        for _ in range(_MAX_ATTEMPTS):
            obj = ShapeObject(
                colour=colour,
                shape=shape,
                size=size_word,
                cx=rng.uniform(x_lo, x_hi),
                cy=rng.uniform(y_lo, y_hi),
                s=rng.uniform(*SIZE_RANGES[size_word]),
            )
            if _fits((obj,), size):
                return Scene(objects=(obj,), position=position, relation=None)
    else:
        relation = rng.choice(tuple(RELATIONS))
        (dx_lo, dx_hi), (dy_lo, dy_hi) = RELATIONS[relation]
        for _ in range(_MAX_ATTEMPTS):
            dx, dy = rng.uniform(dx_lo, dx_hi), rng.uniform(dy_lo, dy_hi)
            mx, my = rng.uniform(*PAIR_MIDPOINT_RANGE), rng.uniform(*PAIR_MIDPOINT_RANGE)
            sides = (rng.uniform(*SIZE_RANGES[PAIR_SIZE]), rng.uniform(*SIZE_RANGES[PAIR_SIZE]))
            # A = midpoint + d/2 and B = midpoint - d/2, so A - B = d and (A + B)/2 = midpoint.
            centres = ((mx + dx / 2, my + dy / 2), (mx - dx / 2, my - dy / 2))
            objects = tuple(
                ShapeObject(colour=c, shape=sh, size=PAIR_SIZE, cx=x, cy=y, s=side)
                for (c, sh), (x, y), side in zip(identities, centres, sides, strict=True)
            )
            if _fits(objects, size):
                return Scene(objects=objects, position=None, relation=relation)
    raise RuntimeError(f"could not place a Shapes scene on a {size}x{size} picture in {_MAX_ATTEMPTS} tries.")


# --- Rendering ---------------------------------------------------------------------------------------


@lru_cache(maxsize=8)
def _pixel_centres(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel centres as fractions of S, shape (size, size): x varies along columns, y along rows."""
    centres = (np.arange(size, dtype=np.float64) + 0.5) / size
    px, py = np.meshgrid(centres, centres, indexing="xy")
    px.setflags(write=False)  # cached and shared: make accidental mutation loud
    py.setflags(write=False)
    return px, py


def _object_mask(obj: ShapeObject, size: int) -> np.ndarray:
    """Boolean (size, size) mask of the pixels whose centre lies inside the shape."""
    px, py = _pixel_centres(size)
    half = obj.s / 2
    left, right = obj.cx - half, obj.cx + half
    top, bottom = obj.cy - half, obj.cy + half
    if obj.shape == "square":
        # Half-open box so the pixel count tracks the area without a bias towards larger.
        return (px >= left) & (px < right) & (py >= top) & (py < bottom)
    if obj.shape == "circle":
        return (px - obj.cx) ** 2 + (py - obj.cy) ** 2 <= half * half
    if obj.shape == "triangle":
        # Apex at (cx, top), base of width s along y = bottom: the half-width grows from 0 at the apex
        # to s/2 at the base, i.e. (y - top) / 2 since the height equals s.
        return (py >= top) & (py < bottom) & (np.abs(px - obj.cx) <= (py - top) / 2)
    raise ValueError(f"unknown shape {obj.shape!r}; expected one of {', '.join(SHAPES)}.")


def _dilate(mask: np.ndarray) -> np.ndarray:
    """Grow a mask by one pixel in all 8 directions."""
    padded = np.pad(mask, 1)
    h, w = mask.shape
    out = np.zeros_like(mask)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            out |= padded[dy : dy + h, dx : dx + w]
    return out


def render_scene(scene: Scene, size: int = 64) -> Image.Image:
    """Draw a scene as an RGB picture of ``size`` x ``size``: black background, flat exact colours.

    Any size renders (the geometry is in fractions of S); the no-touching guarantee holds at the
    size the scene was sampled for.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}.")
    canvas = np.zeros((size, size, 3), dtype=np.uint8)
    for obj in scene.objects:
        if obj.colour not in COLOURS:
            raise ValueError(f"unknown colour {obj.colour!r}; expected one of {', '.join(COLOURS)}.")
        canvas[_object_mask(obj, size)] = COLOURS[obj.colour]
    return Image.fromarray(canvas, mode="RGB")


def _bbox_pixels(obj: ShapeObject, size: int) -> list[float]:
    """COCO-style [x, y, w, h] of the shape's geometric bounding box, in pixels."""
    x = (obj.cx - obj.s / 2) * size
    y = (obj.cy - obj.s / 2) * size
    w = obj.s * size
    return [round(x, 3), round(y, 3), round(w, 3), round(w, 3)]


# --- Captions ----------------------------------------------------------------------------------------


def _article(word: str) -> str:
    # Spelling stands in for sound; no word in this vocabulary is an exception ("an hour", "a unit").
    return "an" if word[:1] in "aeiou" else "a"


def _noun_phrase(colour: str, shape: str, size: str | None = None) -> str:
    words = ([size] if size else []) + [colour, shape]
    return f"{_article(words[0])} {' '.join(words)}"


def captions_for_scene(scene: Scene, rng: random.Random, k: int = 5) -> list[str]:
    """Up to ``k`` distinct captions, in random order.

    One object: every prefix with and without the size word. Two objects: every prefix with
    "A rel B" and with the reversed "B rel' A" (left <-> right, above <-> below); no size word.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k!r}.")
    candidates: list[str] = []
    if len(scene.objects) == 1:
        if scene.position not in POSITIONS:
            raise ValueError(f"a one-object scene needs a position phrase, got {scene.position!r}.")
        (obj,) = scene.objects
        for prefix in PREFIXES:
            for size_word in (None, obj.size):
                candidates.append(
                    f"{prefix}{_noun_phrase(obj.colour, obj.shape, size_word)} {scene.position}"
                )
    elif len(scene.objects) == 2:
        if scene.relation not in RELATIONS:
            raise ValueError(f"a two-object scene needs a relation phrase, got {scene.relation!r}.")
        a, b = scene.objects
        phrase_a, phrase_b = _noun_phrase(a.colour, a.shape), _noun_phrase(b.colour, b.shape)
        for prefix in PREFIXES:
            candidates.append(f"{prefix}{phrase_a} {scene.relation} {phrase_b}")
            candidates.append(f"{prefix}{phrase_b} {REVERSED_RELATION[scene.relation]} {phrase_a}")
    else:
        raise ValueError(f"a scene has one or two objects, got {len(scene.objects)}.")
    return rng.sample(candidates, min(k, len(candidates)))


@dataclass(frozen=True)
class CaptionMeaning:
    """What a caption asks for: objects as (size or None, colour, shape), and the position (one
    object) or relation (two objects: objects[0] relation objects[1])."""

    objects: tuple[tuple[str | None, str, str], ...]
    position: str | None
    relation: str | None

    def describes(self, scene: Scene) -> bool:
        """True when the caption is a correct description of the scene's symbols (not its pixels)."""

        def same(want: tuple[str | None, str, str], obj: ShapeObject) -> bool:
            size, colour, shape = want
            return colour == obj.colour and shape == obj.shape and (size is None or size == obj.size)

        if len(self.objects) != len(scene.objects):
            return False
        if len(self.objects) == 1:
            return self.position == scene.position and same(self.objects[0], scene.objects[0])
        a, b = scene.objects
        if self.relation == scene.relation and same(self.objects[0], a) and same(self.objects[1], b):
            return True
        return (
            self.relation == REVERSED_RELATION.get(scene.relation or "")
            and same(self.objects[0], b)
            and same(self.objects[1], a)
        )


def _alternatives(words: Iterable[str]) -> str:
    # Longest first so that a word which is a prefix of another can never win the alternation early.
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


_PREFIX_RE = f"(?P<prefix>{_alternatives(p for p in PREFIXES if p)})?"
_ONE_OBJECT_RE = re.compile(
    rf"{_PREFIX_RE}(?P<art>an?) (?:(?P<size>{_alternatives(SIZE_RANGES)}) )?"
    rf"(?P<colour>{_alternatives(COLOURS)}) (?P<shape>{_alternatives(SHAPES)})"
    rf" (?P<position>{_alternatives(POSITIONS)})"
)
_TWO_OBJECT_RE = re.compile(
    rf"{_PREFIX_RE}(?P<art1>an?) (?P<colour1>{_alternatives(COLOURS)}) (?P<shape1>{_alternatives(SHAPES)})"
    rf" (?P<relation>{_alternatives(RELATIONS)}) "
    rf"(?P<art2>an?) (?P<colour2>{_alternatives(COLOURS)}) (?P<shape2>{_alternatives(SHAPES)})"
)


def _check_article(article: str, next_word: str, caption: str) -> None:
    if article != _article(next_word):
        raise ValueError(
            f"caption {caption!r} uses {article!r} before {next_word!r}; the grammar wants "
            f"{_article(next_word)!r}."
        )


def parse_caption(caption: str) -> CaptionMeaning:
    """Read a Shapes caption back into its meaning; raise ValueError for text outside the grammar.

    The grammar is strict: lower case, single spaces, no full stop, the right article. A size word
    is only allowed in one-object captions; a missing size word gives ``None`` (either size).
    """
    if not isinstance(caption, str):
        raise ValueError(f"a caption must be a string, got {type(caption).__name__}.")
    m = _ONE_OBJECT_RE.fullmatch(caption)
    if m:
        size = m["size"]
        _check_article(m["art"], size or m["colour"], caption)
        return CaptionMeaning(
            objects=((size, m["colour"], m["shape"]),), position=m["position"], relation=None
        )
    m = _TWO_OBJECT_RE.fullmatch(caption)
    if m:
        _check_article(m["art1"], m["colour1"], caption)
        _check_article(m["art2"], m["colour2"], caption)
        return CaptionMeaning(
            objects=((None, m["colour1"], m["shape1"]), (None, m["colour2"], m["shape2"])),
            position=None,
            relation=m["relation"],
        )
    raise ValueError(
        f"caption {caption!r} is outside the Shapes grammar (expected e.g. 'a red circle on the left' "
        "or 'a picture of a green triangle above a yellow circle')."
    )


# --- Writing a split ---------------------------------------------------------------------------------


def split_rng(seed: int, split: str, data_set: str = "") -> random.Random:
    """The random stream of one split of a data set ("" is Shapes; emoji passes "emoji:")."""
    # Python's hash() of a str is salted per process; a SHA-256 of "seed:split" is stable everywhere
    # and makes train and val differ for the same seed.
    digest = hashlib.sha256(f"{data_set}{seed}:{split}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def make_shapes(
    out_dir: str | Path, num_images: int, split: str = "train", seed: int = 0, size: int = 64,
    two_object_share: float = 0.5, same_colour_pairs: float = 0.0, swappable_pairs: bool = False,
    wording: str = "grammar",
) -> Path:
    """Write a Shapes split to ``out_dir`` (COCO captions layout) and return the folder.

    ``out_dir/images/000000000001.png ...`` and ``out_dir/captions.json`` with "images",
    "annotations" (up to five captions per picture) and "objects" (ground truth, bbox [x, y, w, h]
    in pixels). The same arguments give byte-identical files. ``two_object_share`` (the spec's 0.5 by
    default) lets a training split show more pairs; ``same_colour_pairs`` (0 by the spec) draws that share
    of a training split's pairs in one colour with two shapes; ``swappable_pairs`` (off by the spec) keeps
    only training pairs whose shapes could trade places (:func:`sample_scene`). ``wording="unseen"`` (val and
    test splits) captions every scene in words no training caption uses (data/wordings.py).
    """
    if wording not in ("grammar", "unseen"):
        raise ValueError(f"wording must be 'grammar' or 'unseen', got {wording!r}.")
    if wording == "unseen" and split == "train":
        raise ValueError("unseen wordings are for val and test splits: a training split uses the grammar's words.")
    if wording == "unseen":
        from omni_gpt2o.data.wordings import unseen_captions as caption_scene
    else:
        caption_scene = captions_for_scene
    if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 1:
        raise ValueError(f"num_images must be an integer of at least 1, got {num_images!r}.")
    _check_size(size)
    _check_split(split)
    _check_share(two_object_share)
    _check_same_colour(same_colour_pairs, split)
    _check_swappable(swappable_pairs, split)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}.")

    out = Path(out_dir)
    image_dir = out / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    rng = split_rng(seed, split)

    images: list[dict] = []
    annotations: list[dict] = []
    objects: list[dict] = []
    progress = tqdm(
        range(1, num_images + 1),
        desc=f"shapes {split}",
        unit="img",
        disable=num_images < _PROGRESS_MIN_IMAGES,
    )
    for image_id in progress:
        scene = sample_scene(rng, split, size, two_object_share, same_colour_pairs, swappable_pairs)
        file_name = f"{image_id:012d}.png"
        # Fixed PNG options and no metadata: the bytes depend only on the pixels.
        render_scene(scene, size).save(image_dir / file_name, format="PNG", optimize=False, compress_level=6)
        images.append({"id": image_id, "file_name": file_name, "width": size, "height": size})
        for caption in caption_scene(scene, rng):
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "caption": caption})
        for obj in scene.objects:
            objects.append(
                {
                    "image_id": image_id,
                    "colour": obj.colour,
                    "shape": obj.shape,
                    "size": obj.size,
                    "bbox": _bbox_pixels(obj, size),
                }
            )

    index = {"images": images, "annotations": annotations, "objects": objects}
    # Write then rename, so a reader never sees a half-written index.
    target = out / "captions.json"
    tmp = out / f".captions.json.{os.getpid()}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            json.dump(index, f, indent=2, ensure_ascii=False)
            f.write("\n")
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out


def shapes_split(
    out_dir: str | Path, num_images: int, split: str = "train", seed: int = 0, size: int = 64,
    two_object_share: float = 0.5, same_colour_pairs: float = 0.0, swappable_pairs: bool = False,
    wording: str = "grammar",
) -> Path:
    """:func:`make_shapes`, unless ``out_dir`` already holds the split these arguments make.

    A ``settings.json`` written after the pictures records the arguments, so a split made with other
    ones, or cut short, is made again; the same arguments reuse the folder as it is.
    """
    out = Path(out_dir)
    marker = out / "settings.json"
    arguments = {"num_images": num_images, "split": split, "seed": seed, "size": size}
    if two_object_share != 0.5:  # the spec's splits keep the marker they had before these options
        arguments["two_object_share"] = two_object_share
    if same_colour_pairs:
        arguments["same_colour_pairs"] = same_colour_pairs
    if swappable_pairs:
        arguments["swappable_pairs"] = swappable_pairs
    if wording != "grammar":
        arguments["wording"] = wording
    settings = json.dumps(arguments)
    if not (marker.is_file() and marker.read_text() == settings and (out / "captions.json").is_file()):
        print(f"making {num_images} Shapes {split} pictures in {out}", flush=True)
        make_shapes(out, num_images, split=split, seed=seed, size=size, two_object_share=two_object_share,
                    same_colour_pairs=same_colour_pairs, swappable_pairs=swappable_pairs, wording=wording)
        marker.write_text(settings)
    return out
