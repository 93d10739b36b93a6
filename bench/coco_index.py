"""Indexing a COCO-size captions file: time and peak memory (a benchmark, not a test).

    .venv/bin/python bench/coco_index.py

Writes a captions file with the real captions_train2017.json's structure and size (118,287 pictures,
591,753 captions, COCO-like fields and caption lengths), then times `prepare-coco` and the loader's index
over it. The pictures themselves are not needed to index.
"""

from __future__ import annotations

import json
import multiprocessing
import random
import resource
import tempfile
import time
from pathlib import Path

from omni_gpt2o.data.coco import prepare_coco

WORDS = ("a man woman dog cat plate of food on the table sitting standing next to with red blue large small "
         "street car bus train kitchen bathroom riding skateboard surfboard wave beach field grass two people "
         "in front an open refrigerator pizza sandwich holding phone umbrella rain snow").split()


def make_captions_file(path: Path, images: int = 118_287, captions: int = 591_753) -> None:
    rng = random.Random(0)
    data = {
        "info": {"description": "COCO 2017 Dataset (synthetic stand-in)", "version": "1.0", "year": 2017},
        "licenses": [{"url": "http://creativecommons.org/licenses/by-nc-sa/2.0/", "id": 1, "name": "CC"}],
        "images": [{"license": 1, "file_name": f"{i:012d}.jpg", "coco_url": f"http://images/{i:012d}.jpg",
                    "height": 480, "width": 640, "date_captured": "2013-11-14 16:28:13",
                    "flickr_url": f"http://farm/{i}.jpg", "id": i} for i in range(1, images + 1)],
        "annotations": [],
    }
    for k in range(captions):
        image_id = k % images + 1
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 14))).capitalize() + "."
        data["annotations"].append({"image_id": image_id, "id": k + 1, "caption": text})
    path.write_text(json.dumps(data))


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ann = tmp / "captions_train2017.json"
        # Written by a child process, so this process's peak memory is the indexing's alone.
        writer = multiprocessing.Process(target=make_captions_file, args=(ann,))
        writer.start()
        writer.join()
        (tmp / "train2017").mkdir()
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start = time.perf_counter()
        _, n_images, n_captions = prepare_coco(ann, tmp / "train2017", tmp / "split")
        prepared = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # the whole process, Python included

        from omni_gpt2o.data.dataset import read_split  # imports torch: measured after the peak above

        start = time.perf_counter()
        records = read_split(tmp / "split")
        indexed = time.perf_counter() - start
        size_mb = ann.stat().st_size / 1e6
    print(f"captions file: {size_mb:.0f} MB, {n_images} pictures, {n_captions} captions")
    print(f"prepare-coco: {prepared:.2f} s, peak memory of the whole process {peak / 1024:.0f} MB "
          f"({base / 1024:.0f} MB before)")
    print(f"loader index of the prepared split: {indexed:.2f} s ({len(records)} records)")


if __name__ == "__main__":
    main()
