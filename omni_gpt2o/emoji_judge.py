"""The emoji judge: which emoji a picture shows, found by retrieval among the real renders of every emoji.

A picture is compared with the renders of all 3,944 emoji at the split's size in two spaces, and the intended
emoji's rank is its score (top-1, top-5):
- **Lite0**: the pooled features (1,280) of the pretrained EfficientNet-Lite0 (ImageNet weights), cosine
  similarity. Pictures are upsampled to the network's 224 px.
- **pixels**: the picture itself at 16 x 16 px (box filter), Euclidean distance; a space no training loss uses,
  so a model that learns to please Lite0's features without drawing the emoji shows up as a gap between them.
A scene's two halves are judged one by one: a square of half the side around each emoji's centre, which
frames it as a single emoji is framed. A held-out composition's top-1 is also read as its base and its tone.
Beside retrieval, FID and KID between the generated pictures and the split's real ones, in Lite0's pooled
feature space (not Inception's: these are Lite0-FID and Lite0-KID, comparable only with each other).
"""

from __future__ import annotations

import hashlib
import warnings
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from omni_gpt2o.backbones import load_lite0
from omni_gpt2o.config import LITE0
from omni_gpt2o.data.emoji import TONES, Emoji, catalogue, centres, render
from omni_gpt2o.fileio import atomic_path

JUDGE_SIZE = 224  # Lite0's own input size: pictures are upsampled to it
PIXEL_SIZE = 16  # the pixel space's resolution


def base_and_tone(name: str) -> tuple[str, str]:
    """"woman artist medium-light skin tone" -> ("woman artist", "medium-light skin tone"); no tone: ""."""
    for tone in sorted(TONES, key=len, reverse=True):  # "medium-light skin tone" before "light skin tone"
        if name.endswith(" " + tone):
            return name[: -len(tone) - 1], tone
    return name, ""


def halves(picture: Image.Image, relation: str) -> list[Image.Image]:
    """The two emoji of a scene, each cut out as a square of half the side around its centre (where the data set
    draws it), scaled back to the picture's size: each then fills 80% of its frame, as a single emoji does."""
    size, crops = picture.width, []
    for cx, cy in centres(relation):
        box = (round((cx - 0.25) * size), round((cy - 0.25) * size), round((cx + 0.25) * size),
               round((cy + 0.25) * size))
        crops.append(picture.crop(box).resize((size, size), Image.Resampling.BICUBIC))
    return crops


class EmojiJudge:
    """Ranks pictures against the renders of every emoji (or of `emojis`) at `size` px."""

    def __init__(self, size: int = 64, emojis: Sequence[Emoji] | None = None, device: str | torch.device = "cpu",
                 batch_size: int = 64, progress: bool = False, cache_dir: str | Path | None = None):
        self.size, self.device, self.batch_size = size, torch.device(device), batch_size
        self.emojis = list(emojis or catalogue())
        self.index = {e.char: i for i, e in enumerate(self.emojis)}
        self.lite0 = load_lite0().to(self.device)
        renders = [render((e.char,), size)[0] for e in self.emojis]
        self.pixel_bank = self.pixels(renders)
        named = [LITE0["image_model_sha256"], str(size), str(JUDGE_SIZE), *self.index]
        key = hashlib.sha256("\n".join(named).encode()).hexdigest()
        cached = Path(cache_dir) / f"emoji-judge-{key[:16]}.npy" if cache_dir else None
        if cached is not None and cached.is_file():  # the real renders' features: computed once per size
            self.bank = torch.from_numpy(np.load(cached, allow_pickle=False))
        else:
            self.bank = self.features(renders, progress=progress, desc="judge: real renders")
            if cached is not None:
                with atomic_path(cached) as tmp, open(tmp, "wb") as f:
                    np.save(f, self.bank.numpy(), allow_pickle=False)

    @torch.no_grad()
    def features(self, pictures: Sequence[Image.Image], progress: bool = False, desc: str = "judge") -> torch.Tensor:
        """Lite0's pooled features, L2-normalised (N, 1280), float32 on the CPU."""
        out = []
        for start in tqdm(range(0, len(pictures), self.batch_size), desc=desc, disable=not progress, unit="batch"):
            chunk = pictures[start:start + self.batch_size]
            batch = np.stack([np.asarray(p.convert("RGB"), dtype=np.float32) for p in chunk])
            x = torch.from_numpy(batch).permute(0, 3, 1, 2).to(self.device) / 255.0
            x = F.interpolate(x, size=(JUDGE_SIZE, JUDGE_SIZE), mode="bilinear", align_corners=False, antialias=True)
            pooled = self.lite0.forward_head(self.lite0.forward_features((x - 0.5) / 0.5), pre_logits=True)
            out.append(F.normalize(pooled.float(), dim=1).cpu())
        return torch.cat(out) if out else torch.zeros(0, self.lite0.num_features)

    @staticmethod
    def pixels(pictures: Sequence[Image.Image]) -> torch.Tensor:
        small = [np.asarray(p.convert("RGB").resize((PIXEL_SIZE, PIXEL_SIZE), Image.Resampling.BOX), np.float32)
                 for p in pictures]
        return torch.from_numpy(np.stack(small).reshape(len(small), -1) / 255.0)

    def rank(self, pictures: Sequence[Image.Image], chars: Sequence[str]) -> dict[str, list]:
        """Per picture: the intended emoji's rank (0 = nearest) in each space, and the nearest emoji's name."""
        target = torch.tensor([self.index[c] for c in chars])
        rows = torch.arange(len(chars))
        sims = self.features(pictures) @ self.bank.T
        dists = torch.cdist(self.pixels(pictures), self.pixel_bank)
        lite0 = (sims > sims[rows, target][:, None]).sum(1)  # a tie (two emoji drawn alike) counts as right
        nearest = torch.where(lite0 == 0, target, sims.argmax(1))
        return {"lite0": lite0.tolist(), "pixels": (dists < dists[rows, target][:, None]).sum(1).tolist(),
                "nearest": [self.emojis[i].name for i in nearest.tolist()]}


