"""Every command on a CUDA GPU (skipped without one; `scripts/gpu-check.sh` runs it where there is one)."""

from __future__ import annotations

import json

import pytest
import torch

from omni_gpt2o.cli import main

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def run(*argv: str) -> None:
    assert main([str(a) for a in argv]) == 0, argv


def test_precompute_then_train_from_the_cache_on_cuda(tmp_path, shapes_splits):
    train_dir, val_dir = shapes_splits
    cache = tmp_path / "cache"
    run("precompute", "--data", train_dir, "--cache-dir", cache, "--preset", "micro", "--device", "cuda")
    assert any(cache.rglob("*.npy")) or any(cache.iterdir())
    for name, extra in (("cached", ["--cache-dir", cache, "--align-weight", "0.1"]), ("plain", [])):
        out = tmp_path / name
        run("train", "--data", train_dir, "--val-data", val_dir, "--out", out, "--preset", "micro",
            "--max-steps", 6, "--batch-size", 8, "--device", "cuda", "--log-every", 1, "--sample-steps", 2, *extra)
        state = json.loads((out / "checkpoints" / "last" / "trainer_state.json").read_text())
        losses = [h["loss"] for h in state["history"] if "loss" in h]
        assert state["step"] == 6 and all(torch.isfinite(torch.tensor(losses)))


def test_generate_and_evaluate_on_cuda(tmp_path, shapes_splits, micro_model):
    from omni_gpt2o.checkpoint import save_checkpoint

    _, val_dir = shapes_splits
    ckpt = save_checkpoint(micro_model, tmp_path / "ckpt")
    run("generate", "--checkpoint", ckpt, "--prompt", "a red circle", "Космический кот на Марсе",
        "--out-dir", tmp_path / "pictures", "--device", "cuda", "--steps", 2)
    assert len(list((tmp_path / "pictures").glob("*.png"))) == 2
    run("evaluate", "--checkpoint", ckpt, "--data", val_dir, "--max-prompts", 4, "--device", "cuda", "--steps", 2,
        "--out", tmp_path / "scores.json")
    assert json.loads((tmp_path / "scores.json").read_text())["scores"]["all"]["n"] == 4


def test_the_demo_trains_on_the_gpu(tmp_path):
    out = tmp_path / "demo"
    run("demo", "--out", out, "--minutes", 0.2, "--train-images", 256, "--val-images", 16, "--curve-points", 1,
        "--curve-prompts", 8)
    report = json.loads((out / "report.json").read_text())
    assert report["device"].startswith("cuda") and report["batch_size"] == 128 and report["run"]["steps"] > 0
