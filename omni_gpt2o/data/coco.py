"""COCO captions (2017) to the split layout every loader here reads.

    prepare-coco --annotations annotations/captions_train2017.json --images train2017/ --out data/coco-train

writes `out/captions.json` whose `file_name`s point at the original pictures (no copy of 118k files).
The original prototype's `descriptions.txt` (`file_name|caption` per line) can be read and written too.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from omni_gpt2o.fileio import OmniError, atomic_path


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
    whitespace-normalised and empty ones dropped; files are referenced by absolute path.
    """
    annotations, images, out = Path(annotations), Path(images).resolve(), Path(out)
    if not images.is_dir():
        raise OmniError(f"--images {images}: no such folder")
    data = read_descriptions(annotations) if annotations.suffix == ".txt" else _load_json(annotations)
    try:
        captions: dict[int, list[str]] = defaultdict(list)
        for ann in data["annotations"]:
            text = " ".join(str(ann.get("caption", "")).split())
            if text:
                captions[ann["image_id"]].append(text)
        index_images, index_annotations = [], []
        for img in data["images"]:
            if not captions.get(img["id"]):
                continue
            entry = {"id": img["id"], "file_name": str(images / img["file_name"])}
            entry |= {k: img[k] for k in ("width", "height") if k in img}
            index_images.append(entry)
            for text in captions[img["id"]]:
                index_annotations.append({"id": len(index_annotations) + 1, "image_id": img["id"], "caption": text})
            if max_images and len(index_images) >= max_images:
                break
    except KeyError as err:
        raise OmniError(f"{annotations} is not a COCO captions file (an entry lacks {err})") from err
    except TypeError as err:
        raise OmniError(f"{annotations} is not a COCO captions file (`images` and `annotations` must be lists of "
                        f"objects: {err})") from err
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "captions.json") as tmp:
        tmp.write_text(json.dumps({"images": index_images, "annotations": index_annotations}), encoding="utf-8")
    return out / "captions.json", len(index_images), len(index_annotations)


def write_descriptions(split_dir: str | Path, path: str | Path) -> int:
    """Write a split's captions in the seed's `file_name|caption` layout; returns the line count."""
    data = _load_json(Path(split_dir) / "captions.json")
    names = {img["id"]: Path(img["file_name"]).name for img in data["images"]}
    lines = [f"{names[a['image_id']]}|{a['caption']}" for a in data["annotations"] if a["image_id"] in names]
    with atomic_path(path) as tmp:
        tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return len(lines)
