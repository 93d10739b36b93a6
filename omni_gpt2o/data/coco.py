"""COCO captions (2017) to the split layout every loader here reads.

    prepare-coco --annotations annotations/captions_train2017.json --images train2017/ --out data/coco-train

writes `out/captions.json` whose `file_name`s point at the original pictures (no copy of 118k files).
The original prototype's `descriptions.txt` (`file_name|caption` per line) can be read and written too.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from json.encoder import encode_basestring_ascii
from pathlib import Path

from omni_gpt2o.fileio import OmniError, atomic_path

CHUNK = 20_000  # index entries written at once


def _load_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise OmniError(f"annotations file {path} does not exist") from err
    except json.JSONDecodeError as err:
        raise OmniError(f"annotations file {path} is not valid JSON: {err}") from err


def read_descriptions(path: Path) -> dict:
    """The seed's `file_name|caption` lines as a COCO captions dict."""
    ids: dict[str, int] = {}
    annotations = []
    for line in path.read_text(encoding="utf-8").splitlines():
        name, sep, caption = line.partition("|")
        if not sep or not name.strip():
            continue
        image_id = ids.setdefault(name.strip(), len(ids) + 1)
        annotations.append({"id": len(annotations) + 1, "image_id": image_id, "caption": caption.strip()})
    images = [{"id": i, "file_name": name} for name, i in ids.items()]
    return {"images": images, "annotations": annotations}


def prepare_coco(annotations: str | Path, images: str | Path, out: str | Path,
                 max_images: int | None = None) -> tuple[Path, int, int]:
    """Index a COCO captions file (or a seed `descriptions.txt`) into `out/captions.json`.

    Returns (index path, pictures, captions). Pictures without a caption are left out; captions are
    whitespace-normalised and empty ones dropped; files are referenced by absolute path. The parsed file's
    annotations are let go once read and the index is written in chunks, so memory stays near the parsed
    file's own size (COCO train: 93 MB of JSON).
    """
    annotations, images, out = Path(annotations), Path(images).resolve(), Path(out)
    if not images.is_dir():
        raise OmniError(f"--images {images}: no such folder")
    data = read_descriptions(annotations) if annotations.suffix == ".txt" else _load_json(annotations)
    try:
        captions = _captions_by_image(data.pop("annotations"))
        kept, folder = [], str(images)
        for img in data.pop("images"):
            if captions.get(img["id"]):
                entry = {"id": img["id"], "file_name": os.path.join(folder, img["file_name"])}
                kept.append(entry | {k: img[k] for k in ("width", "height") if k in img})
                if max_images and len(kept) >= max_images:
                    break
    except KeyError as err:
        raise OmniError(f"{annotations} is not a COCO captions file (an entry lacks {err})") from err
    except (TypeError, AttributeError) as err:
        raise OmniError(f"{annotations} is not a COCO captions file (`images` and `annotations` must be lists of "
                        f"objects: {err})") from err
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "captions.json") as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write('{"images": [')
        f.write(", ".join(json.dumps(kept[i:i + CHUNK])[1:-1] for i in range(0, len(kept), CHUNK)))
        f.write('], "annotations": [')
        n_captions = _write_rows(f, _annotation_rows(kept, captions))
        f.write("]}")
    return out / "captions.json", len(kept), n_captions


def _captions_by_image(annotations: list[dict]) -> dict[int, list[str]]:
    captions: dict[int, list[str]] = defaultdict(list)
    for ann in annotations:
        text = " ".join(str(ann.get("caption", "")).split())
        if text:
            captions[ann["image_id"]].append(text)
    return captions


def _annotation_rows(kept: list[dict], captions: dict[int, list[str]]):
    """Each caption as the JSON text json.dumps would give its {"id", "image_id", "caption"} entry, numbered
    from 1 in the index's order (made as text: no dict per caption)."""
    number, quote = 0, encode_basestring_ascii
    for img in kept:
        image_id = str(img["id"]) if type(img["id"]) is int else json.dumps(img["id"])  # as json.dumps writes it
        for text in captions[img["id"]]:
            number += 1
            yield f'{{"id": {number}, "image_id": {image_id}, "caption": {quote(text)}}}'


def _write_rows(f, rows, chunk: int = CHUNK) -> int:
    """Write JSON texts as the inside of a list, a chunk at a time; returns how many."""
    written, batch = 0, []
    for row in rows:
        batch.append(row)
        if len(batch) == chunk:
            f.write((", " if written else "") + ", ".join(batch))
            written, batch = written + len(batch), []
    if batch:
        f.write((", " if written else "") + ", ".join(batch))
    return written + len(batch)


def write_descriptions(split_dir: str | Path, path: str | Path) -> int:
    """Write a split's captions in the seed's `file_name|caption` layout; returns the line count."""
    data = _load_json(Path(split_dir) / "captions.json")
    names = {img["id"]: Path(img["file_name"]).name for img in data["images"]}
    lines = [f"{names[a['image_id']]}|{a['caption']}" for a in data["annotations"] if a["image_id"] in names]
    with atomic_path(path) as tmp:
        tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return len(lines)
