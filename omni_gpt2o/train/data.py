"""The pictures a run trains and validates on, their caches and stored SD drafts; a loaded batch -> a StepBatch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from omni_gpt2o.data.cache import feature_cache, pixel_cache
from omni_gpt2o.data.dataset import Batch, CaptionedImages, to_unit_range
from omni_gpt2o.data.text_cache import TextStateCache
from omni_gpt2o.fileio import OmniError
from omni_gpt2o.model import OmniGPT2o
from omni_gpt2o.sd_drafts import describe, find_draft_store
from omni_gpt2o.train.config import TrainConfig
from omni_gpt2o.train.learner import Learner
from omni_gpt2o.train.step import StepBatch, frozen_targets

PALETTE_PICTURES = 1024  # training pictures the palette is fitted on


class TrainingData:
    """The training and validation pictures, their caches and stored SD drafts; a loaded batch -> a StepBatch."""

    def __init__(self, cfg: TrainConfig, model: OmniGPT2o, accelerator, fit_text: bool = True):
        size, self.cfg, self.device = model.config.image_size, cfg, model.separator.device
        self.train = CaptionedImages(cfg.data, size, cfg.max_train_samples, seed=cfg.seed)
        self.val = CaptionedImages(cfg.val_data, size, cfg.max_val_samples, seed=cfg.seed) if cfg.val_data else None
        self.features = self.pixels = self.sd_store = self.text_cache = None
        if model.reader is not None or (fit_text and model.text_standardizer is not None):
            self.text_cache = self.caption_states(model, accelerator, fit_text)
        if fit_text and model.palette is not None:  # a new run: the palette from its training pictures
            self.fit_palette(model, accelerator)
        if cfg.cache_dir:  # read what precompute (or an earlier epoch) stored; store what is missing
            with accelerator.main_process_first():  # the main process makes the cache files
                if cfg.align_weight > 0:  # the ViT's view of the clean pictures serves the alignment loss only
                    self.features = feature_cache(cfg.cache_dir, model, self.train.records, size)
                self.pixels = self.train.pixels = pixel_cache(cfg.cache_dir, self.train.records, size)
        if cfg.draft == "sd":
            self.sd_store = find_draft_store(cfg.data, self.train.records, size)
            self.caption_rows = np.cumsum([0] + [len(r.captions) for r in self.train.records]).tolist()
            if accelerator.is_main_process:
                print(f"mixing in {describe(self.sd_store)} for {cfg.sd_draft_ratio:.0%} of the pictures", flush=True)
        elif cfg.draft != "noise":
            raise OmniError(f"--draft must be noise or sd, not {cfg.draft!r}")

    def step_batch(self, batch: Batch, learner: Learner, share: list[int], offset: int, size: int) -> StepBatch:
        """`share`: the data set indices this process was given, from row `offset` of a global batch of `size`
        (the unreadable ones are missing from `batch`)."""
        clean = to_unit_range(batch.images.to(self.device, non_blocking=True))
        target = None
        if self.cfg.align_weight > 0:  # without the alignment loss the frozen ViT never sees the clean picture
            target = self.features.get(batch.indices) if self.features is not None else None
            if target is None:
                target = frozen_targets(learner.model, clean, learner.amp)
                if self.features is not None:
                    self.features.put(batch.indices, target)
            target = target.to(self.device)
        if self.pixels is not None and not self.pixels.done[batch.indices].all():
            self.pixels.put(batch.indices, batch.images)
        positions = [offset + share.index(i) for i in batch.indices]
        step = StepBatch(clean, batch.captions, positions, size, target, text_cache=self.text_cache)
        if self.sd_store is not None:
            rows = [self.caption_rows[i] + j for i, j in zip(batch.indices, batch.caption_indices)]
            step.sd_stored = torch.from_numpy(self.sd_store.done[rows].astype(bool)).to(self.device)
            step.sd_pictures = to_unit_range(torch.from_numpy(self.sd_store.rows[rows])).to(self.device)
        return step


    def fit_palette(self, model: OmniGPT2o, accelerator) -> None:
        """The decoder's palette, fitted on up to PALETTE_PICTURES training pictures (evenly spread over the split,
        the same on every process)."""
        n = len(self.train)
        picks = sorted({i * n // min(n, PALETTE_PICTURES) for i in range(min(n, PALETTE_PICTURES))})
        pictures = [p for p in (self.train.load(i)[0] for i in picks) if p is not None]
        if not pictures:
            raise OmniError(f"no training picture in {self.cfg.data} could be read to fit the palette")
        model.palette.fit(to_unit_range(torch.stack(pictures)).to(self.device))
        if accelerator.is_main_process:
            print(f"palette: {model.palette.size} colours fitted on {len(pictures)} training pictures", flush=True)

    def caption_states(self, model: OmniGPT2o, accelerator, fit_text: bool) -> TextStateCache | None:
        """The LM's states of every training caption (and of the empty one, for caption dropout), computed once
        and cached beside the split (or under --cache-dir); the standardiser's statistics fitted from them."""
        captions = sorted({c for r in self.train.records for c in r.captions} | {""})
        root = Path(self.cfg.cache_dir) / "text" if self.cfg.cache_dir else Path(self.cfg.data) / "text_states"
        with accelerator.main_process_first():  # the main process computes, the others read
            cache = TextStateCache(root, model)
            try:
                computed = cache.fill(captions, progress=self.cfg.progress and accelerator.is_main_process)
            except OSError as err:  # a read-only data folder, a full disk
                raise OmniError(f"cannot store the caption states in {root} ({err.strerror or err}); point "
                                "--cache-dir at a writable folder") from None
        if accelerator.is_main_process:
            print(f"caption states: {len(captions)} captions, {computed} computed now; encoding them cost "
                  f"{cache.flops / 1e12:.3g} TFLOP in {cache.seconds:.0f} s, once ({cache.dir})", flush=True)
        if fit_text and model.text_standardizer is not None:
            model.text_standardizer.fit(*cache.statistics([c for c in captions if c]))
        return cache if model.reader is not None else None
