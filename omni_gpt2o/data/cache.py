"""Frozen-feature cache: the ViT's embedding of each clean picture, computed once, memory-mapped.

The ViT never changes, and the alignment loss's target (the ViT's patch tokens of the clean picture) is a
pure function of the picture, so it is computed once per picture and read back in every later epoch.
(GPT-2's states cannot be cached this way: GPT-2 reads the caption together with the noisy draft.)

    CACHE_DIR/<key>/key.json       what the features depend on: model, weights, preprocessing, split
    CACHE_DIR/<key>/features.npy   (N, P, D) float16, memory-mapped
    CACHE_DIR/<key>/done.npy       (N,) uint8: 1 once row i is written

The key changes, and so a new folder is used, whenever anything the features depend on changes. A row
counts only once its `done` flag is set after its features were flushed, so a killed run never leaves a
half-written row that is later read.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from numpy.lib.format import open_memmap

PREPROCESSING = "rgb-resize-shorter-bicubic-centre-crop-v1"


def cache_key(model, records: list, image_size: int) -> dict:
    """Everything the cached features depend on."""
    vit = model.image_encoder
    weights = torch.cat([p.detach().flatten()[:4096].float() for p in vit.parameters()])
    fingerprint = hashlib.sha256(weights.numpy().tobytes()).hexdigest()[:16]
    paths = hashlib.sha256("\n".join(str(r.path) for r in records).encode()).hexdigest()[:16]
    config = model.config
    return {"image_model": config.image_model, "image_model_kwargs": config.image_model_kwargs,
            "weights": fingerprint, "image_size": image_size, "preprocessing": PREPROCESSING,
            "pictures": len(records), "paths": paths, "shape": [vit.num_patches, vit.width]}


class FeatureCache:
    def __init__(self, root: str | Path, key: dict):
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
        self.dir = Path(root) / digest
        self.dir.mkdir(parents=True, exist_ok=True)
        n, (p, d) = key["pictures"], key["shape"]
        key_file = self.dir / "key.json"
        if not key_file.is_file():
            key_file.write_text(json.dumps(key, indent=2, sort_keys=True))
        features, done = self.dir / "features.npy", self.dir / "done.npy"
        if not (features.is_file() and done.is_file()):
            open_memmap(features, mode="w+", dtype=np.float16, shape=(n, p, d)).flush()
            np.save(done, np.zeros(n, dtype=np.uint8))
        self.features = open_memmap(features, mode="r+")
        self.done = open_memmap(done, mode="r+")

    def __len__(self) -> int:
        return int(self.done.sum())

    @property
    def complete(self) -> bool:
        return bool(self.done.all())

    def get(self, indices: list[int]) -> torch.Tensor | None:
        """The rows' features, or None if any of them is not cached yet."""
        idx = np.asarray(indices)
        if not self.done[idx].all():
            return None
        return torch.from_numpy(np.ascontiguousarray(self.features[idx]))

    def put(self, indices: list[int], features: torch.Tensor) -> None:
        idx = np.asarray(indices)
        self.features[idx] = features.detach().to(torch.float16).cpu().numpy()
        self.features.flush()  # features on disk before the flags that vouch for them
        self.done[idx] = 1
        self.done.flush()


def precompute(model, dataset, cache_dir: str | Path, batch_size: int = 64, num_workers: int = 0,
               amp: torch.dtype | None = None, progress: bool = True) -> tuple[FeatureCache, int, float]:
    """Fill the cache for a split (resumable: rows already done are skipped).

    Returns the cache, how many pictures were encoded now, and the pictures per second.
    """
    import time

    from torch.utils.data import DataLoader, Subset
    from tqdm.auto import tqdm

    from omni_gpt2o.data.dataset import collate, to_unit_range

    cache = FeatureCache(cache_dir, cache_key(model, dataset.records, dataset.image_size))
    todo = [i for i in range(len(dataset)) if not cache.done[i]]
    device = next(model.parameters()).device
    loader = DataLoader(Subset(dataset, todo), batch_size=batch_size, collate_fn=collate, num_workers=num_workers)
    start, encoded = time.perf_counter(), 0
    with tqdm(total=len(todo), desc="precompute", unit="img", disable=not progress) as bar:
        for batch in loader:
            if batch.captions:
                clean = to_unit_range(batch.images.to(device))
                with torch.no_grad(), torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                    cache.put(batch.indices, model.image_encoder(clean))
                encoded += len(batch.indices)
            bar.update(len(batch.indices) + len(batch.errors))
    return cache, encoded, encoded / max(time.perf_counter() - start, 1e-9)
