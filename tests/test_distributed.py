"""Training on several processes through `accelerate launch` (2 CPU processes, gloo): the same run as one
process, stopped by SIGTERM with its `last` checkpoint saved, and resumed on a different number of processes.
Every run is float64 (`--precision fp64`): sums over processes add in another order than one process does, and
Adam carries float32's rounding of that into ~2e-3 of the weights in 40 steps, which says nothing of the math."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from omni_gpt2o.train import LOG_DECIMALS, TrainConfig, train

from .numerics import assert_same_math

ROOT = Path(__file__).resolve().parent.parent
STEPS = 40

pytestmark = pytest.mark.skipif(shutil.which("accelerate", path=str(Path(sys.executable).parent)) is None,
                                reason="accelerate's launcher is not installed")


def settings(shapes_splits, out: Path) -> dict:
    train_dir, val_dir = shapes_splits
    return dict(data=str(train_dir), val_data=str(val_dir), out=str(out), preset="micro", batch_size=8,
                max_steps=STEPS, learning_rate=3e-3, ema_decay=0.9, log_every=1, sample_steps=2, precision="fp64",
                device="cpu")


def launch_two(cfg: dict) -> subprocess.Popen:
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in cfg.items()]
    accelerate = str(Path(sys.executable).parent / "accelerate")
    cmd = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision",
           "no", "--dynamo_backend", "no", "--main_process_port", "29517", str(ROOT / "tests" / "train_micro.py"),
           "train", *flags]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)


def history(run: Path) -> dict[int, float]:
    state = json.loads((run / "checkpoints" / "last" / "trainer_state.json").read_text())
    return {h["step"]: h["loss"] for h in state["history"] if "loss" in h}


def test_two_processes_train_as_one_and_resume_on_one(tmp_path, shapes_splits):
    # Two processes, each with half of every batch of 8; stopped by SIGTERM once the first epoch (12 steps) is in.
    two = launch_two(settings(shapes_splits, tmp_path / "two"))
    output = []
    for line in two.stdout:
        output.append(line)
        if "epoch 1: val loss" in line:
            os.killpg(two.pid, signal.SIGTERM)  # as a cluster's scheduler stops a job: every process gets it
            break
    output += two.stdout.readlines()
    assert two.wait(timeout=120) != 0
    log = "".join(output)
    assert "stopped at step" in log and "resume with --checkpoint-path" in log, log[-3000:]
    stopped = json.loads((tmp_path / "two" / "checkpoints" / "last" / "trainer_state.json").read_text())["step"]
    assert 12 <= stopped < STEPS

    # One process, the same global batch, straight through.
    train(TrainConfig(**settings(shapes_splits, tmp_path / "one"), progress=False))
    losses_one, losses_two = history(tmp_path / "one"), history(tmp_path / "two")
    assert sorted(losses_two) == list(range(1, stopped + 1))
    for step, loss in losses_two.items():  # the same pictures, the same draws: the same losses, as logged
        assert loss == pytest.approx(losses_one[step], rel=0, abs=1.5 * 10.0**-LOG_DECIMALS), step

    # The two-process run resumed on one process ends where the straight run did.
    train(TrainConfig(**settings(shapes_splits, tmp_path / "two"), progress=False,
                      checkpoint_path=str(tmp_path / "two" / "checkpoints" / "last")))
    ends = [tmp_path / run / "checkpoints" / "last" for run in ("one", "two")]
    assert [json.loads((e / "trainer_state.json").read_text())["step"] for e in ends] == [STEPS, STEPS]
    a, b = (load_file(str(e / "model.safetensors")) for e in ends)
    assert a.keys() == b.keys()
    for name in a:  # float64 throughout: equal to float64's rounding (tests/numerics.py)
        assert_same_math(b[name], a[name])
    best = [json.loads((e / "trainer_state.json").read_text())["best_val"] for e in ends]
    assert best[0] == pytest.approx(best[1], rel=0, abs=1.5 * 10.0**-LOG_DECIMALS)  # as logged
