"""The main job end to end, on a few seconds of training: data, run, checkpoint, samples, scores, curve."""

from __future__ import annotations

import json

import pytest
from PIL import Image

import omni_gpt2o.train.loop as train_loop
from omni_gpt2o.demo import SAMPLE_PROMPTS, run_demo
from omni_gpt2o.pipeline import OmniGPT2oPipeline


def test_demo_writes_a_usable_checkpoint_samples_and_a_scored_report(tmp_path, monkeypatch, capsys):
    clock = {"now": 0.0}

    def fake_clock() -> float:  # every reading is 1 s later: snapshots fall on known steps, whatever the CPU
        clock["now"] += 1.0
        return clock["now"]

    monkeypatch.setattr(train_loop.time, "perf_counter", fake_clock)
    report = run_demo(tmp_path, minutes=0.4, train_images=64, val_images=8, batch_size=8, curve_points=2,
                      curve_prompts=4)
    monkeypatch.undo()
    printed = capsys.readouterr().out
    assert "the 0.4-minute budget gives about" in printed  # the early forecast of the run's steps

    on_disk = json.loads((tmp_path / "report.json").read_text())
    assert on_disk["scores"] == report["scores"]
    assert on_disk["training"]["step"] > 0
    for group in ("one_object", "two_object", "held_out", "seen"):
        assert group in report["scores"]
    assert report["scores"]["all"]["n"] == 8  # one prompt per validation picture
    trained = json.loads((tmp_path / "run" / "train_config.json").read_text())
    assert trained["learning_rate"] == pytest.approx(1e-3 / 2**0.5)  # 1e-3 at 16 pictures, by the batch's root

    # What the run cost and where: steps, FLOPs, the CPU's flags and the precision beside every time.
    run = report["run"]
    assert run["steps"] == report["training"]["step"] and 0 <= run["rollout_steps"] <= run["steps"]
    assert run["step_gflop"]["plain"] < run["step_gflop"]["rollout"]
    assert run["tflop"] * 1e3 == pytest.approx(run["rollout_steps"] * run["step_gflop"]["rollout"] + (
        run["steps"] - run["rollout_steps"]) * run["step_gflop"]["plain"], rel=0.01)
    assert report["precision"] in ("fp32", "bf16") and "cpu" in report["machine"] and "isa" in report["machine"]

    curve = report["learning_curve"]
    assert [p["snapshot"] for p in curve] == ["min-000.2", "min-000.4"]
    assert all(p["scores"]["all"]["n"] == 4 for p in curve)  # the curve is scored on fewer captions
    assert curve[0]["step"] < curve[1]["step"] <= report["training"]["step"]
    assert (tmp_path / "learning_curve.png").is_file()

    with Image.open(tmp_path / "samples.png") as grid:
        assert grid.width > 64 * 4 and grid.height > 64 * (len(SAMPLE_PROMPTS) // 4)
    image = OmniGPT2oPipeline.from_pretrained(tmp_path / "checkpoint", device="cpu")(
        "a red circle on the left", num_inference_steps=2).images[0]
    assert image.size == (64, 64)


def test_demo_refuses_a_preset_it_cannot_build_offline_before_writing_anything(tmp_path):
    with pytest.raises(ValueError, match="gpt2-vit-b.*omni-gpt2o train --preset gpt2-vit-b"):
        run_demo(tmp_path / "demo", preset="gpt2-vit-b")
    assert not (tmp_path / "demo").exists()


def test_demo_command_trains_the_preset_it_is_given(tmp_path, monkeypatch):
    import omni_gpt2o.demo as demo_module
    from omni_gpt2o.cli import main

    given = {}
    monkeypatch.setattr(demo_module, "run_demo", lambda out, **kwargs: given.update(kwargs))
    assert main(["demo", "--out", str(tmp_path), "--preset", "tiny-hour", "--minutes", "1"]) == 0
    assert given["preset"] == "tiny-hour" and given["minutes"] == 1
    assert main(["demo", "--out", str(tmp_path)]) == 0 and given["preset"] == "tiny"


def test_demo_trains_either_preset_at_the_cpu_batch_and_scales_the_rate_with_a_batch_given(tmp_path, monkeypatch):
    import omni_gpt2o.demo as demo_module

    class Stop(Exception):
        pass

    chosen = {}

    def record(cfg):
        chosen[cfg.preset, cfg.batch_size] = cfg.learning_rate
        raise Stop

    monkeypatch.setattr(demo_module, "train", record)
    for preset in ("tiny", "tiny-hour"):
        with pytest.raises(Stop):
            run_demo(tmp_path / preset, preset=preset, device="cpu", train_images=4, val_images=4)
    with pytest.raises(Stop):
        run_demo(tmp_path / "b64", preset="tiny", device="cpu", train_images=4, val_images=4, batch_size=64)
    assert chosen == {("tiny", 16): pytest.approx(1e-3), ("tiny-hour", 16): pytest.approx(1e-3),
                      ("tiny", 64): pytest.approx(2e-3)}


def test_the_demo_trains_on_emoji_and_judges_each_category(tmp_path, monkeypatch):
    from omni_gpt2o import emoji_judge
    from omni_gpt2o.data import emoji as emoji_data

    monkeypatch.setattr(emoji_data, "TRAIN_SCENES", 16)  # fewer pictures, the same rules
    monkeypatch.setattr(emoji_data, "EVAL_PER_CATEGORY", 2)
    few = emoji_data.catalogue()[::60]  # the judge over fewer emoji (and every one the val split asks for): fast
    asked = {o for p in emoji_data.plan_split("val", 0) for o in p.emojis}
    monkeypatch.setattr(emoji_judge, "catalogue", lambda: tuple(set(few) | asked))
    clock = {"now": 0.0}

    def fake_clock() -> float:
        clock["now"] += 1.0
        return clock["now"]

    monkeypatch.setattr(train_loop.time, "perf_counter", fake_clock)
    report = run_demo(tmp_path, minutes=0.1, batch_size=8, data="emoji", val_images=14)
    monkeypatch.undo()
    assert report["data"] == "emoji" and report["learning_curve"] is None and report["training"]["step"] > 0
    scores = report["scores"]
    assert {"trained", "held_out_tones", "scenes", "russian"} <= set(scores) and scores["scenes"]["n"] == 4
    assert "right_tone" in scores["held_out_tones"] and 0 <= scores["all"]["lite0_top5"] <= 1
    assert "кот слева от ракеты" in report["sample_prompts"]
    assert (tmp_path / "data" / "emoji-train" / "ATTRIBUTION.txt").is_file()
    from omni_gpt2o.evaluate import is_emoji_split

    assert is_emoji_split(tmp_path / "data" / "emoji-train")  # its objects start megabytes into the index
    assert not is_emoji_split(tmp_path / "data" / "emoji-train" / "images")


def test_a_comparison_sheet_puts_each_run_in_a_row_and_each_prompt_in_a_column():
    from PIL import Image

    from omni_gpt2o.utils import comparison_sheet

    red, blue = Image.new("RGB", (8, 8), (255, 0, 0)), Image.new("RGB", (8, 8), (0, 0, 255))
    rows = [("run a", [red, blue]), ("run b", [blue, red])]
    sheet = comparison_sheet(["a red square", "красный квадрат слева"], rows, side=32, label_width=40)
    head = sheet.height - 2 * 32
    assert sheet.size == (40 + 2 * 32, head + 2 * 32) and head > 0
    assert sheet.getpixel((40 + 16, head + 16)) == (255, 0, 0)  # run a, first prompt
    assert sheet.getpixel((40 + 32 + 16, head + 16)) == (0, 0, 255)
    assert sheet.getpixel((40 + 16, head + 32 + 16)) == (0, 0, 255)  # run b, first prompt
    assert sheet.crop((40, 0, 40 + 32, head)).getextrema() != ((255, 255),) * 3  # the heading is written
