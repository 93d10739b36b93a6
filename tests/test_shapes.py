"""Tests for the Shapes data set against specs/shapes.md.

The spec's tables are written out again here on purpose (not imported from the module), so that a
typo in the module's constants fails a test instead of being checked against itself.
"""

from __future__ import annotations

import json
import math
import random
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from omni_gpt2o.data import shapes
from omni_gpt2o.data.shapes import (
    CaptionMeaning,
    Scene,
    ShapeObject,
    captions_for_scene,
    make_shapes,
    parse_caption,
    render_scene,
    sample_scene,
)

# --- The spec, copied -------------------------------------------------------------------------------

SPEC_COLOURS = {
    "red": (255, 0, 0),
    "green": (0, 200, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
    "magenta": (255, 0, 255),
    "cyan": (0, 255, 255),
}
SPEC_SHAPES = {"square", "circle", "triangle"}
SPEC_SIZES = {"small": (0.20, 0.26), "large": (0.32, 0.40)}
SPEC_POSITIONS = {
    "on the left": ((0.22, 0.32), (0.40, 0.60)),
    "on the right": ((0.68, 0.78), (0.40, 0.60)),
    "at the top": ((0.40, 0.60), (0.22, 0.32)),
    "at the bottom": ((0.40, 0.60), (0.68, 0.78)),
    "in the center": ((0.45, 0.55), (0.45, 0.55)),
}
SPEC_RELATIONS = {
    "to the left of": ((-0.60, -0.40), (-0.08, 0.08)),
    "to the right of": ((0.40, 0.60), (-0.08, 0.08)),
    "above": ((-0.08, 0.08), (-0.60, -0.40)),
    "below": ((-0.08, 0.08), (0.40, 0.60)),
}
SPEC_REVERSED = {
    "to the left of": "to the right of",
    "to the right of": "to the left of",
    "above": "below",
    "below": "above",
}
SPEC_HELD_OUT = {("magenta", "triangle"), ("cyan", "circle"), ("yellow", "square")}
EPS = 1e-9

_C = "|".join(SPEC_COLOURS)
_S = "|".join(SPEC_SHAPES)
_Z = "|".join(SPEC_SIZES)
_PREFIX = "(?:a picture of |there is )?"
# Every colour, size and shape word starts with a consonant, so the article is always "a".
ONE_OBJECT_RE = re.compile(rf"{_PREFIX}a (?:(?:{_Z}) )?(?:{_C}) (?:{_S}) (?:{'|'.join(SPEC_POSITIONS)})")
TWO_OBJECT_RE = re.compile(
    rf"{_PREFIX}a (?:{_C}) (?:{_S}) (?:{'|'.join(SPEC_RELATIONS)}) a (?:{_C}) (?:{_S})"
)


def in_range(value: float, lo_hi: tuple[float, float]) -> bool:
    return lo_hi[0] - EPS <= value <= lo_hi[1] + EPS


def scenes(split: str, n: int, seed: int = 0, size: int = 64) -> list[Scene]:
    rng = random.Random(seed)
    return [sample_scene(rng, split, size) for _ in range(n)]


def area_px(shape: str, side_px: float) -> float:
    return {"square": side_px**2, "circle": math.pi * side_px**2 / 4, "triangle": side_px**2 / 2}[shape]


def perimeter_px(shape: str, side_px: float) -> float:
    triangle = side_px + 2 * math.hypot(side_px / 2, side_px)  # base plus two slanted sides
    return {"square": 4 * side_px, "circle": math.pi * side_px, "triangle": triangle}[shape]


@pytest.fixture(scope="module")
def train_split(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_shapes(tmp_path_factory.mktemp("train"), 200, split="train", seed=3)


@pytest.fixture(scope="module")
def val_split(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_shapes(tmp_path_factory.mktemp("val"), 120, split="val", seed=3, size=128)


def load_index(split_dir: Path) -> dict:
    return json.loads((split_dir / "captions.json").read_text(encoding="utf-8"))


# --- Constants ---------------------------------------------------------------------------------------


def test_constants_match_spec() -> None:
    assert shapes.COLOURS == SPEC_COLOURS
    assert set(shapes.SHAPES) == SPEC_SHAPES and len(shapes.SHAPES) == 3
    assert shapes.SIZE_RANGES == SPEC_SIZES
    assert shapes.POSITIONS == SPEC_POSITIONS
    assert shapes.RELATIONS == SPEC_RELATIONS
    assert shapes.HELD_OUT_PAIRS == frozenset(SPEC_HELD_OUT)
    assert shapes.PREFIXES == ("", "a picture of ", "there is ")


# --- Sampling ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("split", ["train", "val"])
def test_sampled_geometry_within_spec(split: str) -> None:
    sampled = scenes(split, 400, seed=11)
    counts = {1: 0, 2: 0}
    for scene in sampled:
        counts[len(scene.objects)] += 1
        for obj in scene.objects:
            assert obj.colour in SPEC_COLOURS and obj.shape in SPEC_SHAPES
            assert in_range(obj.s, SPEC_SIZES[obj.size]), obj
        if len(scene.objects) == 1:
            assert scene.relation is None
            (obj,) = scene.objects
            x_range, y_range = SPEC_POSITIONS[scene.position]
            assert in_range(obj.cx, x_range) and in_range(obj.cy, y_range), scene
        else:
            assert scene.position is None
            a, b = scene.objects
            assert a.size == b.size == "small"
            assert a.colour != b.colour
            dx_range, dy_range = SPEC_RELATIONS[scene.relation]
            assert in_range(a.cx - b.cx, dx_range) and in_range(a.cy - b.cy, dy_range), scene
            assert in_range((a.cx + b.cx) / 2, (0.42, 0.58)) and in_range((a.cy + b.cy) / 2, (0.42, 0.58))
    # 50/50 one or two objects: 400 draws land far inside 150..250 unless the coin is broken.
    assert 150 <= counts[1] <= 250
    # Both sizes and all phrases get used.
    assert {o.size for s in sampled if len(s.objects) == 1 for o in s.objects} == set(SPEC_SIZES)
    assert {s.position for s in sampled if s.position} == set(SPEC_POSITIONS)
    assert {s.relation for s in sampled if s.relation} == set(SPEC_RELATIONS)


def test_sampling_is_deterministic_and_rejects_bad_split() -> None:
    assert scenes("train", 30, seed=5) == scenes("train", 30, seed=5)
    assert scenes("train", 30, seed=5) != scenes("train", 30, seed=6)
    with pytest.raises(ValueError):
        sample_scene(random.Random(0), "validation")


def test_train_never_samples_held_out_but_uses_every_colour_and_shape() -> None:
    sampled = scenes("train", 600, seed=2)
    pairs = {(o.colour, o.shape) for s in sampled for o in s.objects}
    assert not pairs & SPEC_HELD_OUT
    assert {c for c, _ in pairs} == set(SPEC_COLOURS)
    assert {s for _, s in pairs} == SPEC_SHAPES
    # Each held-out colour and shape still appears with others (15 allowed pairs in all).
    assert len(pairs) == 15


def test_two_object_share_sets_how_many_pictures_are_pairs() -> None:
    def pairs(share: float) -> float:
        rng = random.Random(3)
        return sum(len(sample_scene(rng, "train", two_object_share=share).objects) == 2 for _ in range(800)) / 800

    assert pairs(0.0) == 0.0 and pairs(1.0) == 1.0
    assert 0.45 < pairs(0.5) < 0.55 and 0.70 < pairs(0.75) < 0.80
    rng = random.Random(4)  # the spec's share is the default, draw for draw
    assert scenes("train", 40, seed=4) == [sample_scene(rng, "train", 64, 0.5) for _ in range(40)]
    with pytest.raises(ValueError, match="two_object_share"):
        sample_scene(random.Random(0), "train", two_object_share=1.5)


def test_same_colour_pairs_show_two_shapes_of_one_colour_in_train_only() -> None:
    rng = random.Random(5)
    sampled = [sample_scene(rng, "train", 64, 1.0, same_colour_pairs=0.5) for _ in range(400)]
    same = [s for s in sampled if s.objects[0].colour == s.objects[1].colour]
    assert 0.4 < len(same) / len(sampled) < 0.6
    assert all(s.objects[0].shape != s.objects[1].shape for s in same)
    assert not {(o.colour, o.shape) for s in sampled for o in s.objects} & SPEC_HELD_OUT
    for scene in same[:20]:  # still two objects apart on the picture, captions that parse back
        pixels = np.asarray(render_scene(scene, 64))
        assert len(np.unique(pixels.reshape(-1, 3), axis=0)) == 2
        assert all(parse_caption(c) for c in captions_for_scene(scene, random.Random(0)))
    with pytest.raises(ValueError, match="training splits only"):  # val and test keep the spec's two colours
        sample_scene(random.Random(0), "val", same_colour_pairs=0.3)


def test_swappable_pairs_leave_no_pair_told_apart_by_a_held_out_shape() -> None:
    def shortcut_share(scenes: list) -> float:  # pairs whose swapped shapes would make a held-out pair
        pairs = [s.objects for s in scenes]
        told = [(a.colour, b.shape) in SPEC_HELD_OUT or (b.colour, a.shape) in SPEC_HELD_OUT for a, b in pairs]
        return sum(told) / len(pairs)

    plain = [sample_scene(random.Random(i), "train", 64, 1.0) for i in range(600)]
    swappable = [sample_scene(random.Random(i), "train", 64, 1.0, swappable_pairs=True) for i in range(600)]
    assert 0.2 < shortcut_share(plain) < 0.37  # ~28% by count: the shortcut the option removes
    assert shortcut_share(swappable) == 0.0
    assert not {(o.colour, o.shape) for s in swappable for o in s.objects} & SPEC_HELD_OUT
    # every colour and shape still shows up in pairs, and the first object is drawn as without the option
    assert {o.colour for s in swappable for o in s.objects} == set(SPEC_COLOURS)
    assert {o.shape for s in swappable for o in s.objects} == set(SPEC_SHAPES)
    first = [[(s.objects[0].colour, s.objects[0].shape) for s in scenes] for scenes in (plain, swappable)]
    assert first[0] == first[1]
    with pytest.raises(ValueError, match="training splits only"):
        sample_scene(random.Random(0), "test", swappable_pairs=True)


@pytest.mark.parametrize("split", ["val", "test"])
def test_val_forces_held_out_pairs(split: str) -> None:
    sampled = scenes(split, 400, seed=4)
    with_held_out = sum(any((o.colour, o.shape) in SPEC_HELD_OUT for o in s.objects) for s in sampled)
    # Forced in half of the scenes plus some by chance: well above half, well below all.
    assert 0.5 < with_held_out / len(sampled) < 0.8
    assert {(o.colour, o.shape) for s in sampled for o in s.objects} >= SPEC_HELD_OUT


# --- Rendering ---------------------------------------------------------------------------------------


def colour_mask(pixels: np.ndarray, colour: str) -> np.ndarray:
    return np.all(pixels == np.array(SPEC_COLOURS[colour], dtype=np.uint8), axis=-1)


@pytest.mark.parametrize("size", [64, 128])
def test_rendered_pixels(size: int) -> None:
    for scene in scenes("val", 150, seed=size, size=size):
        image = render_scene(scene, size)
        assert image.mode == "RGB" and image.size == (size, size)
        pixels = np.asarray(image)
        present = {tuple(int(v) for v in c) for c in np.unique(pixels.reshape(-1, 3), axis=0)}
        assert present == {(0, 0, 0)} | {SPEC_COLOURS[o.colour] for o in scene.objects}
        # Nothing on the border rows and columns.
        for edge in (pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]):
            assert not edge.any()
        for obj in scene.objects:
            side = obj.s * size
            count = int(colour_mask(pixels, obj.colour).sum())
            # Pixel-centre sampling errs by at most about half a pixel along the outline.
            tolerance = 0.6 * perimeter_px(obj.shape, side) + 2
            assert abs(count - area_px(obj.shape, side)) <= tolerance, (obj, count)


def cross(p: tuple[float, float], q: tuple[float, float], r: tuple[float, float]) -> float:
    """Which side of the line p -> q the point r lies on (sign of the 2-D cross product)."""
    return (q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0])


def reference_render(scene: Scene, size: int) -> np.ndarray:
    """The spec's fill rule, pixel by pixel and written differently from the module (half-planes)."""
    out = np.zeros((size, size, 3), dtype=np.uint8)
    for obj in scene.objects:
        h = obj.s / 2
        apex, left_foot, right_foot = (obj.cx, obj.cy - h), (obj.cx - h, obj.cy + h), (obj.cx + h, obj.cy + h)
        for j in range(size):
            for i in range(size):
                x, y = (i + 0.5) / size, (j + 0.5) / size
                if obj.shape == "square":
                    inside = abs(x - obj.cx) <= h and abs(y - obj.cy) <= h
                elif obj.shape == "circle":
                    inside = math.hypot(x - obj.cx, y - obj.cy) <= h
                else:
                    corners = (apex, left_foot, right_foot, apex)
                    sides = [cross(corners[k], corners[k + 1], (x, y)) for k in range(3)]
                    inside = all(v <= 0 for v in sides) or all(v >= 0 for v in sides)
                if inside:
                    out[j, i] = SPEC_COLOURS[obj.colour]
    return out


def test_render_matches_pixel_centre_rule() -> None:
    # Random real-valued geometry makes a pixel centre exactly on an outline vanishingly unlikely, so
    # the two renderers must agree on every pixel.
    for size in (32, 64):
        for scene in scenes("val", 40, seed=size + 1, size=size):
            assert np.array_equal(np.asarray(render_scene(scene, size)), reference_render(scene, size)), scene


def test_shapes_have_the_right_form() -> None:
    """A large, centred shape at 128 px: check outlines, not just areas."""
    size = 128
    for shape in ("square", "circle", "triangle"):
        obj = ShapeObject("red", shape, "large", 0.5, 0.5, 0.375)  # 48 px box from 40 to 88
        pixels = np.asarray(render_scene(Scene((obj,), "in the center", None), size))
        mask = colour_mask(pixels, "red")
        rows = mask.sum(axis=1)
        width_at = {r: int(rows[r]) for r in (41, 64, 87)}
        if shape == "square":
            assert width_at == {41: 48, 64: 48, 87: 48}
        elif shape == "circle":
            assert width_at[64] in (47, 48, 49) and width_at[41] < 20 and width_at[87] < 20
            assert mask[64, 64] and not mask[41, 41] and not mask[87, 87]  # corners of the box stay black
        else:
            # Pointing up: narrow at the top, full base at the bottom, widest row is the last one.
            assert width_at[41] <= 3 and 22 <= width_at[64] <= 26 and width_at[87] >= 46
            filled_rows = np.nonzero(rows)[0]
            assert rows[filled_rows[-1]] == rows.max()
            assert abs(float(np.nonzero(mask[87])[0].mean()) - 63.5) <= 0.5  # symmetric about cx


def test_objects_keep_apart() -> None:
    # A pair never touches, not even diagonally: a one-pixel dilation of one shape misses the other.
    for scene in scenes("train", 300, seed=9):
        if len(scene.objects) != 2:
            continue
        pixels = np.asarray(render_scene(scene, 64))
        a, b = (colour_mask(pixels, o.colour) for o in scene.objects)
        padded = np.pad(a, 1)
        grown = np.zeros_like(a)
        for dy in range(3):
            for dx in range(3):
                grown |= padded[dy : dy + 64, dx : dx + 64]
        assert not (grown & b).any()


# --- Captions ----------------------------------------------------------------------------------------


def test_captions_follow_grammar_and_round_trip() -> None:
    rng = random.Random(1)
    for scene in scenes("val", 300, seed=8):
        captions = captions_for_scene(scene, rng)
        assert len(captions) == 5 and len(set(captions)) == 5
        pattern = ONE_OBJECT_RE if len(scene.objects) == 1 else TWO_OBJECT_RE
        for caption in captions:
            assert pattern.fullmatch(caption), caption
            assert caption == caption.strip() and "  " not in caption and not caption.endswith(".")
            meaning = parse_caption(caption)
            assert meaning.describes(scene), caption
            assert meaning.position == scene.position
            assert len(meaning.objects) == len(scene.objects)
        if len(scene.objects) == 1:
            # Five of the six prefix x size-word combinations always mix with and without size.
            assert {parse_caption(c).objects[0][0] for c in captions} == {None, scene.objects[0].size}
        else:
            assert all(parse_caption(c).objects[0][0] is None for c in captions)
    assert captions_for_scene(scenes("train", 1)[0], rng, k=2).__len__() == 2


def test_reversed_captions_describe_the_same_scene() -> None:
    a = ShapeObject("red", "circle", "small", 0.25, 0.5, 0.22)
    b = ShapeObject("blue", "square", "small", 0.75, 0.5, 0.22)
    scene = Scene((a, b), None, "to the left of")
    captions = captions_for_scene(scene, random.Random(0), k=6)
    assert "a red circle to the left of a blue square" in captions
    assert "a blue square to the right of a red circle" in captions
    assert "there is a blue square to the right of a red circle" in captions
    for caption in captions:
        assert parse_caption(caption).describes(scene)
    for rel, rev in SPEC_REVERSED.items():
        forward = parse_caption(f"a red circle {rel} a blue square")
        backward = parse_caption(f"a blue square {rev} a red circle")
        assert forward.objects == tuple(reversed(backward.objects))
        assert forward.relation == rel and backward.relation == rev
    # The wrong relation or a swapped pair does not describe the scene.
    assert not parse_caption("a red circle to the right of a blue square").describes(scene)
    assert not parse_caption("a blue square to the left of a red circle").describes(scene)
    assert not parse_caption("a red circle on the left").describes(scene)


def test_parse_caption_examples() -> None:
    assert parse_caption("a red circle on the left") == CaptionMeaning(
        ((None, "red", "circle"),), "on the left", None
    )
    assert parse_caption("there is a large blue square at the top") == CaptionMeaning(
        (("large", "blue", "square"),), "at the top", None
    )
    assert parse_caption("a picture of a green triangle above a yellow circle") == CaptionMeaning(
        ((None, "green", "triangle"), (None, "yellow", "circle")), None, "above"
    )


@pytest.mark.parametrize(
    "junk",
    [
        "",
        "a red circle",
        "a red circle on the left.",
        "A red circle on the left",
        "a red  circle on the left",
        " a red circle on the left",
        "an red circle on the left",
        "a orange circle on the left",
        "a red hexagon on the left",
        "a huge red circle on the left",
        "a red circle in the middle",
        "a small red circle to the left of a blue square",
        "a red circle to the left of",
        "a red circle next to a blue square",
        "a photo of a red circle on the left",
        "a picture of a picture of a red circle on the left",
        "a red circle on the left and a blue square on the right",
        "red circle on the left",
    ],
)
def test_parse_caption_rejects_junk(junk: str) -> None:
    with pytest.raises(ValueError):
        parse_caption(junk)


# --- Files -------------------------------------------------------------------------------------------


def check_split_files(split_dir: Path, size: int, num_images: int) -> dict:
    index = load_index(split_dir)
    assert list(index) == ["images", "annotations", "objects"]
    assert [im["id"] for im in index["images"]] == list(range(1, num_images + 1))
    assert index["images"][0] == {"id": 1, "file_name": "000000000001.png", "width": size, "height": size}
    assert sorted(p.name for p in (split_dir / "images").iterdir()) == [
        f"{i:012d}.png" for i in range(1, num_images + 1)
    ]
    assert [a["id"] for a in index["annotations"]] == list(range(1, len(index["annotations"]) + 1))
    by_image: dict[int, list[dict]] = {}
    for obj in index["objects"]:
        by_image.setdefault(obj["image_id"], []).append(obj)
    for image in index["images"]:
        pixels = np.asarray(Image.open(split_dir / "images" / image["file_name"]).convert("RGB"))
        assert pixels.shape == (size, size, 3)
        objs = by_image[image["id"]]
        assert 1 <= len(objs) <= 2
        for obj in objs:
            assert set(obj) == {"image_id", "colour", "shape", "size", "bbox"}
            x, y, w, h = obj["bbox"]
            assert all(round(v, 3) == v for v in obj["bbox"])
            assert w == h and in_range(w / size, SPEC_SIZES[obj["size"]])
            rows, cols = np.nonzero(colour_mask(pixels, obj["colour"]))
            # Pixel extents [first, last + 1) against the geometric box, within one pixel ...
            assert abs(cols.min() - x) <= 1 and abs(cols.max() + 1 - (x + w)) <= 1
            assert abs(rows.max() + 1 - (y + h)) <= 1
            # ... except the apex of a triangle, which can start up to 1.5 px lower: its first
            # rows are thinner than the pixel spacing and may hold no pixel centre.
            top_tolerance = 1.5 if obj["shape"] == "triangle" else 1
            assert abs(rows.min() - y) <= top_tolerance
    return index


def test_train_split_files(train_split: Path) -> None:
    index = check_split_files(train_split, 64, 200)
    pairs = {(o["colour"], o["shape"]) for o in index["objects"]}
    assert not pairs & SPEC_HELD_OUT
    assert {c for c, _ in pairs} == set(SPEC_COLOURS) and {s for _, s in pairs} == SPEC_SHAPES
    for ann in index["annotations"]:
        caption = ann["caption"]
        assert not any(f"{c} {s}" in caption for c, s in SPEC_HELD_OUT), caption
        meaning = parse_caption(caption)
        assert not {(c, s) for _, c, s in meaning.objects} & SPEC_HELD_OUT
    # Up to five captions per picture, and each describes that picture's objects.
    per_image: dict[int, int] = {}
    for ann in index["annotations"]:
        per_image[ann["image_id"]] = per_image.get(ann["image_id"], 0) + 1
    assert set(per_image.values()) == {5} and len(per_image) == 200


def test_val_split_files(val_split: Path) -> None:
    index = check_split_files(val_split, 128, 120)
    held = [o for o in index["objects"] if (o["colour"], o["shape"]) in SPEC_HELD_OUT]
    assert len(held) >= 40
    assert any(any(f"{c} {s}" in a["caption"] for c, s in SPEC_HELD_OUT) for a in index["annotations"])


def read_tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_make_shapes_is_deterministic(tmp_path: Path) -> None:
    first = read_tree(make_shapes(tmp_path / "a", 50, seed=7))
    second = read_tree(make_shapes(tmp_path / "b", 50, seed=7))
    assert first == second
    assert len(first) == 51  # 50 pictures + captions.json, no leftover temporary file
    other_seed = read_tree(make_shapes(tmp_path / "c", 50, seed=8))
    other_split = read_tree(make_shapes(tmp_path / "d", 50, split="val", seed=7))
    assert other_seed["captions.json"] != first["captions.json"]
    assert other_split["captions.json"] != first["captions.json"]
    # val and test sample alike, so only the split name in the seed can tell them apart.
    val = read_tree(make_shapes(tmp_path / "e", 50, split="val", seed=7))
    test = read_tree(make_shapes(tmp_path / "f", 50, split="test", seed=7))
    assert val["captions.json"] != test["captions.json"]
    assert other_seed.keys() == first.keys()
    assert any(other_seed[k] != first[k] for k in first if k.endswith(".png"))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_images": 0},
        {"num_images": -3},
        {"num_images": 2.5},
        {"num_images": 2, "size": 31},
        {"num_images": 2, "size": 0},
        {"num_images": 2, "split": "training"},
        {"num_images": 2, "split": "VAL"},
        {"num_images": 2, "two_object_share": -0.1},
        {"num_images": 2, "same_colour_pairs": 1.5},
        {"num_images": 2, "split": "test", "same_colour_pairs": 0.2},
        {"num_images": 2, "split": "val", "swappable_pairs": True},
        {"num_images": 2, "swappable_pairs": 1},
    ],
)
def test_make_shapes_rejects_bad_arguments(tmp_path: Path, kwargs: dict) -> None:
    with pytest.raises(ValueError) as excinfo:
        make_shapes(tmp_path / "out", **kwargs)
    message = str(excinfo.value)
    assert message and "\n" not in message
    assert not (tmp_path / "out" / "captions.json").exists()


