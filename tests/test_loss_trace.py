"""A seeded 30-step run logs the losses it logged when the trace was recorded (committed as test data).

The run trains in float64 (`--precision fp64`) so that the trace is the math, not the CPU's kernels: any change
to what a step computes (draws, drafts, losses, the schedule, the optimizer, the EMA) moves it, while a
reorganisation of the training code must not. It covers rollout steps, a KL schedule and caption dropout.
Record it again only when the training math is meant to change: OMNI_WRITE_GOLDEN=1 pytest tests/test_loss_trace.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from omni_gpt2o.train import LOG_DECIMALS, TrainConfig, train

TRACE = Path(__file__).parent / "data" / "loss_trace_30.json"
KEYS = ("loss", "recon", "kl", "edge", "grad_norm", "lr")
LOGGED_ROUNDING = 1.5 * 10.0 ** -LOG_DECIMALS  # float64 runs differ far below the history's last decimal


def test_30_step_loss_trace_is_unchanged(tmp_path, shapes_splits):
    train_dir, _ = shapes_splits
    cfg = TrainConfig(data=str(train_dir), out=str(tmp_path / "run"), preset="micro", batch_size=8, max_steps=30,
                      learning_rate=3e-3, warmup_epochs=0.1, ema_decay=0.9, rollout=0.3, kl_weight_start=1e-2,
                      caption_dropout=0.2, precision="fp64", progress=False, log_every=1, sample_steps=2)
    train(cfg)
    state = json.loads((tmp_path / "run" / "checkpoints" / "last" / "trainer_state.json").read_text())
    trace = [{k: h[k] for k in ("step", *KEYS) if k in h} for h in state["history"] if "loss" in h]
    assert [h["step"] for h in trace] == list(range(1, 31)) and state["rollout_steps"] > 0
    if os.environ.get("OMNI_WRITE_GOLDEN"):
        rows = ",\n  ".join(json.dumps(h) for h in trace)  # a step a line: a change reads as a diff
        TRACE.write_text(f'{{"rollout_steps": {state["rollout_steps"]},\n "trace": [\n  {rows}\n ]}}\n')
    recorded = json.loads(TRACE.read_text())
    assert state["rollout_steps"] == recorded["rollout_steps"]
    for now, then in zip(trace, recorded["trace"], strict=True):
        assert now.keys() == then.keys(), now["step"]
        for k in now:
            assert abs(now[k] - then[k]) <= LOGGED_ROUNDING * max(1.0, abs(then[k])), (now["step"], k, now[k], then[k])
