"""The emoji judge reads pixels: it retrieves real renders, tells a wrong picture, and judges a scene's halves."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from omni_gpt2o.backbones import ModelLoadError, load_lite0
from omni_gpt2o.config import LITE0
from omni_gpt2o.data.emoji import catalogue, make_emoji, render
from omni_gpt2o.emoji_judge import (
    EmojiJudge,
    base_and_tone,
    frechet_distance,
    halves,
    kernel_distance,
    retrieval_scores,
)

SIZE = 32


@pytest.fixture(scope="module")
def judge():
    """A judge over 120 emoji (every tone of a few bases among them), at 32 px."""
    emojis = catalogue()
    picked = [e for e in emojis if base_and_tone(e.name)[0] in ("thumbs up", "waving hand", "cook")]
    picked += [e for e in emojis[::40] if e not in picked]
    return EmojiJudge(SIZE, picked[:120])


def test_real_renders_are_retrieved_as_themselves(judge):
    pictures = [render((e.char,), SIZE)[0] for e in judge.emojis]
    ranks = judge.rank(pictures, [e.char for e in judge.emojis])
    scores = retrieval_scores(ranks, [e.name for e in judge.emojis])
    assert scores["lite0_top1"] == 1.0 and scores["pixels_top1"] == 1.0
    assert scores["right_base"] == 1.0 and scores["right_tone"] == 1.0


def test_a_smaller_render_is_still_found_and_a_wrong_picture_is_not(judge):
    chars = [e.char for e in judge.emojis]
    small = [render((c,), 16)[0].resize((SIZE, SIZE), Image.Resampling.BICUBIC) for c in chars]
    assert retrieval_scores(judge.rank(small, chars), [e.name for e in judge.emojis])["lite0_top5"] > 0.8
    blank = [Image.new("RGB", (SIZE, SIZE), "white")] * 5
    shifted = [render((c,), SIZE)[0] for c in chars[5:10]]  # each picture asked to be another emoji
    ranks = judge.rank(blank + shifted, chars[:5] * 2)
    assert sum(r == 0 for r in ranks["lite0"]) <= 1 and sum(r == 0 for r in ranks["pixels"]) <= 1


def test_a_scene_is_judged_half_by_half(judge):
    a, b = judge.emojis[3], judge.emojis[50]
    for relation in ("to the left of", "below"):
        picture, _ = render((a.char, b.char), SIZE, relation)
        ranks = judge.rank(halves(picture, relation), [a.char, b.char])
        assert ranks["lite0"] == [0, 0]
        assert judge.rank(halves(picture, relation)[::-1], [a.char, b.char])["lite0"] != [0, 0]


def test_names_split_into_base_and_tone():
    assert base_and_tone("woman artist medium-light skin tone") == ("woman artist", "medium-light skin tone")
    assert base_and_tone("thumbs up light skin tone") == ("thumbs up", "light skin tone")
    assert base_and_tone("red apple") == ("red apple", "")


def test_frechet_and_kernel_distances_measure_a_shift():
    a = torch.randn(400, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    shift = torch.tensor([0.5] * 8, dtype=torch.float64)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(a + shift, a) == pytest.approx(float(shift @ shift), rel=1e-6)  # the means' distance
    b = torch.randn(400, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert abs(kernel_distance(a, b)) < 0.05 < kernel_distance(a + 2 * shift, b)


def test_a_changed_lite0_file_is_one_line(monkeypatch):
    assert load_lite0().num_features == 1280
    monkeypatch.setitem(LITE0, "image_model_sha256", "0" * 64)
    with pytest.raises(ModelLoadError, match="sha256"):
        load_lite0()


def test_evaluate_draws_and_judges_an_emoji_split(tmp_path, judge, micro_model):
    from omni_gpt2o.evaluate import emoji_records, evaluate_emoji, format_emoji_scores, is_emoji_split
    from omni_gpt2o.pipeline import OmniGPT2oPipeline

    split = make_emoji(tmp_path / "val", split="val", size=SIZE)
    assert is_emoji_split(split)
    wanted = {o["emoji"] for r in emoji_records(split, 2) for o in r["objects"]}
    few = EmojiJudge(SIZE, [e for e in catalogue() if e.char in wanted] + list(judge.emojis))  # not all 3,944: fast
    result = evaluate_emoji(OmniGPT2oPipeline(micro_model, "cpu"), split, max_per_category=2, steps=2,
                            progress=False, judge=few)
    scores = result["scores"]
    assert result["prompts"] == 14 and scores["scenes"]["n"] == 4 and scores["all"]["n"] == 16
    assert 0 <= scores["all"]["lite0_top5"] <= 1 and "lite0_fid" in scores["all"]
    assert "held_out_tones" in format_emoji_scores(scores)
