"""Batch generation to files: `DIR/0000.png, ...`, `DIR/manifest.jsonl` and `DIR/grid.png`.

Picture i gets seed `seed + i` and its own generator, so the same checkpoint, prompt, seed and flags
give the same picture whatever else is in the batch.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tqdm.auto import tqdm

from omni_gpt2o.config import DEFAULT_GUIDANCE, SCHEDULE_POWER
from omni_gpt2o.fileio import OmniError, atomic_path
from omni_gpt2o.pipeline import DraftInput, OmniGPT2oPipeline
from omni_gpt2o.utils import image_grid

GRID_PICTURES = 64  # grid.png shows the first 64 pictures with their prompts: a look at a run, not an archive


def read_prompts(path: str | Path) -> list[str]:
    """One prompt per line (UTF-8); blank lines are skipped."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise OmniError(f"prompts file {path} does not exist") from err
    except UnicodeDecodeError as err:
        raise OmniError(f"prompts file {path} is not UTF-8 text") from err
    prompts = [line.strip() for line in text.splitlines() if line.strip()]
    if not prompts:
        raise OmniError(f"prompts file {path} has no prompts")
    return prompts


def generate_to_dir(pipe: OmniGPT2oPipeline, prompts: list[str], out_dir: str | Path, seed: int = 0,
                    steps: int = 8, guidance: float = DEFAULT_GUIDANCE, batch_size: int = 16,
                    draft: DraftInput = None, draft_strength: float = 1.0,
                    save_drafts: bool = False, progress: bool = True,
                    schedule_power: float = SCHEDULE_POWER) -> list[dict]:
    if any(not p.strip() for p in prompts):
        raise OmniError("empty prompt: give some text to draw")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    records, shown = [], []
    for start in tqdm(range(0, len(prompts), batch_size), desc="generate", unit="batch", disable=not progress):
        batch = prompts[start: start + batch_size]
        seeds = [seed + start + i for i in range(len(batch))]
        result = pipe(batch, num_inference_steps=steps, guidance_scale=guidance,
                      generator=[torch.Generator().manual_seed(s) for s in seeds],
                      draft=draft, draft_strength=draft_strength, schedule_power=schedule_power,
                      return_drafts=save_drafts)
        for i, (prompt, s, image) in enumerate(zip(batch, seeds, result.images)):
            name = f"{start + i:04d}.png"
            with atomic_path(out_dir / name) as tmp:
                image.save(tmp, format="PNG")
            record = {"prompt": prompt, "file": name, "seed": s, "steps": steps, "guidance": guidance,
                      "schedule_power": schedule_power}
            if save_drafts and result.drafts is not None:
                draft_name = f"{start + i:04d}_draft.png"
                result.drafts[i].save(out_dir / draft_name, format="PNG")
                record["draft_file"] = draft_name
            records.append(record)
            if len(shown) < GRID_PICTURES:
                shown.append(image)
    with atomic_path(out_dir / "manifest.jsonl") as tmp:
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    with atomic_path(out_dir / "grid.png") as tmp:
        image_grid(shown, [r["prompt"] for r in records[:len(shown)]], cols=4).save(tmp, format="PNG")
    return records
