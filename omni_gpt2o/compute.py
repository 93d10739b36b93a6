"""What a training step costs in FLOPs, and what machine a figure was made on.

Wall time depends on the CPU (an AVX512-BF16 core runs this model's bf16 step ~4x faster than an AVX2
core its fp32 step); FLOPs do not. So the demo and the benchmarks report both: the FLOPs of each kind of
training step, counted once with `torch.utils.flop_counter.FlopCounterMode` on the real `train_step`
(forward and backward, the frozen encoders, the rollout's extra forward), and the machine's CPU flags and
precision beside every time. A FLOP count covers matmuls, convolutions and attention: norms,
element-wise work and data loading are not in it, which is why measured time is always reported too.
"""

from __future__ import annotations

import copy
import os
import platform
import tempfile
from dataclasses import replace
from typing import TYPE_CHECKING

import torch
from torch.utils.flop_counter import FlopCounterMode

from omni_gpt2o.utils import cpuinfo

if TYPE_CHECKING:
    from omni_gpt2o.model import OmniGPT2o
    from omni_gpt2o.train import TrainConfig

ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16")
ISA_LIMITS = ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS")  # env vars that cap the ISA


def machine_info() -> dict:
    """The CPU model, the instruction-set flags that decide fp32/bf16 speed, threads and library versions."""
    fields = cpuinfo()
    model = fields.get("model name") or platform.processor() or platform.machine()
    flags = set(fields.get("flags", "").split())  # empty where unknown (not Linux)
    limits = {k: os.environ[k] for k in ISA_LIMITS if k in os.environ}
    return {
        "cpu": model,
        "isa": {f: f in flags for f in ISA_FLAGS} if flags else "unknown",
        "isa_limits": limits,  # set when a faster CPU was made to behave as an AVX2-only one
        "aten_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "platform": platform.platform(),
        "torch": torch.__version__,
    }


def describe_machine(info: dict) -> str:
    """One line for logs and tables: CPU, the flags that matter, threads."""
    isa = info["isa"]
    flags = ", ".join(f for f, on in isa.items() if on) if isinstance(isa, dict) else "flags unknown"
    capped = f"; capped to {info['aten_cpu_capability']} by {', '.join(info['isa_limits'])}" \
        if info["isa_limits"] else ""
    return f"{info['cpu']} ({flags}{capped}), {info['cpu_threads']} threads"


def training_step_flops(model: OmniGPT2o, cfg: TrainConfig, batch_size: int | None = None) -> dict[str, float]:
    """FLOPs of one plain and one rollout training step at `cfg`'s batch size, counted on a copy of
    `model` running the real `train_step` (the copy's weights change; the model's do not).

    Returns {"plain": ..., "rollout": ..., "mean": (1 - rollout) x plain + rollout x rollout step}.
    """
    from omni_gpt2o.data.text_cache import TextStateCache
    from omni_gpt2o.drafts import make_draft
    from omni_gpt2o.train import Learner, StepBatch, alignment_targets, train_step

    b = batch_size or cfg.batch_size
    device = model.separator.device
    twin = copy.deepcopy(model).train()
    cfg = replace(cfg, learning_rate=0.0, gradient_clip=0.0)
    learner = Learner(twin, cfg, None)
    size = twin.config.image_size
    clean = make_draft(torch.zeros(b, 3, size, size, device=device), torch.ones(b, device=device),
                       torch.Generator().manual_seed(0))
    captions = ["a small red circle to the left of a large blue square"] * b
    counts = {}
    with tempfile.TemporaryDirectory() as tmp:
        text = None
        if twin.reader is not None:  # a training step reads the LM's states from the cache: encoded before counting
            text = TextStateCache(tmp, twin)
            text.fill(captions[:1] + [""], progress=False)
        for kind, rollout in (("plain", 0.0), ("rollout", 1.0)):
            with FlopCounterMode(display=False) as counter:
                batch = StepBatch(clean, captions, target=alignment_targets(twin, clean, cfg, None), text_cache=text)
                train_step(learner, batch, replace(cfg, rollout=rollout), step=0)
            counts[kind] = float(counter.get_total_flops())
    counts["mean"] = (1 - cfg.rollout) * counts["plain"] + cfg.rollout * counts["rollout"]
    return counts


def run_flops(step_flops: dict[str, float], steps: int, rollout_steps: int) -> float:
    """FLOPs of a whole run from `training_step_flops` and the run's count of steps and rollout steps."""
    return rollout_steps * step_flops["rollout"] + (steps - rollout_steps) * step_flops["plain"]
