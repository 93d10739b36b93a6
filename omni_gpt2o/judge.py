"""Exact scorer for Shapes: judge a picture's pixels against what its caption says (docs/shapes.md).

The judge sees only the picture (never a model's internals), so the same code scores the data set's own
pictures (which must pass), a model's generations, and anything else drawn at any size S. It works in
three steps:

1. :func:`find_objects` labels every pixel with a palette colour or background and cuts each colour into
   connected blobs, measuring each blob (centre, box, fill, shape, size) in fractions of the picture.
2. :func:`judge` matches the caption's objects to blobs by colour and checks shape, size, position or
   relation, and that nothing else was drawn. Apart from these (not part of ``full``),
   :func:`edge_softness` measures how clean the picture is: flat colours and sharp edges.
3. :func:`summarise` turns many judgements into accuracies by group (one/two objects, held-out/seen).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from omni_gpt2o.data.shapes import (
    COLOURS,
    HELD_OUT_PAIRS,
    POSITIONS,
    RELATIONS,
    SHAPES,
    SIZE_RANGES,
    CaptionMeaning,
)
from omni_gpt2o.data.wordings import read_caption

__all__ = [
    "DetectedObject",
    "Judgement",
    "find_objects",
    "edge_softness",
    "judge",
    "summarise",
    "MIN_AREA_FRAC",
    "SIZE_THRESHOLD",
    "POSITION_TOLERANCE",
    "RELATION_MIN_OFFSET",
    "FLAT_TOLERANCE",
    "MAX_EDGE_SOFTNESS",
]

# --- Thresholds --------------------------------------------------------------------------------------

# The smallest legal object is a small triangle, s = 0.20: area 0.02 S^2. A quarter of that (0.005) keeps
# every real object (even blurred) while dropping specks: 20 px at S = 64, 5 px at S = 32.
MIN_AREA_FRAC = 0.25 * 0.5 * SIZE_RANGES["small"][0] ** 2
# Whatever S, a blob of one or two pixels is noise, not an object.
MIN_AREA_PIXELS = 3
# A pixel belongs to a colour when it is at least this fraction as bright as the palette colour (so a
# shape edge blurred half into the black background splits evenly) ...
MIN_COVERAGE = 0.5
# ... and what is left after removing that much of the colour is small (0-255 units): the hue is right.
# Orange (255, 128, 0) lies 90 from yellow and 128 from red, so it is no palette colour.
MAX_RESIDUAL = 80.0
# Halfway between the spec's ranges (small 0.20-0.26, large 0.32-0.40): 0.29. At S = 32 this is 9.3 px,
# between the 9 px a small shape spans at most and the 10 px a large one spans at least.
SIZE_THRESHOLD = (SIZE_RANGES["small"][1] + SIZE_RANGES["large"][0]) / 2
# One object: its centre may lie this far outside the spec's range for the phrase and still count.
# "on the left" (x 0.22-0.32) then reaches 0.37, well short of the centre (0.45-0.55).
POSITION_TOLERANCE = 0.05
# Two objects: the offset along the relation's axis must exceed this (the spec draws 0.40-0.60) and beat
# the offset along the other axis.
RELATION_MIN_OFFSET = 0.2
# A blob whose best-fitting ideal shape disagrees with it on more than this fraction of its pixels is no
# shape of the spec ("other"). The spec's own pictures stay below 0.2 at S = 32 (0.1 at S = 64), blurred
# or not; a ring, an ellipse, a rectangle, a right-angled or upside-down triangle score 0.4 or more.
MAX_SHAPE_ERROR = 0.3

# Cleanliness, measured apart from correctness (it is not part of ``full``). A pixel is flat when it lies
# within FLAT_TOLERANCE (RGB distance, 0-255 units) of black or of a palette colour, as every pixel the spec
# draws does; the others are soft: blurred edges, smudges, off-palette tints.
FLAT_TOLERANCE = 60.0
# Soft pixels per outline pixel is about how wide, in pixels, the soft band along the objects' edges is:
# 0 for the spec's pictures, about 0.5 for an antialiased drawing, about 1.4 after a Gaussian blur of 0.7 px
# and 2 after one of 1 px (on Shapes pictures). A picture is clean at or below this.
MAX_EDGE_SOFTNESS = 1.5

_COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)
_PALETTE = np.array([COLOURS[c] for c in _COLOUR_NAMES], dtype=np.float32)  # (6, 3)
_PALETTE_SQ = (_PALETTE**2).sum(axis=1)  # (6,)
_FLAT_COLOURS = np.concatenate([np.zeros((1, 3), dtype=np.float32), _PALETTE])  # black, then the palette
# Fraction of the bounding box a shape fills: turns a blob's pixel count back into a side length.
_IDEAL_FILL = {"square": 1.0, "circle": math.pi / 4, "triangle": 0.5}
# 8-connectivity: a generated shape with a jagged diagonal edge stays one blob, and the spec keeps
# shapes at least one black pixel apart even diagonally. Four forward offsets cover every neighbour pair.
_FORWARD_OFFSETS = ((0, 1), (1, 0), (1, 1), (1, -1))


# --- Finding objects ---------------------------------------------------------------------------------


@dataclass
class DetectedObject:
    """One blob of one palette colour; geometry in fractions of the picture side (x right, y down)."""

    colour: str
    pixels: int
    cx: float  # centre of the bounding box
    cy: float
    width: float
    height: float
    fill: float  # pixels / bounding-box area
    shape: str  # "square", "circle", "triangle", or "other" when the blob is like none of them
    size: str  # "small" or "large", from the side (box and pixel count, see find_objects) vs SIZE_THRESHOLD


def _to_rgb_array(image: Image.Image | np.ndarray) -> np.ndarray:
    """(H, W, 3) float32 in 0-255 from a PIL image or an array (HWC or CHW; uint8, or float in 0-1)."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.float32)
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    if arr.ndim != 3:
        raise ValueError(f"expected an (H, W, 3) picture, got an array of shape {arr.shape}.")
    if arr.shape[-1] not in (3, 4) and arr.shape[0] in (3, 4):
        arr = np.moveaxis(arr, 0, -1)  # CHW, as tensors come
    if arr.shape[-1] not in (3, 4):
        raise ValueError(f"expected 3 (RGB) or 4 (RGBA) channels, got an array of shape {arr.shape}.")
    arr = arr[..., :3]
    if np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float32)
        # Floats in 0-1 (as a model emits them) are scaled; floats already in 0-255 are kept.
        if arr.size and float(np.nanmax(arr)) <= 1.0:
            arr = arr * 255.0
        arr = np.nan_to_num(arr)
    else:
        arr = arr.astype(np.float32)
    return np.clip(arr, 0.0, 255.0)


