"""How fast the command line starts and answers (a benchmark, not a test).

    .venv/bin/python bench/cli_start.py                           # --help, prepare-coco, generate
    .venv/bin/python bench/cli_start.py --checkpoint runs/demo/checkpoint

Every figure is a fresh `omni-gpt2o` process, timed from its start to its exit, with its peak resident memory
(the kernel's count for that process alone):
- `--help` and every subcommand's `--help` (the median of --repeats runs each);
- `prepare-coco` over a captions file with the real captions_train2017.json's structure and size (118,287
  pictures, 591,753 captions, written by bench/coco_index.py's generator);
- `generate` of one prompt from a demo checkpoint (without --checkpoint: the `tiny` preset saved as the demo
  saves it; training changes its weights, not its cost): the time to the first picture on disk, and, inside
  one process, where that time goes (imports, loading, the first call).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from coco_index import make_captions_file  # noqa: E402

from omni_gpt2o.cli import COMMANDS  # noqa: E402
from omni_gpt2o.compute import describe_machine, machine_info  # noqa: E402

# `omni-gpt2o ARGS` as its console script runs it, writing its own peak resident memory (VmHWM) at exit: the
# kernel's per-process maximum that wait4 reports also counts the parent's memory at the fork.
COMMAND = [sys.executable, "-c", """
import atexit, os, sys
def peak():
    with open(os.environ["PEAK_FILE"], "w") as out:
        out.write(next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM")))
atexit.register(peak)
from omni_gpt2o.cli import main
sys.exit(main(sys.argv[1:]))
"""]


def timed(argv: list[str]) -> tuple[float, float]:
    """Wall seconds and peak resident MB of one `omni-gpt2o` process running `argv` to its end."""
    with tempfile.NamedTemporaryFile() as peak:
        start = time.perf_counter()
        done = subprocess.run(COMMAND + argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              env=os.environ | {"PEAK_FILE": peak.name})
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"omni-gpt2o {' '.join(argv)} failed: {done.stderr.decode()[-2000:]}")
        return seconds, int(Path(peak.name).read_text()) / 1024


def median_of(argv: list[str], repeats: int) -> tuple[float, float]:
    runs = [timed(argv) for _ in range(repeats)]
    return statistics.median(r[0] for r in runs), max(r[1] for r in runs)


def first_picture_inside(checkpoint: str, out_dir: Path) -> dict[str, float]:
    """Where a `generate` spends its time before the first picture, in one fresh process."""
    code = f"""
import time; t0 = time.perf_counter()
import torch
from omni_gpt2o.pipeline import OmniGPT2oPipeline
t1 = time.perf_counter()
pipe = OmniGPT2oPipeline.from_pretrained({checkpoint!r}, device="cpu", precision="fp32")
t2 = time.perf_counter()
pipe("a red circle to the left of a blue square", generator=torch.Generator().manual_seed(0)).images[0].save(
    {str(out_dir / "first.png")!r})
t3 = time.perf_counter()
pipe("a red circle to the left of a blue square", generator=torch.Generator().manual_seed(0))
t4 = time.perf_counter()
print(t1 - t0, t2 - t1, t3 - t2, t4 - t3)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    imports, load, first, second = map(float, done.stdout.split())
    return {"imports": imports, "load": load, "first call": first, "second call": second}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", help="a demo checkpoint (default: the tiny preset, saved as the demo does)")
    parser.add_argument("--repeats", type=int, default=5, help="runs of each --help; the median is printed")
    args = parser.parse_args()
    print(f"machine: {describe_machine(machine_info())}", flush=True)

    seconds, mb = median_of(["--help"], args.repeats)
    print(f"omni-gpt2o --help: {seconds:.3f} s, {mb:.0f} MB (median of {args.repeats})", flush=True)
    slowest = max(median_of([name, "--help"], args.repeats) + (name,) for name in COMMANDS)
    print(f"slowest subcommand --help: {slowest[2]}, {slowest[0]:.3f} s, {slowest[1]:.0f} MB", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_captions_file(tmp / "captions_train2017.json")
        (tmp / "train2017").mkdir()
        seconds, mb = timed(["prepare-coco", "--annotations", str(tmp / "captions_train2017.json"),
                             "--images", str(tmp / "train2017"), "--out", str(tmp / "split")])
        size = (tmp / "captions_train2017.json").stat().st_size / 1e6
        print(f"prepare-coco, 118,287 pictures / 591,753 captions ({size:.0f} MB): {seconds:.2f} s, "
              f"{mb:.0f} MB peak (the whole process)", flush=True)

        checkpoint = args.checkpoint
        if checkpoint is None:
            import torch

            from omni_gpt2o.checkpoint import save_checkpoint
            from omni_gpt2o.config import get_preset
            from omni_gpt2o.model import build_model

            torch.manual_seed(0)
            checkpoint = str(tmp / "checkpoint")
            save_checkpoint(build_model(get_preset("tiny")), checkpoint)
        seconds, mb = timed(["generate", "--checkpoint", checkpoint, "--prompt",
                             "a red circle to the left of a blue square", "--out-dir", str(tmp / "out"),
                             "--precision", "fp32"])
        print(f"generate, one prompt (8 steps, guidance, fp32): {seconds:.2f} s to the picture on disk and the "
              f"process's end, {mb:.0f} MB peak", flush=True)
        parts = first_picture_inside(checkpoint, tmp)
        print("inside one process: " + ", ".join(f"{k} {v:.2f} s" for k, v in parts.items()), flush=True)


if __name__ == "__main__":
    main()
