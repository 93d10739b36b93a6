"""FLOP counts of training steps and the machine description that goes beside every figure."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from omni_gpt2o.compute import ISA_FLAGS, describe_machine, machine_info, training_step_flops
from omni_gpt2o.drafts import make_draft
from omni_gpt2o.train import TrainConfig


def test_step_flops_count_forward_backward_and_the_rollout_forward(micro_model):
    cfg = TrainConfig(data="", out="", batch_size=4, rollout=0.25)
    before = {k: v.clone() for k, v in micro_model.trainable_state_dict().items()}
    flops = training_step_flops(micro_model, cfg)

    # Counting runs a real step on a copy: the model itself is untouched.
    assert all(torch.equal(v, before[k]) for k, v in micro_model.trainable_state_dict().items())

    # A rollout step is a plain step plus one forward of the whole model (no gradient) at the same batch,
    # and the blurs of the two drafts it makes (a few per cent).
    size = micro_model.config.image_size
    ids, mask = micro_model.tokenize(["a small red circle to the left of a large blue square"] * 4)
    draft = make_draft(torch.zeros(4, 3, size, size), torch.ones(4))
    with torch.no_grad(), FlopCounterMode(display=False) as forward:
        micro_model(ids, mask, draft, torch.ones(4))
    extra = flops["rollout"] - flops["plain"]
    assert forward.get_total_flops() <= extra <= 1.05 * forward.get_total_flops()
    # Forward + backward of the trained parts costs more than two forwards, less than four.
    assert 2 * forward.get_total_flops() < flops["plain"] < 4 * forward.get_total_flops()
    assert flops["mean"] == 0.75 * flops["plain"] + 0.25 * flops["rollout"]

    # FLOPs grow with the batch in proportion.
    doubled = training_step_flops(micro_model, cfg, batch_size=8)
    assert abs(doubled["plain"] / flops["plain"] - 2) < 0.05


def test_machine_info_names_the_cpu_flags_and_any_isa_cap(monkeypatch):
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    info = machine_info()
    assert info["isa_limits"] == {"ATEN_CPU_CAPABILITY": "avx2"}
    assert info["cpu_threads"] == torch.get_num_threads()
    if isinstance(info["isa"], dict):
        assert set(info["isa"]) == set(ISA_FLAGS)
    line = describe_machine(info)
    assert info["cpu"] in line and "capped" in line and "threads" in line


def test_auto_precision_is_fp32_on_a_cpu_capped_below_native_bf16(monkeypatch):
    from omni_gpt2o.utils import autocast_dtype

    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # bf16 matmul would be emulated, ~100x slower
    assert autocast_dtype(torch.device("cpu"), "auto") is None
    assert autocast_dtype(torch.device("cpu"), "bf16") == torch.bfloat16  # asked for, given