def _classify_pixels(rgb: np.ndarray) -> np.ndarray:
    """Palette index (0-5) of each pixel, or -1 for background.

    Each pixel is compared with every palette colour scaled by its best brightness t in [0, 1] (so a
    dim or half-covered pixel still has its colour's hue: half yellow is (128, 128, 0), which plain
    nearest-colour would call green). The pixel takes the colour with the smallest residual, and is
    background unless it is at least half as bright as that colour and the residual is small.
    """
    dots = rgb @ _PALETTE.T  # (H, W, 6)
    t = np.clip(dots / _PALETTE_SQ, 0.0, 1.0)
    # |v - t c|^2 = |v|^2 - 2 t v.c + t^2 |c|^2
    residual_sq = (rgb**2).sum(axis=-1, keepdims=True) - 2.0 * t * dots + t * t * _PALETTE_SQ
    best = residual_sq.argmin(axis=-1)
    best_t = np.take_along_axis(t, best[..., None], axis=-1)[..., 0]
    best_res = np.take_along_axis(residual_sq, best[..., None], axis=-1)[..., 0]
    foreground = (best_t >= MIN_COVERAGE) & (best_res <= MAX_RESIDUAL**2)
    return np.where(foreground, best, -1)


def _label_components(classes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Connected components of same-class foreground pixels (8-connected), vectorised.

    Returns the foreground pixels' rows, columns, class and a component id (0..K-1) for each.
    Labels start as each pixel's own index and repeatedly take the minimum over their neighbours, with
    pointer jumping (label <- label of label) so that long blobs converge in a few rounds.
    """
    h, w = classes.shape
    fg_rows, fg_cols = np.nonzero(classes >= 0)
    n = fg_rows.size
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty, empty
    # Dense map from pixel to its index among the foreground pixels (-1 for background).
    index = np.full((h, w), -1, dtype=np.int64)
    index[fg_rows, fg_cols] = np.arange(n)
    src_parts, dst_parts = [], []
    for dy, dx in _FORWARD_OFFSETS:
        # Pairs (y, x) -> (y + dy, x + dx) inside the picture.
        ys = slice(0, h - dy)
        ys2 = slice(dy, h)
        xs = slice(max(0, -dx), w - max(0, dx))
        xs2 = slice(max(0, dx), w - max(0, -dx))
        a_cls, b_cls = classes[ys, xs], classes[ys2, xs2]
        linked = (a_cls >= 0) & (a_cls == b_cls)
        src_parts.append(index[ys, xs][linked])
        dst_parts.append(index[ys2, xs2][linked])
    src = np.concatenate(src_parts)
    dst = np.concatenate(dst_parts)

    labels = np.arange(n)
    if src.size:
        while True:
            # Every label is the index of a pixel in the same blob and never above the pixel's own index,
            # so labels[labels] is still a pixel of the blob, and the blob's lowest index is a fixed point.
            low = np.minimum(labels[src], labels[dst])
            new = labels.copy()
            np.minimum.at(new, src, low)
            np.minimum.at(new, dst, low)
            new = new[new]
            new = new[new]
            if np.array_equal(new, labels):
                break
            labels = new
    _, component = np.unique(labels, return_inverse=True)
    fg_classes = classes[fg_rows, fg_cols]
    return fg_rows, fg_cols, fg_classes, component.reshape(-1)


def _ideal_mask(shape: str, side: float, top: float, cx: float, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Pixels of an ideal ``shape`` (side ``side``, top edge ``top``, centre column ``cx``; in pixels) on
    the grid of pixel centres ``ys`` (column vector) x ``xs`` (row vector), drawn the spec's way: a pixel
    is in when its centre is. Drawing the ideal at the pixel level matters at S = 32, where a 7-pixel
    circle is a square short of only its four corner pixels."""
    y = ys - top  # depth below the shape's top edge
    x = xs - cx
    if shape == "square":
        return (y >= 0) & (y < side) & (np.abs(x) < side / 2)
    if shape == "circle":
        r = side / 2
        return x * x + (y - r) ** 2 <= r * r
    # triangle: apex at the top, the half-width grows by 1/2 per unit of depth down to the base
    return (y >= 0) & (y < side) & (np.abs(x) <= y / 2)


def _classify_shape(rows: np.ndarray, cols: np.ndarray, top: int, bottom: int, left: int, right: int) -> str:
    """The spec shape that best fits the blob, or "other" when none fits.

    Each ideal shape is drawn into the blob's box at a few sides (a shape of side s spans about s - 1
    to s + 1 pixels) and scored by the pixels on which it and the blob disagree, as a fraction of the
    blob. This compares the whole outline, not the fill alone: fill is fragile (blur rounds a square's
    corners towards a circle's pi/4), while the row-width profile inside the mask tells a triangle
    (narrow top, wide bottom) from a circle (narrow at both ends) from a square (full throughout), and
    the columns tell a right-angled triangle or a diamond from the spec's shapes.
    """
    height, width = bottom - top, right - left
    extent = max(height, width)
    # A window around the box wide enough for the largest candidate, so overhanging ideals are charged.
    pad = extent - min(height, width) + 2
    y0, x0 = top - pad, left - pad
    size_y, size_x = height + 2 * pad, width + 2 * pad
    blob = np.zeros((size_y, size_x), dtype=bool)
    blob[rows - y0, cols - x0] = True
    ys = (np.arange(size_y) + y0 + 0.5)[:, None]
    xs = (np.arange(size_x) + x0 + 0.5)[None, :]
    cx = (left + right) / 2
    n_pixels = rows.size
    best_shape, best_error = "other", math.inf
    for shape in SHAPES:
        for side in (extent - 0.5, extent, extent + 0.5, extent + 1.0):
            # Square and circle sit centred in the box; a triangle stands on the box's bottom edge, since
            # its apex rows may hold no pixel centre at all.
            shape_top = bottom - side if shape == "triangle" else (top + bottom - side) / 2
            ideal = _ideal_mask(shape, side, shape_top, cx, ys, xs)
            error = int(np.count_nonzero(ideal ^ blob)) / n_pixels
            if error < best_error:
                best_shape, best_error = shape, error
    return best_shape if best_error <= MAX_SHAPE_ERROR else "other"


def find_objects(image: Image.Image | np.ndarray, min_area_frac: float = MIN_AREA_FRAC) -> list[DetectedObject]:
    """Every blob of one palette colour in the picture, largest first.

    Pixels are classified to a palette colour or background (see :func:`_classify_pixels`), cut into
    8-connected blobs per colour, and blobs smaller than ``min_area_frac`` of the picture (and than
    three pixels) are dropped as specks. Nothing is merged: two blobs of one colour are two objects.
    """
    return _objects_of(_classify_pixels(_to_rgb_array(image)), min_area_frac)


def _objects_of(classes: np.ndarray, min_area_frac: float = MIN_AREA_FRAC) -> list[DetectedObject]:
    """:func:`find_objects` on pixels already classified."""
    h, w = classes.shape
    rows, cols, fg_classes, component = _label_components(classes)
    if component.size == 0:
        return []
    counts = np.bincount(component)
    min_pixels = max(MIN_AREA_PIXELS, min_area_frac * h * w)
    keep = np.nonzero(counts >= min_pixels)[0]
    # Group the pixels by component once, then slice each kept blob out (no full-picture mask per blob).
    order = np.argsort(component, kind="stable")
    starts = np.concatenate(([0], np.cumsum(counts)))
    found: list[DetectedObject] = []
    for k in keep:
        members = order[starts[k] : starts[k + 1]]
        r, c = rows[members], cols[members]
        top, bottom = int(r.min()), int(r.max()) + 1
        left, right = int(c.min()), int(c.max()) + 1
        n_pixels = int(members.size)
        shape = _classify_shape(r, c, top, bottom, left, right)
        box_w, box_h = (right - left) / w, (bottom - top) / h
        # Side from the pixel count and the shape's ideal fill, averaged with the box: blur shaves a pixel
        # off a box's extent (which at S = 32 is 0.03, the gap between the size ranges) but hardly changes
        # the area.
        area_side = math.sqrt(n_pixels / (h * w) / _IDEAL_FILL.get(shape, 1.0))
        side = 0.5 * (max(box_w, box_h) + area_side)
        found.append(
            DetectedObject(
                colour=_COLOUR_NAMES[int(fg_classes[members[0]])],
                pixels=n_pixels,
                cx=(left + right) / 2 / w,
                cy=(top + bottom) / 2 / h,
                width=box_w,
                height=box_h,
                fill=n_pixels / ((right - left) * (bottom - top)),
                shape=shape,
                size="large" if side >= SIZE_THRESHOLD else "small",
            )
        )
    found.sort(key=lambda o: -o.pixels)
    return found


def edge_softness(image: Image.Image | np.ndarray) -> float:
    """How many pixels wide, on average, the soft band along the objects' outlines is: soft pixels (neither
    black nor a palette colour, see :data:`FLAT_TOLERANCE`) per outline pixel of the palette-coloured
    blobs. 0 for the spec's own pictures; a picture with soft pixels and no object at all scores its
    soft pixel count."""
    rgb = _to_rgb_array(image)
    return _softness_of(rgb, _classify_pixels(rgb))


def _softness_of(rgb: np.ndarray, classes: np.ndarray) -> float:
    """:func:`edge_softness` of a picture whose pixels are already classified."""
    dist_sq = ((rgb[..., None, :] - _FLAT_COLOURS) ** 2).sum(axis=-1).min(axis=-1)
    soft = int(np.count_nonzero(dist_sq > FLAT_TOLERANCE**2))
    fg = np.pad(classes >= 0, 1)
    inner = fg[1:-1, 1:-1]
    interior = inner & fg[:-2, 1:-1] & fg[2:, 1:-1] & fg[1:-1, :-2] & fg[1:-1, 2:]
    outline = int(np.count_nonzero(inner & ~interior))
    return soft / outline if outline else float(soft)


# --- Judging one picture -----------------------------------------------------------------------------


@dataclass
class Judgement:
    """How one picture fares against its caption. ``size`` is None when the caption names no size;
    ``position`` is the position phrase for one object and the relation for two."""

    n_objects: int  # objects the caption names
    held_out: bool  # the caption names a held-out colour-shape pair
    colour: bool
    shape: bool
    size: bool | None
    position: bool
    no_extra: bool
    full: bool
    softness: float = 0.0  # edge_softness of the picture; not part of `full`
    clean: bool = True  # softness <= MAX_EDGE_SOFTNESS: flat colours, sharp edges


def _in_region(obj: DetectedObject, phrase: str) -> bool:
    (x_lo, x_hi), (y_lo, y_hi) = POSITIONS[phrase]
    tol = POSITION_TOLERANCE
    return x_lo - tol <= obj.cx <= x_hi + tol and y_lo - tol <= obj.cy <= y_hi + tol


def _relation_holds(a: DetectedObject, b: DetectedObject, relation: str) -> bool:
    """``a relation b`` by the dominant axis: the offset along the relation's axis has the right sign,
    is clearly more than nothing, and is larger than the offset across."""
    dx, dy = a.cx - b.cx, a.cy - b.cy
    (dx_lo, dx_hi), (dy_lo, dy_hi) = RELATIONS[relation]
    if abs(dx_lo + dx_hi) > abs(dy_lo + dy_hi):  # horizontal relation; its sign from the spec's range
        along, across, sign = dx, dy, math.copysign(1.0, dx_lo + dx_hi)
    else:
        along, across, sign = dy, dx, math.copysign(1.0, dy_lo + dy_hi)
    return sign * along > RELATION_MIN_OFFSET and abs(across) < abs(along)


def judge(image: Image.Image | np.ndarray, caption: str | CaptionMeaning) -> Judgement:
    """Score a picture against a caption (text in the Shapes grammar, or its parsed meaning).

    Each named object is looked up by colour: its colour is there, its blob (the largest of that colour)
    has the named shape and, where the caption says one, the named size; the one object sits in the
    phrase's region (with :data:`POSITION_TOLERANCE`), or the first object stands in the relation to the
    second. ``no_extra`` fails for any blob beyond the named ones, including a second blob of a named
    colour. ``full`` needs every check (size only when said).
    """
    meaning = read_caption(caption) if isinstance(caption, str) else caption
    named = meaning.objects
    one = len(named) == 1 and meaning.position in POSITIONS
    two = len(named) == 2 and meaning.relation in RELATIONS
    if not (one or two):
        raise ValueError(f"a caption names one object with a position or two with a relation, got {meaning!r}.")
    rgb = _to_rgb_array(image)
    classes = _classify_pixels(rgb)  # once, for the objects and for the softness
    found = _objects_of(classes)
    by_colour: dict[str, list[DetectedObject]] = {}
    for obj in found:  # largest first, so by_colour[c][0] is the main blob of colour c
        by_colour.setdefault(obj.colour, []).append(obj)

    blobs = [by_colour.get(colour, [None])[0] for _, colour, _ in named]
    colour_ok = all(b is not None for b in blobs)
    shape_ok = colour_ok and all(b.shape == shape for b, (_, _, shape) in zip(blobs, named))
    said_sizes = [(b, size) for b, (size, _, _) in zip(blobs, named) if size is not None]
    size_ok: bool | None = None
    if said_sizes:
        size_ok = all(b is not None and b.size == size for b, size in said_sizes)

    if not colour_ok:
        position_ok = False
    elif one:
        position_ok = _in_region(blobs[0], meaning.position)
    else:
        position_ok = _relation_holds(blobs[0], blobs[1], meaning.relation)

    # A blob is extra when its colour is not named, or named fewer times than it has blobs (a second
    # blob of a named colour is a second object, even if the main one is right).
    mentions: dict[str, int] = {}
    for _, colour, _ in named:
        mentions[colour] = mentions.get(colour, 0) + 1
    no_extra = all(len(objs) <= mentions.get(colour, 0) for colour, objs in by_colour.items())

    held_out = any((colour, shape) in HELD_OUT_PAIRS for _, colour, shape in named)
    full = colour_ok and shape_ok and size_ok is not False and position_ok and no_extra
    softness = _softness_of(rgb, classes)
    return Judgement(
        n_objects=len(named),
        held_out=held_out,
        colour=colour_ok,
        shape=shape_ok,
        size=size_ok,
        position=position_ok,
        no_extra=no_extra,
        full=full,
        softness=round(softness, 3),
        clean=softness <= MAX_EDGE_SOFTNESS,
    )


# --- Summaries ---------------------------------------------------------------------------------------

_CHECKS: tuple[str, ...] = ("colour", "shape", "size", "position", "no_extra", "full", "clean")


def _group_summary(judgements: list[Judgement]) -> dict:
    n = len(judgements)
    sized = [j for j in judgements if j.size is not None]
    out: dict = {"n": n, "n_size": len(sized)}
    correct: dict[str, int] = {}
    for check in _CHECKS:
        pool = sized if check == "size" else judgements
        k = sum(bool(getattr(j, check)) for j in pool)
        correct[check] = k
        # An empty group has no accuracy (None), rather than a misleading 0 or 1.
        out[check] = round(k / len(pool), 4) if pool else None
    out["correct"] = correct
    out["edge_softness"] = round(sum(j.softness for j in judgements) / n, 3) if n else None
    return out


def summarise(judgements: list[Judgement]) -> dict:
    """Accuracies (0-1, 4 decimals) per group: ``all``, ``one_object``, ``two_object``, ``held_out``,
    ``seen``.

    Each group gives ``n`` (pictures), ``n_size`` (those whose caption says a size, the pool of the size
    accuracy), one accuracy per check (``colour``, ``shape``, ``size``, ``position``, ``no_extra``,
    ``full``, and ``clean``, which ``full`` does not include; None for an empty pool), ``correct``: the
    counts behind them, and ``edge_softness``: the mean of the pictures' (see :func:`edge_softness`).
    """
    groups = {
        "all": judgements,
        "one_object": [j for j in judgements if j.n_objects == 1],
        "two_object": [j for j in judgements if j.n_objects == 2],
        "held_out": [j for j in judgements if j.held_out],
        "seen": [j for j in judgements if not j.held_out],
    }
    return {name: _group_summary(js) for name, js in groups.items()}
