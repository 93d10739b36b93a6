"""Training-step and sampling speed of a preset on this machine (a benchmark, not a test).

    .venv/bin/python bench/speed.py --preset tiny --batch-size 32

Prints seconds per training step (fp32 and bf16 autocast), pictures per second when sampling (in the
last precision named), and how the step splits between the frozen and the trained parts. To see what a
CPU without AVX-512 gets, cap a faster one:
`ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ... --precision fp32`.
"""

from __future__ import annotations

import argparse
import time

import torch

from omni_gpt2o.compute import describe_machine, machine_info
from omni_gpt2o.config import get_preset
from omni_gpt2o.drafts import make_draft, sample_strengths
from omni_gpt2o.model import LossWeights, build_model, compute_losses
from omni_gpt2o.pipeline import OmniGPT2oPipeline
from omni_gpt2o.utils import autocast, autocast_dtype

CAPTIONS = ["a picture of a red circle to the left of a blue square", "a large green triangle at the top",
            "there is a yellow circle below a magenta square", "a small cyan square in the center"]


def timed(fn, repeats: int) -> float:
    fn()  # warm-up (oneDNN picks kernels on first use)
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--precision", nargs="+", default=["fp32", "bf16"],
                        help="which to time (bf16 on a CPU without native bf16 is emulated: ~20 s a step)")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = build_model(get_preset(args.preset))
    model.text_encoder.use_attention_for(torch.device("cpu"))
    size, b = model.config.image_size, args.batch_size
    captions = (CAPTIONS * b)[:b]
    clean = torch.rand(b, 3, size, size) * 2 - 1
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=1e-4, fused=True)
    print(f"preset {args.preset}: {sum(p.numel() for p in model.trainable_parameters()) / 1e6:.2f}M trained, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M total; batch {b}; "
          f"{torch.get_num_threads()} threads")
    print(f"machine: {describe_machine(machine_info())}")

    for precision in args.precision:
        amp = autocast_dtype(torch.device("cpu"), precision)

        def step(amp=amp):
            ids, mask = model.tokenize(captions)
            t = sample_strengths(b)
            with autocast(torch.device("cpu"), amp):
                out = model(ids, mask, make_draft(clean, t), t, sample_latents=True)
                target = model.image_encoder(clean)
            loss = compute_losses(out, clean, target, LossWeights())["loss"]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

        def frozen_only(amp=amp):
            ids, mask = model.tokenize(captions)
            with torch.no_grad(), autocast(torch.device("cpu"), amp):
                model.image_encoder(clean)
                model.image_encoder(clean)
                model.text_encoder(model.text_encoder.embed(ids), mask)

        s = timed(step, args.repeats)
        f = timed(frozen_only, args.repeats)
        print(f"{precision}: train step {s * 1000:.0f} ms ({b / s:.0f} pictures/s); "
              f"frozen forwards alone {f * 1000:.0f} ms")

    pipe = OmniGPT2oPipeline(model.eval(), "cpu", precision=args.precision[-1])
    for steps in (1, 8):
        s = timed(lambda: pipe(captions[:16], num_inference_steps=steps), 3)  # noqa: B023
        print(f"sampling {steps} step(s), batch 16, {pipe.autocast}: {16 / s:.1f} pictures/s")


if __name__ == "__main__":
    main()
