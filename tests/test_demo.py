"""The main job end to end, on a few seconds of training: data, run, checkpoint, samples, scores, curve."""

from __future__ import annotations

import json

from PIL import Image

import omni_gpt2o.train as train_module
from omni_gpt2o.demo import SAMPLE_PROMPTS, run_demo
from omni_gpt2o.pipeline import OmniGPT2oPipeline


def test_demo_writes_a_usable_checkpoint_samples_and_a_scored_report(tmp_path, monkeypatch):
    clock = {"now": 0.0}

    def fake_clock() -> float:  # every reading is 1 s later: snapshots fall on known steps, whatever the CPU
        clock["now"] += 1.0
        return clock["now"]

    monkeypatch.setattr(train_module.time, "perf_counter", fake_clock)
    report = run_demo(tmp_path, minutes=0.4, train_images=64, val_images=8, batch_size=8, curve_points=2)
    monkeypatch.undo()

    on_disk = json.loads((tmp_path / "report.json").read_text())
    assert on_disk["scores"] == report["scores"]
    assert on_disk["training"]["step"] > 0
    for group in ("one_object", "two_object", "held_out", "seen"):
        assert group in report["scores"]
    assert report["scores"]["all"]["n"] == 8  # one prompt per validation picture

    curve = report["learning_curve"]
    assert [p["snapshot"] for p in curve] == ["min-000.2", "min-000.4"]
    assert curve[0]["step"] < curve[1]["step"] <= report["training"]["step"]
    if curve[-1]["step"] == report["training"]["step"]:  # the best weights are the last snapshot's: scored once
        assert report["scores"] == curve[-1]["scores"]
    assert (tmp_path / "learning_curve.png").is_file()

    with Image.open(tmp_path / "samples.png") as grid:
        assert grid.width > 64 * 4 and grid.height > 64 * (len(SAMPLE_PROMPTS) // 4)
    image = OmniGPT2oPipeline.from_pretrained(tmp_path / "checkpoint", device="cpu")(
        "a red circle on the left", num_inference_steps=2).images[0]
    assert image.size == (64, 64)
