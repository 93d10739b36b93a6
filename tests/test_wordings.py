"""Unseen-word Shapes splits: words no training caption uses, in every category, read back by the judge."""

from __future__ import annotations

import json
import random
import re

import numpy as np
import pytest
from PIL import Image

from omni_gpt2o.data.shapes import make_shapes, render_scene, sample_scene
from omni_gpt2o.data.wordings import WORDINGS, read_caption, unseen_caption, unseen_captions
from omni_gpt2o.judge import judge

FUNCTION_WORDS = {"a", "an", "the", "of", "on", "at", "in", "to"}  # shared with the grammar, as any sentence's


def _words(captions) -> set[str]:
    return {w for c in captions for w in re.findall(r"[\wё-]+", c.lower())}


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    root = tmp_path_factory.mktemp("wordings")
    train = make_shapes(root / "train", 600, split="train", seed=0, size=32, same_colour_pairs=0.3)
    unseen = make_shapes(root / "unseen", 300, split="val", seed=0, size=32, wording="unseen")
    return [json.loads((d / "captions.json").read_text()) for d in (train, unseen)]


def test_no_content_word_of_an_unseen_caption_is_in_any_training_caption(splits):
    train, unseen = splits
    trained = _words(a["caption"] for a in train["annotations"])
    new = _words(a["caption"] for a in unseen["annotations"])
    assert not (new - FUNCTION_WORDS) & trained
    # Every category has new words in the split: colours, shapes, sizes, places, relations, frames, Russian.
    for word in ("crimson", "azure", "emerald", "ball", "box", "pyramid", "tiny", "huge", "middle", "upper",
                 "beneath", "over", "west", "draw", "with", "красный", "круг", "слева", "над"):
        assert word in new, word


def test_every_unseen_caption_means_its_picture_and_the_judge_reads_it(splits):
    rng = random.Random(3)
    for _ in range(200):
        scene = sample_scene(rng, "val", 64)
        captions = unseen_captions(scene, rng)
        assert len(set(captions)) == len(captions) >= 3
        picture = render_scene(scene, 64)
        for caption in captions:
            assert read_caption(caption).describes(scene), caption
            assert judge(picture, caption).full, caption  # the true picture passes, as for grammar captions
    blank = Image.new("RGB", (64, 64))
    assert not any(judge(blank, c).full for c in captions)  # and an empty picture fails them


def test_each_wording_is_used_and_russian_declines_after_its_relation(splits):
    _, unseen = splits
    captions = [a["caption"] for a in unseen["annotations"]]
    assert any(", with " in c for c in captions) and any(re.search("[а-я]", c) for c in captions)
    rng = random.Random(0)
    for _ in range(100):
        scene = sample_scene(rng, "val", 64, two_object_share=1.0)
        ru = unseen_caption(scene, "russian", rng)
        if scene.relation in ("above", "below"):
            assert re.search(r"(над|под) \w+(ым|им) \w+ом$", ru), ru  # instrumental case
        else:
            assert re.search(r"от \w+(ого|его) \w+а$", ru), ru  # genitive case
    assert set(WORDINGS) == {"synonyms", "paraphrase", "russian"}


def test_unseen_splits_repeat_and_are_for_val_and_test_only(tmp_path):
    a = make_shapes(tmp_path / "a", 20, split="test", seed=5, size=32, wording="unseen")
    b = make_shapes(tmp_path / "b", 20, split="test", seed=5, size=32, wording="unseen")
    assert (a / "captions.json").read_bytes() == (b / "captions.json").read_bytes()
    assert np.array_equal(np.asarray(Image.open(a / "images" / "000000000001.png")),
                          np.asarray(Image.open(b / "images" / "000000000001.png")))
    with pytest.raises(ValueError, match="val and test"):
        make_shapes(tmp_path / "c", 5, split="train", wording="unseen")
    with pytest.raises(ValueError, match="neither"):
        read_caption("a crimson hexagon on the moon")
