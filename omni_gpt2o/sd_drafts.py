"""Stable Diffusion drafts: the pipeline's step 2 made real (optional).

A few denoising steps of a text-to-image diffusion model give a rough picture of the prompt; Omni-GPT2o
starts its own sampler from that picture (at `--draft-strength`) instead of from pure noise. Because SD is
far too slow inside a training loop, `prepare-drafts` draws the drafts of every caption of a split once
and stores them beside the data; training then mixes them with procedural drafts (`--draft sd`).

Any diffusers text-to-image model id or local folder works (`AutoPipelineForText2Image`): the default is
`stabilityai/sd-turbo` (1 step, no guidance), and SD 1.5 with 3-10 steps as the original prototype used.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from omni_gpt2o.data.cache import ArrayCache
from omni_gpt2o.fileio import OmniError


@dataclass
class SDDraftConfig:
    model: str = "stabilityai/sd-turbo"
    steps: int = 1
    guidance: float = 0.0  # sd-turbo is trained without classifier-free guidance
    resolution: int = 512  # SD's own picture size; drafts are then resized to the model's
    dtype: str = "auto"  # auto: fp16 on CUDA, fp32 elsewhere; or fp16 | bf16 | fp32


def _dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[name]


class SDDraftSource:
    """Draws rough pictures of prompts with a diffusers text-to-image pipeline."""

    def __init__(self, config: SDDraftConfig | None = None, device: torch.device | str = "cpu"):
        from diffusers import AutoPipelineForText2Image
        from diffusers.utils import logging as diffusers_logging

        self.config = config or SDDraftConfig()
        self.device = torch.device(device)
        diffusers_logging.disable_progress_bar()
        try:
            self.pipe = AutoPipelineForText2Image.from_pretrained(
                self.config.model, torch_dtype=_dtype(self.config.dtype, self.device), use_safetensors=True)
        except (OSError, ValueError) as err:
            raise OmniError(
                f"could not load the Stable Diffusion draft model {self.config.model!r} "
                f"({type(err).__name__}: {str(err).splitlines()[0][:160]}). Ways out: connect to the network once "
                "so the hub can cache it; pass a local folder with --draft-model; set HF_HUB_OFFLINE=1 if it is "
                "already cached; or use --draft noise."
            ) from err
        self.pipe.to(self.device)
        self.pipe.set_progress_bar_config(disable=True)
        if getattr(self.pipe, "safety_checker", None) is not None:
            self.pipe.safety_checker = None  # drafts are internal, never shown as results

    @torch.no_grad()
    def __call__(self, prompts: list[str], seeds: list[int], size: int) -> torch.Tensor:
        """(B, 3, size, size) drafts in [-1, 1]; draft i depends on prompt i and seed i only."""
        gen_device = "cpu" if self.device.type == "mps" else self.device
        generators = [torch.Generator(gen_device).manual_seed(s) for s in seeds]
        res = self.config.resolution
        images = self.pipe(list(prompts), num_inference_steps=self.config.steps,
                           guidance_scale=self.config.guidance, height=res, width=res, generator=generators,
                           output_type="pt").images
        images = images.float().to(self.device)
        if images.shape[-1] != size:
            images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        return images.clamp(0, 1) * 2 - 1


def draft_rows(records: list) -> tuple[list[tuple[int, int]], list[str]]:
    """One row per (picture, caption): the (record, caption) pairs and the captions, in split order."""
    pairs = [(i, j) for i, r in enumerate(records) for j in range(len(r.captions))]
    return pairs, [records[i].captions[j] for i, j in pairs]


def _captions_digest(captions: list[str]) -> str:
    return hashlib.sha256("\n".join(captions).encode()).hexdigest()[:16]


def draft_store(split_dir: str | Path, records: list, config: SDDraftConfig, size: int, seed: int) -> ArrayCache:
    """The drafts of a split, stored beside its data under `drafts/`, keyed by model and settings."""
    _, captions = draft_rows(records)
    key = {"draft": asdict(config), "size": size, "seed": seed, "rows": len(captions),
           "captions": _captions_digest(captions)}
    return ArrayCache(Path(split_dir) / "drafts", "sd", key, len(captions), (3, size, size), "uint8")


def find_draft_store(split_dir: str | Path, records: list, size: int) -> ArrayCache:
    """The most complete stored draft set that fits this split's captions and picture size."""
    _, captions = draft_rows(records)
    digest, best = _captions_digest(captions), None
    for key_file in sorted((Path(split_dir) / "drafts").glob("sd-*/key.json")):
        key = json.loads(key_file.read_text())
        if key["captions"] == digest and key["size"] == size and key["rows"] == len(captions):
            store = ArrayCache(key_file.parent.parent, "sd", key, key["rows"], (3, size, size), "uint8")
            if best is None or len(store) > len(best):
                best = store
    if best is None or len(best) == 0:
        raise OmniError(f"no stored SD drafts for {split_dir} at {size} px: run `omni-gpt2o prepare-drafts "
                        f"--data {split_dir}` first (or train with --draft noise)")
    return best


def prepare_drafts(split_dir: str | Path, records: list, source: SDDraftSource, size: int, seed: int = 0,
                   batch_size: int = 8, progress: bool = True) -> tuple[ArrayCache, int, float]:
    """Draw every caption's draft once (resumable: rows already stored are skipped).

    Row r is drawn with seed `seed + r`, so a resumed run stores what an uninterrupted one would.
    Returns the store, how many drafts were drawn now, and drafts per second.
    """
    from tqdm.auto import tqdm

    store = draft_store(split_dir, records, source.config, size, seed)
    _, captions = draft_rows(records)
    todo = [r for r in range(len(captions)) if not store.done[r]]
    start = time.perf_counter()
    with tqdm(total=len(todo), desc="drafts", unit="img", disable=not progress) as bar:
        for k in range(0, len(todo), batch_size):
            rows = todo[k: k + batch_size]
            drafts = source([captions[r] for r in rows], [seed + r for r in rows], size)
            store.put(rows, ((drafts + 1) * 127.5).round().clamp(0, 255).to(torch.uint8))
            bar.update(len(rows))
            bar.set_postfix(rate=f"{(k + len(rows)) / (time.perf_counter() - start):.2f} img/s")
    elapsed = time.perf_counter() - start
    return store, len(todo), len(todo) / max(elapsed, 1e-9)


def describe(store: ArrayCache) -> str:
    key = json.loads((store.dir / "key.json").read_text())
    return f"{len(store)}/{key['rows']} drafts of {key['draft']['model']} in {store.dir}"
