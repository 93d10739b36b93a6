"""The frozen LM's states of each distinct caption, computed once and memory-mapped.

With `lm_reads_draft=False` the LM reads the prompt alone, so what it says of a caption never changes: the
states of the layers the model reads are computed once per distinct caption (any number of runs and seeds share
them) and a training step only looks them up.

    ROOT/<key>/<chunk>/states.npy    float32 (tokens, layers, width): each caption's real tokens in turn
    ROOT/<key>/<chunk>/index.json    {"captions": {caption: [offset, tokens]}, "flops": ..., "seconds": ...}

`key` is a digest of the LM's weights, its tokenizer, the layers read and the prompt length limit: the states
of another LM are never read. Each fill writes a new chunk whole or not at all (an atomic folder), so a killed
fill leaves nothing half-written and the next one computes the same captions again.
"""

from __future__ import annotations

import hashlib
import json
import time
import weakref
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

from omni_gpt2o.fileio import OmniError, atomic_dir, json_text

# Hashing 135M weights takes seconds: each LM's hash is kept while the LM lives, with the tensors and versions it
# was made from (an in-place change of any of them bumps its version and hashes again). Keyed by the module, not
# by tensor addresses, which another model may reuse once this one is freed.
_WEIGHT_HASHES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _weights_hash(lm: torch.nn.Module):
    """A sha256 fed with the LM's weights (a copy, to go on feeding)."""
    tensors = lm.state_dict()
    seen = tuple((name, t.data_ptr(), t._version) for name, t in tensors.items())
    kept = _WEIGHT_HASHES.get(lm)
    if kept is None or kept[0] != seen:
        digest = hashlib.sha256()
        for name, tensor in tensors.items():
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().float().contiguous().numpy().tobytes())
        kept = _WEIGHT_HASHES[lm] = (seen, digest)
    return kept[1].copy()


def lm_key(model) -> str:
    """What the cached states depend on: the LM's weights (hashed), its tokenizer, the layers read, the limit
    and the prompt template (the default one leaves the key as it was before templates existed)."""
    digest = _weights_hash(model.text_encoder.model)
    tokenizer = model.text_encoder.tokenizer
    template = model.text_encoder.prompt_template
    digest.update(json.dumps([type(tokenizer).__name__, len(tokenizer), tokenizer.padding_side,
                              list(model.read_layers), model.text_encoder.max_text_tokens]
                             + ([] if template == "{}" else [template])).encode())
    return digest.hexdigest()[:20]


class TextStateCache:
    """Cached `encode_text` states of captions, for one model's LM."""

    def __init__(self, root: str | Path, model):
        self.model = model
        self.dir = Path(root) / lm_key(model)
        self.index: dict[str, tuple[np.ndarray, int, int]] = {}  # caption -> (states, offset, tokens)
        self.flops = 0  # what filling this cache cost, over every chunk (the one-time price of the captions)
        self.seconds = 0.0
        for chunk in sorted(self.dir.glob("[!.]*")):
            self._read_chunk(chunk)

    def _read_chunk(self, chunk: Path) -> None:
        try:
            meta = json.loads((chunk / "index.json").read_text())
            states = np.load(chunk / "states.npy", mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as err:
            raise OmniError(f"text cache {chunk} is damaged ({err}); delete it and it is computed again") from None
        width = self.model.text_encoder.width
        if states.dtype != np.float32 or states.shape[1:] != (len(self.model.read_layers), width):
            raise OmniError(f"text cache {chunk} holds {states.dtype} {states.shape}, not float32 (tokens, "
                            f"{len(self.model.read_layers)}, {width}); delete it and it is computed again")
        for caption, (offset, tokens) in meta["captions"].items():
            self.index[caption] = (states, offset, tokens)
        self.flops += meta["flops"]
        self.seconds += meta["seconds"]

    def __len__(self) -> int:
        return len(self.index)

    def __contains__(self, caption: str) -> bool:
        return caption in self.index

    @torch.no_grad()
    def fill(self, captions: Sequence[str], batch_size: int = 64, progress: bool = True) -> int:
        """Compute and store the captions not cached yet; returns how many were computed."""
        missing = sorted(set(captions) - set(self.index), key=lambda c: (len(c), c))  # similar lengths batch well
        if not missing:
            return 0
        model, device = self.model, self.model.separator.device
        rows, spans = [], {}
        started, offset = time.perf_counter(), 0
        with FlopCounterMode(display=False) as counter:
            for i in tqdm(range(0, len(missing), batch_size), desc="caption states (frozen LM, once)",
                          disable=not progress, unit="batch"):
                batch = missing[i: i + batch_size]
                ids, mask = model.tokenize(batch)
                states = torch.stack(model.encode_text(ids.to(device), mask.to(device)), dim=2).float().cpu()
                for caption, row, real in zip(batch, states, mask.bool().cpu()):
                    kept = row[real].numpy()  # left padding dropped
                    spans[caption] = (offset, len(kept))
                    rows.append(kept)
                    offset += len(kept)
        seconds = time.perf_counter() - started
        chunk = self.dir / hashlib.sha256("\n".join(missing).encode()).hexdigest()[:16]
        with atomic_dir(chunk) as tmp:
            np.save(tmp / "states.npy", np.concatenate(rows), allow_pickle=False)
            (tmp / "index.json").write_text(json_text({"captions": spans, "flops": counter.get_total_flops(),
                                                       "seconds": seconds}))
        self._read_chunk(chunk)
        return len(missing)

    def lookup(self, captions: Sequence[str], mask: torch.Tensor) -> list[torch.Tensor]:
        """One (B, T, D) tensor per layer read, laid out as `mask` (left padding, zeros there), on its device."""
        b, t = mask.shape
        out = np.zeros((b, t, len(self.model.read_layers), self.model.text_encoder.width), dtype=np.float32)
        lengths = mask.sum(1).tolist()
        for i, caption in enumerate(captions):
            if caption not in self.index:
                raise OmniError(f"caption {caption[:60]!r} is not in the text cache {self.dir}: fill it first")
            states, offset, tokens = self.index[caption]
            if tokens != lengths[i]:
                raise OmniError(f"text cache {self.dir} holds {tokens} tokens of {caption[:60]!r}, the tokenizer "
                                f"gives {lengths[i]}: delete the cache and it is computed again")
            out[i, t - tokens:] = states[offset: offset + tokens]
        stacked = torch.from_numpy(out).to(mask.device, torch.get_default_dtype())  # float64 in fp64 runs
        return list(stacked.unbind(dim=2))

    def statistics(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per layer and dimension, the mean and standard deviation over every token of `captions` (float64
        sums, one caption at a time: no copy of the whole cache in memory)."""
        layers, width = len(self.model.read_layers), self.model.text_encoder.width
        total, squares, count = np.zeros((layers, width)), np.zeros((layers, width)), 0
        for caption in dict.fromkeys(captions):
            states, offset, tokens = self.index[caption]
            rows = np.asarray(states[offset: offset + tokens], dtype=np.float64)
            total += rows.sum(0)
            squares += (rows * rows).sum(0)
            count += tokens
        mean = total / max(count, 1)
        var = np.maximum(squares / max(count, 1) - mean * mean, 0.0) * count / max(count - 1, 1)
        return torch.from_numpy(mean), torch.from_numpy(np.sqrt(var))
