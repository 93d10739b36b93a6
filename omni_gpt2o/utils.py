"""Small shared helpers: devices, precision, seeding, picture conversions and grids."""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(name)


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """bf16 autocast where it pays: CUDA (fp16 where a GPU lacks bf16), and CPUs with native bf16 matmul
    (AVX512_BF16/AMX); None (fp32) elsewhere."""
    if precision in ("fp32", "fp64"):  # fp64: no autocast, the run's default dtype is float64 (train/loop.py)
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":  # GPUs without bf16; training adds a gradient scaler
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and torch.backends.mkldnn.is_available() and _cpu_has_bf16():
        return torch.bfloat16
    return None


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype):
    """Tensors made without a dtype (parameters, noise, pictures) are `dtype` within; restored after."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Mixed precision in `dtype` on `device`, or nothing when dtype is None (full precision)."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def cpuinfo() -> dict[str, str]:
    """/proc/cpuinfo's first value of each field ("model name", "flags", ...); empty where there is none."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:  # not Linux
        return {}
    fields: dict[str, str] = {}
    for line in lines:
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    return fields


def _cpu_has_bf16() -> bool:
    """Native bf16 matmul: the CPU has AVX512-BF16 or AMX and PyTorch/oneDNN are not capped below it
    (ATEN_CPU_CAPABILITY / ONEDNN_MAX_CPU_ISA, how a fast CPU is made to behave as an AVX2-only one).
    Elsewhere bf16 is emulated, ~100x slower than fp32."""
    flags = cpuinfo().get("flags", "").split()
    isa_cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").upper()
    capped = isa_cap not in ("ALL", "DEFAULT") and "BF16" not in isa_cap and "AMX" not in isa_cap \
        and "FP16" not in isa_cap and "AVX10" not in isa_cap
    return ("avx512_bf16" in flags or "amx_bf16" in flags) and not capped \
        and torch.backends.cpu.get_cpu_capability().startswith("AVX512")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """(B, 3, H, W) in [-1, 1] -> RGB PIL images."""
    arr = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return [Image.fromarray(a.permute(1, 2, 0).cpu().numpy()) for a in arr]


@functools.lru_cache(maxsize=1)
def caption_font() -> ImageFont.ImageFont:
    """DejaVu Sans (Latin, Greek, Cyrillic, Arabic...), which matplotlib ships, for captions under pictures:
    Pillow's own default font has no Cyrillic, so "кот слева от ракеты" came out as boxes. Pillow's default
    where matplotlib's fonts are missing."""
    spec = importlib.util.find_spec("matplotlib")
    for folder in spec.submodule_search_locations if spec and spec.submodule_search_locations else []:
        path = Path(folder) / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
        if path.is_file():
            return ImageFont.truetype(str(path), 10)
    return ImageFont.load_default()


def image_grid(images: Sequence[Image.Image], captions: Sequence[str] | None = None, cols: int = 4,
               scale: int = 2) -> Image.Image:
    """A grid of pictures, each with its caption underneath, for people to look at."""
    if not images:
        raise ValueError("no images for the grid")
    w, h = images[0].size
    w, h = w * scale, h * scale
    font = caption_font()
    line_h = 12
    lines = [_wrap(c, max(8, w // 6)) for c in captions] if captions else [[] for _ in images]
    text_h = line_h * max(len(ls) for ls in lines) + 4 if captions else 0
    rows = (len(images) + cols - 1) // cols
    grid = Image.new("RGB", (cols * w, rows * (h + text_h)), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for i, (img, ls) in enumerate(zip(images, lines)):
        x, y = (i % cols) * w, (i // cols) * (h + text_h)
        grid.paste(img.resize((w, h), Image.NEAREST), (x, y))
        for j, line in enumerate(ls):
            draw.text((x + 2, y + h + 2 + j * line_h), line, fill=(0, 0, 0), font=font)
    return grid


def comparison_sheet(headings: Sequence[str], rows: Sequence[tuple[str, Sequence[Image.Image]]], side: int = 128,
                     label_width: int = 150, heading_lines: int = 6,
                     resample: Image.Resampling = Image.Resampling.NEAREST) -> Image.Image:
    """Pictures in a table for people to compare: a heading over each column (a prompt), a label before each row
    (a run), every picture scaled to `side` pixels (nearest: the pixels as drawn)."""
    font, line_h = caption_font(), 12
    head_h = line_h * heading_lines + 8
    sheet = Image.new("RGB", (label_width + side * len(headings), head_h + side * len(rows)), "white")
    draw = ImageDraw.Draw(sheet)
    for j, heading in enumerate(headings):
        for k, line in enumerate(_wrap(heading, side // 6)[:heading_lines]):
            draw.text((label_width + j * side + 4, 4 + k * line_h), line, fill="black", font=font)
    for i, (label, images) in enumerate(rows):
        draw.text((4, head_h + i * side + side // 2 - 6), label, fill="black", font=font)
        for j, image in enumerate(images):
            cell = image.convert("RGB").resize((side, side), resample)
            sheet.paste(cell, (label_width + j * side, head_h + i * side))
    return sheet


def _wrap(text: str, width: int) -> list[str]:
    words, lines, line = text.split(), [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return lines + [line] if line else lines or [""]
