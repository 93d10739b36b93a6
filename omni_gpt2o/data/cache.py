"""On-disk caches of what never changes during training, memory-mapped and keyed by what they depend on.

- **features**: the frozen ViT's patch tokens of each clean picture, the alignment loss's target. The ViT
  never changes and the clean picture is fixed, so it is computed once and read back in every later epoch.
  (GPT-2's states cannot be cached this way: GPT-2 reads the caption together with the noisy draft.)
- **pixels**: each picture decoded, converted to RGB, resized and centre-cropped to the model's size, as
  uint8. Decoding a 640 x 480 JPEG costs more than a `tiny` training step's share of it.

    CACHE_DIR/<kind>-<key>/key.json    what the rows depend on (model, weights, preprocessing, split)
    CACHE_DIR/<kind>-<key>/rows.npy    (N, ...) rows, memory-mapped
    CACHE_DIR/<kind>-<key>/done.npy    (N,) uint8: 1 once row i is written

A change to anything the rows depend on gives a new key, so a new folder. A row counts only once its
`done` flag is set, after the row itself was flushed: a killed run never leaves a half-written row that is
later read.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.lib import format as npy
from numpy.lib.format import open_memmap

from omni_gpt2o.fileio import OmniError

PREPROCESSING = "rgb-resize-shorter-bicubic-centre-crop-v1"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _split_fingerprint(records: list) -> str:
    return _digest("\n".join(str(r.path) for r in records))


def _check_header(path: Path, shape: tuple[int, ...], dtype: np.dtype) -> None:
    """Refuse a cache file that is not the plain array expected, before mapping it: Python objects (which
    only unpickling could read, and never will be), another shape or dtype, a damaged header."""
    try:
        with open(path, "rb") as f:
            major, _ = npy.read_magic(f)
            found_shape, _, found_dtype = (npy.read_array_header_1_0 if major == 1 else npy.read_array_header_2_0)(f)
    except (OSError, ValueError) as err:
        raise OmniError(f"cache file {path} is damaged ({err}); delete {path.parent} and it is rebuilt") from None
    if found_dtype.hasobject:
        raise OmniError(f"cache file {path} holds Python objects, which are never unpickled; delete {path.parent}")
    if found_shape != shape or found_dtype != dtype:
        raise OmniError(f"cache file {path} holds {found_dtype} {found_shape}, not the expected {dtype} {shape}; "
                        f"delete {path.parent} and it is rebuilt")


class ArrayCache:
    """Rows of one shape and dtype, one per picture of a split, filled in any order."""

    def __init__(self, root: str | Path, kind: str, key: dict[str, Any], rows: int, shape: tuple[int, ...],
                 dtype: str):
        self.dir = Path(root) / f"{kind}-{_digest(json.dumps(key, sort_keys=True))}"
        self.dir.mkdir(parents=True, exist_ok=True)
        if not (self.dir / "key.json").is_file():
            (self.dir / "key.json").write_text(json.dumps(key, indent=2, sort_keys=True))
        if not ((self.dir / "rows.npy").is_file() and (self.dir / "done.npy").is_file()):
            open_memmap(self.dir / "rows.npy", mode="w+", dtype=np.dtype(dtype), shape=(rows, *shape)).flush()
            np.save(self.dir / "done.npy", np.zeros(rows, dtype=np.uint8), allow_pickle=False)
        _check_header(self.dir / "rows.npy", (rows, *shape), np.dtype(dtype))
        _check_header(self.dir / "done.npy", (rows,), np.dtype(np.uint8))
        self._open()

    def _open(self) -> None:
        self.rows = open_memmap(self.dir / "rows.npy", mode="r+")
        self.done = open_memmap(self.dir / "done.npy", mode="r+")

    def __getstate__(self) -> dict:
        # DataLoader workers get the folder, not a copy of the arrays; they map the files themselves.
        return {"dir": self.dir}

    def __setstate__(self, state: dict) -> None:
        self.dir = state["dir"]
        self._open()

    def __len__(self) -> int:
        return int(self.done.sum())

    @property
    def complete(self) -> bool:
        return bool(self.done.all())

    def get(self, indices: list[int]) -> torch.Tensor | None:
        """The rows, or None if any of them is not cached yet."""
        idx = np.asarray(indices)
        if not self.done[idx].all():
            return None
        return torch.from_numpy(np.ascontiguousarray(self.rows[idx]))

    def put(self, indices: list[int], values: torch.Tensor) -> None:
        idx = np.asarray(indices)
        self.rows[idx] = values.detach().cpu().numpy().astype(self.rows.dtype)
        self.rows.flush()  # rows on disk before the flags that vouch for them
        self.done[idx] = 1
        self.done.flush()


def feature_cache(root: str | Path, model, records: list, image_size: int) -> ArrayCache:
    """The ViT-feature cache of a split for this model's frozen ViT."""
    vit = model.image_encoder
    weights = torch.cat([p.detach().flatten()[:4096].float().cpu() for p in vit.parameters()])  # CUDA too
    key = {"image_model": model.config.image_model, "image_model_kwargs": model.config.image_model_kwargs,
           "weights": hashlib.sha256(weights.numpy().tobytes()).hexdigest()[:16], "image_size": image_size,
           "preprocessing": PREPROCESSING, "pictures": len(records), "split": _split_fingerprint(records)}
    return ArrayCache(root, "features", key, len(records), (vit.num_patches, vit.width), "float16")


def pixel_cache(root: str | Path, records: list, image_size: int) -> ArrayCache:
    """The preprocessed-picture cache of a split at `image_size`."""
    key = {"image_size": image_size, "preprocessing": PREPROCESSING, "pictures": len(records),
           "split": _split_fingerprint(records)}
    return ArrayCache(root, "pixels", key, len(records), (3, image_size, image_size), "uint8")


def precompute(model, dataset, cache_dir: str | Path, batch_size: int = 64, num_workers: int = 0,
               amp: torch.dtype | None = None, progress: bool = True) -> tuple[ArrayCache, int, float]:
    """Fill the pixel and feature caches of a split (resumable: rows already done are skipped).

    Returns the feature cache, how many pictures were encoded now, and the pictures per second.
    """
    from torch.utils.data import DataLoader, Subset
    from tqdm.auto import tqdm

    from omni_gpt2o.data.dataset import collate, to_unit_range
    from omni_gpt2o.utils import autocast

    features = feature_cache(cache_dir, model, dataset.records, dataset.image_size)
    pixels = pixel_cache(cache_dir, dataset.records, dataset.image_size)
    todo = [i for i in range(len(dataset)) if not (features.done[i] and pixels.done[i])]
    device = next(model.parameters()).device
    loader = DataLoader(Subset(dataset, todo), batch_size=batch_size, collate_fn=collate, num_workers=num_workers)
    start, encoded = time.perf_counter(), 0
    with tqdm(total=len(todo), desc="precompute", unit="img", disable=not progress) as bar:
        for batch in loader:
            if batch.captions:
                pixels.put(batch.indices, batch.images)
                clean = to_unit_range(batch.images.to(device))
                with torch.no_grad(), autocast(device, amp):
                    features.put(batch.indices, model.image_encoder(clean))
                encoded += len(batch.indices)
            bar.update(len(batch.indices) + len(batch.errors))
    return features, encoded, encoded / max(time.perf_counter() - start, 1e-9)