def test_small_size_still_fits() -> None:
    # At the smallest allowed picture about 1 draw in 200 of the spec's ranges would touch the border,
    # so many scenes are needed to see the rejection at work.
    for scene in scenes("val", 3000, seed=1, size=32):
        pixels = np.asarray(render_scene(scene, 32))
        assert not pixels[0].any() and not pixels[-1].any()
        assert not pixels[:, 0].any() and not pixels[:, -1].any()
        assert len(np.unique(pixels.reshape(-1, 3), axis=0)) == len(scene.objects) + 1


def test_touching_shapes_are_rejected() -> None:
    # The spec's pair ranges keep shapes far apart, so sampling alone never exercises the gap rule:
    # check the placement test itself on shapes that only touch diagonally or nearly touch the border.
    size = 64
    a = ShapeObject("red", "square", "small", 20 / size, 20 / size, 16 / size)  # pixels 12..27
    diagonal = ShapeObject("blue", "square", "small", 36 / size, 36 / size, 16 / size)  # 28..43
    apart = ShapeObject("blue", "square", "small", 37 / size, 37 / size, 16 / size)  # 29..44
    assert not shapes._fits((a, diagonal), size)
    assert shapes._fits((a, apart), size)
    at_border = ShapeObject("red", "square", "large", 12 / size, 0.5, 22 / size)  # pixels 1..22
    on_border = ShapeObject("red", "square", "large", 11 / size, 0.5, 22 / size)  # pixels 0..21
    assert shapes._fits((at_border,), size)
    assert not shapes._fits((on_border,), size)


def test_shapes_split_reuses_a_finished_split_and_remakes_a_changed_one(tmp_path: Path) -> None:
    out = tmp_path / "split"
    shapes.shapes_split(out, 6, split="val", seed=1)
    index = out / "captions.json"
    first = index.read_bytes()
    index.write_text(index.read_text() + " ")  # a mark that a remake would wipe out
    shapes.shapes_split(out, 6, split="val", seed=1)
    assert index.read_bytes() == first + b" "  # same arguments: the folder is reused as it is
    shapes.shapes_split(out, 6, split="val", seed=2)
    assert index.read_bytes() not in (first, first + b" ")  # another seed: made again
    (out / "settings.json").unlink()  # as after a run killed before the split was finished
    shapes.shapes_split(out, 6, split="val", seed=1)
    assert index.read_bytes() == first
