"""The emoji data set: what docs/emoji.md promises of its pictures, captions and held-out combinations."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from omni_gpt2o.data import emoji as emoji_data
from omni_gpt2o.data.emoji import (
    NEW_FRAMES,
    OTHER_LANGUAGES,
    RUSSIAN,
    TONES,
    catalogue,
    held_out_names,
    make_emoji,
    pair_held_out,
    plan_split,
    render,
    toned_bases,
    tones_of,
)
from omni_gpt2o.fileio import OmniError


@pytest.fixture(scope="module")
def emojis():
    return catalogue()


@pytest.fixture(scope="module")
def train_plan(emojis):
    return plan_split("train", 0, emojis)


def ink_box(picture: Image.Image) -> tuple[int, int, int, int]:
    """Left, top, right, bottom of everything that is not white."""
    ink = np.asarray(picture.convert("RGB")).min(axis=2) < 250
    ys, xs = np.nonzero(ink)
    return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1


def test_the_catalogue_holds_the_drawable_emoji_with_their_names(emojis):
    assert 3900 < len(emojis) < 4000  # 3,963 fully qualified, 19 the font has no glyph for
    by_char = {e.char: e for e in emojis}
    assert by_char["🍎"].name == "red apple" and "apple" in by_char["🍎"].aliases
    assert by_char["👍🏿"].name == "thumbs up dark skin tone"
    assert dict(by_char["🍎"].names)["ru"] == "красное яблоко"
    assert len(toned_bases(emojis)) > 300


@pytest.mark.parametrize("size", [32, 64])
def test_one_emoji_is_fitted_to_80_percent_and_centred_on_white(size):
    picture, (box,) = render(("🍎",), size)
    assert picture.size == (size, size) and picture.getpixel((0, 0)) == (255, 255, 255)
    left, top, right, bottom = ink_box(picture)
    assert max(right - left, bottom - top) == pytest.approx(0.8 * size, abs=1.5)
    assert (left + right) / 2 == pytest.approx(size / 2, abs=1) and (top + bottom) / 2 == pytest.approx(size / 2, abs=1)
    assert max(box[2], box[3]) == round(0.8 * size)


@pytest.mark.parametrize(("relation", "axis", "first"), [("to the left of", 0, 0.27), ("to the right of", 0, 0.73),
                                                          ("above", 1, 0.27), ("below", 1, 0.73)])
def test_two_emoji_sit_at_0_27_and_0_73_along_the_relation(relation, axis, first):
    size = 64
    _, boxes = render(("🐱", "🚀"), size, relation)
    centres = [(b[axis] + b[axis + 2] / 2) / size for b in boxes]
    across = [(b[1 - axis] + b[3 - axis] / 2) / size for b in boxes]
    assert centres[0] == pytest.approx(first, abs=0.02) and centres[1] == pytest.approx(1 - first, abs=0.02)
    assert across == pytest.approx([0.5, 0.5], abs=0.02)
    assert all(max(b[2], b[3]) == round(0.4 * size) for b in boxes)


def test_a_split_is_byte_identical_for_a_seed_and_holds_its_ground_truth(tmp_path):
    a = make_emoji(tmp_path / "a", split="test", size=32, seed=3)
    b = make_emoji(tmp_path / "b", split="test", size=32, seed=3)
    c = make_emoji(tmp_path / "c", split="test", size=32, seed=4)
    assert (a / "captions.json").read_bytes() == (b / "captions.json").read_bytes()
    assert (a / "captions.json").read_bytes() != (c / "captions.json").read_bytes()
    names = sorted(p.name for p in (a / "images").iterdir())
    assert names == sorted(p.name for p in (b / "images").iterdir())
    assert all((a / "images" / n).read_bytes() == (b / "images" / n).read_bytes() for n in names[::50])
    index = json.loads((a / "captions.json").read_text())
    assert {i["category"] for i in index["images"]} == set(emoji_data.CATEGORIES["test"])
    first = index["objects"][0]
    assert set(first) >= {"image_id", "emoji", "name", "bbox"}
    assert "OpenMoji" in (a / "ATTRIBUTION.txt").read_text() and "CC BY-SA 4.0" in (a / "ATTRIBUTION.txt").read_text()


def test_training_never_shows_a_held_out_tone_and_shows_every_base_and_tone(emojis, train_plan):
    held = held_out_names(emojis)
    shown = {e.name for pic in train_plan for e in pic.emojis}
    said = {c for pic in train_plan for c in pic.captions}
    assert not shown & set(held)
    # Never said, in any frame. ("woman artist medium-light skin tone" may be: another base's composition.)
    assert not said & {frame.format(name=name) for name in held for frame in emoji_data.TRAIN_FRAMES}
    assert {base for base, _ in held.values()} <= shown  # every base, alone
    for base in {b for b, _ in held.values()}:
        assert sum(f"{base} {tone}" in shown for tone in TONES) == len(TONES) - 1  # and with its other tones
    assert all(any(name.endswith(tone) for name in shown) for tone in TONES)
    assert not any(tones_of(e) >= 2 for pic in train_plan for e in pic.emojis)  # two skin tones: never trained


def test_training_pairs_and_wordings_are_never_the_held_out_ones(emojis, train_plan):
    scenes = [pic for pic in train_plan if pic.relation]
    assert len(scenes) == emoji_data.TRAIN_SCENES
    assert not any(pair_held_out(pic.emojis[0].name, pic.emojis[1].name) for pic in scenes)
    english = {e.name for e in emojis}
    for pic in train_plan:
        for caption in pic.captions:
            assert all(e.name in caption for e in pic.emojis) and not any(f in caption for f in NEW_FRAMES)
    val = plan_split("val", 0, emojis)
    assert all(pair_held_out(p.emojis[0].name, p.emojis[1].name) for p in val if p.category == "scenes")
    aliases = [p.captions[0] for p in val if p.category == "aliases"]
    assert aliases and not any(p.emojis[0].name in c for p, c in zip(
        [p for p in val if p.category == "aliases"], aliases) if p.emojis[0].name not in english)
    russian = {p.captions[0] for p in val if p.category == "russian"}
    assert all(dict(p.emojis[0].names)[RUSSIAN] == p.captions[0] for p in val if p.category == "russian")
    assert not russian & {c for pic in train_plan for c in pic.captions}
    assert all(p.captions[0] in dict(p.emojis[0].names).values() and
               any(lang in OTHER_LANGUAGES for lang, n in p.emojis[0].names if n == p.captions[0])
               for p in val if p.category == "languages")


def test_a_changed_font_or_a_pillow_without_libraqm_is_one_line_and_writes_nothing(tmp_path, monkeypatch):
    for cached in (emoji_data.catalogue, emoji_data._font, emoji_data.glyph):
        cached.cache_clear()
    monkeypatch.setattr(emoji_data, "FONT_SHA256", "0" * 64)
    with pytest.raises(OmniError, match="sha256"):
        make_emoji(tmp_path / "changed", split="val", size=32)
    monkeypatch.undo()
    monkeypatch.setattr(emoji_data.features, "check", lambda feature: False)
    with pytest.raises(OmniError, match="libraqm"):
        make_emoji(tmp_path / "no-raqm", split="val", size=32)
    monkeypatch.undo()
    assert not (tmp_path / "changed").exists() and not (tmp_path / "no-raqm").exists()
    for cached in (emoji_data.catalogue, emoji_data._font, emoji_data.glyph):
        cached.cache_clear()
