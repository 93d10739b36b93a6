"""Stable Diffusion drafts, offline: a tiny SD pipeline built from configs and saved like a download."""

import json

import numpy as np
import pytest
import torch

from omni_gpt2o import sd_drafts
from omni_gpt2o.checkpoint import save_checkpoint
from omni_gpt2o.cli import main
from omni_gpt2o.data.dataset import read_split
from omni_gpt2o.fileio import OmniError
from omni_gpt2o.sd_drafts import SDDraftConfig, SDDraftSource, draft_store, prepare_drafts

from .numerics import assert_same_math
from .sd_tiny import make_tiny_sd


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    return make_tiny_sd(tmp_path_factory.mktemp("sd") / "tiny-sd")


def _config(tiny_sd) -> SDDraftConfig:
    return SDDraftConfig(model=str(tiny_sd), steps=2, resolution=32)


def _sd_flags(tiny_sd) -> list[str]:
    return ["--draft-model", str(tiny_sd), "--draft-steps", "2", "--draft-resolution", "32"]


@pytest.mark.numerics
def test_sd_source_loads_from_a_folder_and_is_seeded_per_prompt(tiny_sd):
    source = SDDraftSource(_config(tiny_sd))
    source.pipe.to(dtype=torch.float64)  # batch of two against one: other kernels, so the math runs in float64
    both = source(["a red circle on the left", "Космический кот на Марсе"], [3, 4], 32)
    assert both.shape == (2, 3, 32, 32) and both.min() >= -1 and both.max() <= 1
    alone = source(["Космический кот на Марсе"], [4], 32)
    assert_same_math(both[1], alone[0], roundings=4)  # drafts come back float32: a rounding or two of that
    other_seed = source(["Космический кот на Марсе"], [5], 32)
    assert not torch.allclose(alone, other_seed, atol=1e-3)


def test_a_missing_sd_model_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OmniError) as info:
        SDDraftSource(SDDraftConfig(model="omni-gpt2o-tests/no-such-sd"))
    message = str(info.value)
    assert "omni-gpt2o-tests/no-such-sd" in message and "--draft noise" in message and "\n" not in message


def test_prepare_drafts_resumes_after_a_kill(tiny_sd, shapes_splits, monkeypatch, capsys):
    _, val_dir = shapes_splits
    records = read_split(val_dir)
    source = SDDraftSource(_config(tiny_sd))
    calls = {"n": 0}
    real_call = SDDraftSource.__call__

    def dying(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # killed while drawing the third batch
        return real_call(self, *args, **kwargs)

    monkeypatch.setattr(SDDraftSource, "__call__", dying)
    with pytest.raises(KeyboardInterrupt):
        prepare_drafts(val_dir, records, source, 32, batch_size=8, progress=False)
    monkeypatch.setattr(SDDraftSource, "__call__", real_call)
    store = draft_store(val_dir, records, source.config, 32, 0)
    rows = len(store.done)
    assert len(store) == 16 and rows > 16  # two batches stored, the rest not
    first = np.array(store.rows[:16])

    assert main(["prepare-drafts", "--data", str(val_dir), "--preset", "micro", *_sd_flags(tiny_sd)]) == 0
    assert f"drew {rows - 16} drafts" in capsys.readouterr().out
    store = draft_store(val_dir, records, source.config, 32, 0)
    assert store.complete and np.array_equal(np.array(store.rows[:16]), first)  # kept, not redrawn
    # A resumed run stores what an uninterrupted one would: row r is always drawn with seed + r.
    r = rows - 1
    fresh = source([sd_drafts.draft_rows(records)[1][r]], [r], 32)
    assert np.abs(((fresh[0] + 1) * 127.5).round().numpy() - np.array(store.rows[r], dtype=np.float64)).max() <= 1


def test_training_and_generation_with_sd_drafts(tiny_sd, shapes_splits, tmp_path, micro_model, capsys):
    train_dir, _ = shapes_splits
    out = tmp_path / "run"
    argv = ["train", "--data", str(train_dir), "--out", str(out), "--preset", "micro", "--max-steps", "2",
            "--batch-size", "8", "--draft", "sd"]
    assert main(argv) == 1  # no drafts stored yet: one clear line says what to run
    assert "prepare-drafts" in capsys.readouterr().err
    assert main(["prepare-drafts", "--data", str(train_dir), "--preset", "micro", *_sd_flags(tiny_sd)]) == 0
    assert main(argv + ["--sd-draft-ratio", "1.0"]) == 0
    assert "mixing in" in capsys.readouterr().out

    ckpt = save_checkpoint(micro_model, tmp_path / "ckpt")
    gen = tmp_path / "gen"
    assert main(["generate", "--checkpoint", str(ckpt), "--prompt", "a red circle", "Космический кот на Марсе",
                 "--out-dir", str(gen), "--draft", "sd", "--draft-strength", "0.6", "--save-drafts",
                 "--steps", "2", *_sd_flags(tiny_sd)]) == 0
    records = [json.loads(line) for line in (gen / "manifest.jsonl").read_text().splitlines()]
    assert all((gen / r["draft_file"]).is_file() for r in records)