def retrieval_scores(ranks: dict[str, list], names: Sequence[str]) -> dict[str, float]:
    """top-1 and top-5 in each space; for names with a skin tone, also the nearest emoji's base and tone right."""
    n = max(1, len(names))
    scores = {f"{space}_top{k}": sum(r < k for r in ranks[space]) / n for space in ("lite0", "pixels") for k in (1, 5)}
    toned = [(base_and_tone(want), base_and_tone(got)) for want, got in zip(names, ranks["nearest"])
             if base_and_tone(want)[1]]
    if toned:
        scores["right_base"] = sum(w[0] == g[0] for w, g in toned) / len(toned)
        scores["right_tone"] = sum(w[1] == g[1] for w, g in toned) / len(toned)
    return scores


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """FID's formula between two sets of features (float64). With fewer pictures than feature dimensions (1,280)
    the covariances are singular and the figure is biased upward: compare it only at equal counts, or read KID."""
    from scipy import linalg

    a, b = a.double().numpy(), b.double().numpy()
    mu = a.mean(0) - b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    with warnings.catch_warnings():  # singular covariances (few pictures): the square root is still defined
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        root = linalg.sqrtm(cov_a @ cov_b)
    return float(mu @ mu + np.trace(cov_a + cov_b - 2 * np.real(root)))


def kernel_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """KID: the unbiased squared MMD with the cubic polynomial kernel (x.y / d + 1)^3 (float64)."""
    a, b = a.double(), b.double()
    d, m, n = a.shape[1], len(a), len(b)
    kaa, kbb, kab = ((x @ y.T / d + 1) ** 3 for x, y in ((a, a), (b, b), (a, b)))
    return float((kaa.sum() - kaa.diagonal().sum()) / (m * (m - 1)) + (kbb.sum() - kbb.diagonal().sum()) / (n * (n - 1))
                 - 2 * kab.mean())


def judge_split(judge: EmojiJudge, pictures: Sequence[Image.Image], records: Sequence[dict]) -> dict[str, dict]:
    """Scores by category of drawn `pictures`, one per record of an emoji split ({"category", "objects",
    "relation", "real"}: the split's picture), and Lite0-FID / KID against the real pictures."""
    groups: dict[str, tuple[list, list, list]] = defaultdict(lambda: ([], [], []))
    for picture, record in zip(pictures, records):
        cuts = halves(picture, record["relation"]) if record.get("relation") else [picture]
        for cut, obj in zip(cuts, record["objects"]):
            for key in (record["category"], "all"):
                groups[key][0].append(cut)
                groups[key][1].append(obj["emoji"])
                groups[key][2].append(obj["name"])
    scores = {}
    for key, (cuts, chars, names) in groups.items():
        scores[key] = {"n": len(cuts), **retrieval_scores(judge.rank(cuts, chars), names)}
    fake, real = judge.features(list(pictures)), judge.features([r["real"] for r in records])
    if len(records) > 2:
        scores["all"] |= {"lite0_fid": frechet_distance(fake, real), "lite0_kid": kernel_distance(fake, real)}
    return scores
