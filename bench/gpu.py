"""Speed and memory of the real configuration on one GPU: one JSON line per figure.

    python bench/gpu.py                      # gpt2-vit-b's shapes with random weights, bf16, batches 32/64/128
    python bench/gpu.py --learning-check 8000   # also: train 8,000 Shapes samples at 224 px, judge the result
    python bench/gpu.py --device cpu --preset tiny --batch-sizes 4 --gen-batches 1 2 --repeats 1   # a dry run

Training: pictures/s of the project's own `train_step` with the default recipe, and peak memory. FLOPs per
picture are counted once on the eager model with FlopCounterMode (matmuls, convolutions, attention; not norms
or element-wise work), and reported as a share of the card's dense bf16 peak. Generation: pictures/s at 8
steps with guidance, and the time for one picture. The learning check is the "no loss of quality for speed"
figure: the same number of samples before and after a change, judged on pixels, with the validation loss.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from omni_gpt2o.compute import machine_info  # noqa: E402
from omni_gpt2o.config import get_preset  # noqa: E402
from omni_gpt2o.model import build_model  # noqa: E402
from omni_gpt2o.options import parse_assignments  # noqa: E402
from omni_gpt2o.pipeline import OmniGPT2oPipeline  # noqa: E402
from omni_gpt2o.train import Learner, StepBatch, TrainConfig, train_step  # noqa: E402
from omni_gpt2o.utils import autocast_dtype  # noqa: E402

# Dense bf16 peaks (no sparsity), TFLOP/s, by a part of the card's name; the first match counts.
PEAK_TFLOPS = {"H100 PCIe": 756, "H100": 989, "H200": 989, "A100": 312, "L40S": 362, "L4": 121, "A10": 125,
               "RTX 4090": 165, "RTX 3090": 71}
CAPTIONS = ["a small red circle to the left of a large blue square", "two people riding horses on a beach",
            "a yellow triangle at the top", "a kitchen with a white fridge and a wooden table"]


def emit(**figure) -> None:
    print(json.dumps(figure), flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_gb(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None


def timed(fn, device: torch.device, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync(device)
    return (time.perf_counter() - start) / repeats


def training_counts_per_picture(model, cfg: TrainConfig, device: torch.device,
                                amp: torch.dtype | None) -> tuple[float, float]:
    """FLOPs and bytes of activations kept for the backward pass, per picture of a plain step: counted on the
    eager model at batches 2 and 4, the difference halved, so what does not grow with the batch (weights,
    autocast's bf16 copies of them) drops out. Each stored tensor is counted once."""
    counts = []
    for b in (2, 4):
        learner = Learner(model, replace(cfg, learning_rate=0.0), amp)
        saved: dict[int, int] = {}

        def pack(t: torch.Tensor, saved=saved) -> torch.Tensor:
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with FlopCounterMode(display=False) as counter, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            train_step(learner, picture_batch(model, b, device), cfg, step=0)
        counts.append((counter.get_total_flops(), sum(saved.values())))
    (f2, m2), (f4, m4) = counts
    return (f4 - f2) / 2, (m4 - m2) / 2


def picture_batch(model, b: int, device: torch.device) -> StepBatch:
    size = model.config.image_size
    clean = torch.rand(b, 3, size, size, device=device) * 2 - 1
    return StepBatch(clean, (CAPTIONS * b)[:b])


def bench_training(model, cfg: TrainConfig, device, amp, batch_sizes: list[int], repeats: int, peak: float | None):
    flops, activations = training_counts_per_picture(model, cfg, device, amp)
    emit(figure="train_per_picture", gflop=round(flops / 1e9, 1), saved_activations_mb=round(activations / 2**20, 1))
    for b in batch_sizes:
        learner = Learner(model, cfg, amp)
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        batch = picture_batch(model, b, device)
        step = {"n": 0}

        def one_step(batch=batch, learner=learner, step=step):
            train_step(learner, batch, cfg, step["n"])
            step["n"] += 1

        try:
            seconds = timed(one_step, device, repeats)
        except torch.cuda.OutOfMemoryError:
            emit(figure="train", batch=b, out_of_memory=True)
            continue
        rate = b / seconds
        emit(figure="train", batch=b, pictures_per_s=round(rate, 1), step_ms=round(1000 * seconds, 1),
             peak_memory_gb=peak_memory_gb(device), tflops=round(rate * flops / 1e12, 1),
             share_of_peak=round(rate * flops / 1e12 / peak, 3) if peak else None)
        del learner


@torch.no_grad()
def bench_generation(model, device, precision: str, batch_sizes: list[int], repeats: int, steps: int = 8):
    pipe = OmniGPT2oPipeline(model.eval(), device, precision=precision)
    for b in batch_sizes:
        prompts = (CAPTIONS * b)[:b]
        try:
            seconds = timed(lambda prompts=prompts: pipe(prompts, num_inference_steps=steps), device, repeats, 1)
        except torch.cuda.OutOfMemoryError:
            emit(figure="generate", batch=b, out_of_memory=True)
            continue
        emit(figure="generate", batch=b, steps=steps, guidance=True, pictures_per_s=round(b / seconds, 1),
             seconds_per_batch=round(seconds, 3))
    model.train()


def learning_check(preset: str, overrides: dict, device: torch.device, samples: int, batch: int,
                   precision: str) -> None:
    """Train `samples` Shapes pictures at the preset's size, then the validation loss and the pixel judge."""
    from omni_gpt2o.data.shapes import shapes_split
    from omni_gpt2o.evaluate import evaluate_pipeline, split_prompts
    from omni_gpt2o.train import train

    size = get_preset(preset).image_size
    with tempfile.TemporaryDirectory() as tmp:
        train_dir = shapes_split(Path(tmp) / "train", 4000, split="train", seed=0, size=size)
        val_dir = shapes_split(Path(tmp) / "val", 200, split="val", seed=0, size=size)
        cfg = TrainConfig(data=str(train_dir), val_data=str(val_dir), out=str(Path(tmp) / "run"), preset=preset,
                          batch_size=batch, max_steps=samples // batch, device=str(device), precision=precision,
                          max_val_samples=200, progress=False, model_overrides=overrides or None)
        started = time.perf_counter()
        best = train(cfg)
        minutes = (time.perf_counter() - started) / 60
        state = json.loads((Path(cfg.out) / "checkpoints" / "last" / "trainer_state.json").read_text())
        pipe = OmniGPT2oPipeline.from_pretrained(best, device=str(device), precision=precision)
        scores = evaluate_pipeline(pipe, split_prompts(val_dir), progress=False)["scores"]
    emit(figure="learning_check", preset=preset, model=overrides, samples=samples, batch=batch, steps=state["step"],
         best_val_loss=state["best_val"], one_object_full=scores["one_object"]["full"],
         two_object_full=scores["two_object"]["full"], clean=scores["all"].get("clean"),
         train_minutes=round(minutes, 2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="gpt2-vit-b-random")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--precision", default="auto", help="auto: bf16 where the hardware has it")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--gen-batches", type=int, nargs="+", default=[1, 32, 128])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--learning-check", type=int, default=0, metavar="SAMPLES",
                        help="also train this many Shapes samples and judge them (0: skip)")
    parser.add_argument("--check-batch", type=int, default=64)
    parser.add_argument("--model", nargs="*", action="extend", default=[], metavar="KEY=VALUE",
                        help="OmniConfig fields over the preset, e.g. decoder_patch=4 (a lever to compare)")
    parser.add_argument("--count-only", action="store_true", help="FLOPs and saved activations only (any device)")
    args = parser.parse_args()

    device = torch.device(args.device)
    info = machine_info()
    gpu = info["cuda"] if device.type == "cuda" else None
    peak = next((v for k, v in PEAK_TFLOPS.items() if gpu and k in gpu), None)
    overrides = parse_assignments(args.model)
    emit(figure="machine", gpu=gpu, cpu=info["cpu"], torch=info["torch"], peak_bf16_tflops=peak,
         preset=args.preset, model=overrides)
    torch.manual_seed(0)
    model = build_model(get_preset(args.preset).replace(**overrides)).to(device)
    model.train()
    model.text_encoder.use_attention_for(device)
    amp = autocast_dtype(device, args.precision)
    emit(figure="model", trained_m=round(sum(p.numel() for p in model.trainable_parameters()) / 1e6, 1),
         total_m=round(sum(p.numel() for p in model.parameters()) / 1e6, 1), autocast=str(amp))
    cfg = TrainConfig(data="", out="")  # the default recipe
    model.alignment_head.requires_grad_(cfg.align_weight > 0)  # as training does
    if args.count_only:
        flops, activations = training_counts_per_picture(model, cfg, device, amp)
        emit(figure="train_per_picture", gflop=round(flops / 1e9, 1),
             saved_activations_mb=round(activations / 2**20, 1))
        return
    bench_training(model, cfg, device, amp, args.batch_sizes, args.repeats, peak)
    bench_generation(model, device, args.precision, args.gen_batches, args.repeats)
    if args.learning_check:
        del model
        learning_check(args.preset, overrides, device, args.learning_check, args.check_batch, args.precision)


if __name__ == "__main__":
    main()
