"""The split loader and the frozen-feature cache on a COCO-format fixture with broken files."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from omni_gpt2o.cli import main
from omni_gpt2o.data.cache import ArrayCache, feature_cache, pixel_cache, precompute
from omni_gpt2o.data.dataset import CaptionedImages, collate, to_rgb, to_unit_range
from omni_gpt2o.fileio import OmniError

from .numerics import assert_same_math


@pytest.fixture
def coco_split(tmp_path):
    """A few dozen pictures in different modes, 5 captions each, some broken or missing."""
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    names = []
    for i in range(24):
        arr = rng.integers(0, 256, (30 + i, 40, 3), dtype=np.uint8)
        kind = i % 6
        if kind == 0:
            img, name = Image.fromarray(arr), f"{i}.png"
        elif kind == 1:
            img, name = Image.fromarray(arr[..., 0]).convert("L"), f"{i}.png"
        elif kind == 2:
            img, name = Image.fromarray(np.dstack([arr, arr[..., :1]])), f"{i}.png"  # RGBA
        elif kind == 3:
            img, name = Image.fromarray(arr).convert("CMYK"), f"{i}.jpg"
        elif kind == 4:
            img, name = Image.fromarray(arr[..., 0].astype(np.uint16) * 257), f"{i}.png"  # 16-bit grey
        else:
            img, name = Image.fromarray(arr).convert("P"), f"{i}.png"
        img.save(images / name)
        names.append(name)
    (images / names[20]).write_bytes((images / names[20]).read_bytes()[:60])  # truncated
    (images / names[21]).write_bytes(b"definitely not a picture")  # corrupt
    (images / names[22]).unlink()  # missing
    data = {
        "images": [{"id": i + 1, "file_name": n} for i, n in enumerate(names)] + [{"id": 99, "file_name": "x.png"}],
        "annotations": [{"id": 10 * i + k, "image_id": i + 1, "caption": f"picture {i} caption {k}"}
                        for i in range(24) for k in range(5)]
        + [{"id": 9999, "image_id": 1, "caption": "word " * 5000}, {"id": 9998, "image_id": 2, "caption": ""}],
    }
    (tmp_path / "captions.json").write_text(json.dumps(data))
    return tmp_path


def test_every_mode_becomes_rgb_without_clipping():
    grey16 = Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16))
    assert np.asarray(to_rgb(grey16)).min() == 255  # scaled, not clipped to 255 of 65535
    half16 = Image.fromarray(np.full((4, 4), 32768, dtype=np.uint16))
    assert abs(int(np.asarray(to_rgb(half16))[0, 0, 0]) - 128) <= 1
    clear = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    assert np.asarray(to_rgb(clear)).max() == 0  # transparent on black
    for mode in ("L", "CMYK", "P", "1", "LA", "I", "F"):
        assert to_rgb(Image.new(mode, (3, 3))).mode == "RGB"


def test_loader_skips_bad_files_and_reports_them(coco_split):
    data = CaptionedImages(coco_split, image_size=16, preload=False)
    assert len(data) == 24  # the picture without captions is not indexed
    batch = collate([data[i] for i in range(len(data))])
    assert batch.images.shape == (21, 3, 16, 16) and batch.images.dtype == torch.uint8
    assert len(batch.errors) == 3
    assert any("22.png" in e for e in batch.errors) and any("21.jpg" in e for e in batch.errors)
    assert len(data.records[0].captions) == 6  # five plus the absurdly long one (the empty one is dropped)


def test_one_caption_per_picture_per_epoch_repeatably(coco_split):
    a = CaptionedImages(coco_split, 16, seed=3)
    b = CaptionedImages(coco_split, 16, seed=3)
    epoch0 = [a.caption(i) for i in range(24)]
    assert epoch0 == [b.caption(i) for i in range(24)]
    a.set_epoch(1)
    assert epoch0 != [a.caption(i) for i in range(24)]
    assert CaptionedImages(coco_split, 16, max_samples=5).records == a.records[:5]


def test_training_survives_bad_data_and_long_captions(coco_split, tmp_path, capsys):
    assert main(["train", "--data", str(coco_split), "--out", str(tmp_path / "run"), "--preset", "micro",
                 "--epochs", "2", "--batch-size", "8"]) == 0
    state = json.loads((tmp_path / "run" / "checkpoints" / "last" / "trainer_state.json").read_text())
    assert state["step"] == 6 and state["skipped"] == 6  # three bad files, each epoch
    printed = capsys.readouterr()
    assert "skipped 3 unreadable pictures" in printed.out + printed.err


@pytest.mark.numerics
def test_feature_cache_hit_miss_and_invalidation(coco_split, tmp_path, micro_model):
    data = CaptionedImages(coco_split, micro_model.config.image_size)
    cache = feature_cache(tmp_path / "cache", micro_model, data.records, data.image_size)
    assert len(cache) == 0 and cache.get([0, 1]) is None  # miss

    filled, encoded, _ = precompute(micro_model, data, tmp_path / "cache", batch_size=8, progress=False)
    assert encoded == 21 and len(filled) == 21 and not filled.complete  # the 3 unreadable stay empty
    batch = collate([data[i] for i in range(4)])
    expected = micro_model.image_encoder(to_unit_range(batch.images))
    again = feature_cache(tmp_path / "cache", micro_model, data.records, data.image_size)
    got = again.get(batch.indices)  # hit, read back from disk by a fresh object
    assert again.dir == filled.dir and got is not None
    # Stored as float16: one float16 rounding of values this large (the float32 batches of 8 and 4 differ far less)
    assert_same_math(got.float(), expected, roundings=1, dtype=torch.float16)

    _, encoded_again, _ = precompute(micro_model, data, tmp_path / "cache", batch_size=8, progress=False)
    assert encoded_again == 0  # resumed: nothing left to do

    # Anything the features depend on gives a new key, hence a fresh, empty cache.
    assert len(feature_cache(tmp_path / "cache", micro_model, data.records, 48)) == 0
    fewer = CaptionedImages(coco_split, data.image_size, max_samples=10)
    assert len(feature_cache(tmp_path / "cache", micro_model, fewer.records, data.image_size)) == 0
    with torch.no_grad():
        micro_model.image_encoder.model.patch_embed.proj.weight.add_(0.1)
    assert len(feature_cache(tmp_path / "cache", micro_model, data.records, data.image_size)) == 0


def test_pixel_cache_serves_the_loader_without_decoding(coco_split, tmp_path, micro_model):
    data = CaptionedImages(coco_split, micro_model.config.image_size, preload=False)
    precompute(micro_model, data, tmp_path / "cache", batch_size=8, progress=False)
    pixels = pixel_cache(tmp_path / "cache", data.records, data.image_size)
    assert len(pixels) == 21
    decoded = data[0][0]
    (coco_split / "images" / data.records[0].path.name).unlink()  # the original is gone ...
    data.pixels = pixels
    assert torch.equal(data[0][0], decoded)  # ... and the cached picture is served
    from torch.utils.data import DataLoader

    through_workers = next(iter(DataLoader(data, batch_size=4, collate_fn=collate, num_workers=2)))
    assert torch.equal(through_workers.images[0], decoded)  # workers map the cache files themselves


def test_training_with_the_cache_fills_it_then_reads_it(shapes_splits, tmp_path):
    train_dir, _ = shapes_splits
    args = ["train", "--data", str(train_dir), "--out", str(tmp_path / "run"), "--preset", "micro",
            "--epochs", "2", "--batch-size", "16", "--cache-dir", str(tmp_path / "cache"), "--align-weight", "0.1"]
    assert main(args) == 0
    folders = sorted((tmp_path / "cache").iterdir())
    assert [f.name.split("-")[0] for f in folders] == ["features", "pixels"]
    for folder in folders:
        done = np.load(folder / "done.npy")
        assert done.all() and len(done) == 96
        assert np.abs(np.load(folder / "rows.npy").astype(np.float32)).sum() > 0


def test_worker_processes_deliver_the_same_batches(coco_split):
    from torch.utils.data import DataLoader

    data = CaptionedImages(coco_split, 16, preload=False)
    plain = [b for b in DataLoader(data, batch_size=8, collate_fn=collate)]
    workers = [b for b in DataLoader(data, batch_size=8, collate_fn=collate, num_workers=2)]
    assert [b.captions for b in plain] == [b.captions for b in workers]
    assert all(torch.equal(a.images, b.images) for a, b in zip(plain, workers))
    assert sum(len(b.errors) for b in workers) == 3


class _Payload:
    """Unpickling this writes a file: proof that something unpickled it."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_cache_file_of_python_objects_or_another_shape_is_refused_never_unpickled(tmp_path):
    key = {"kind": "test"}
    cache = ArrayCache(tmp_path, "pixels", key, rows=4, shape=(3, 2, 2), dtype="uint8")
    rows = cache.dir / "rows.npy"
    marker = tmp_path / "unpickled"
    payload = np.empty(4, dtype=object)
    payload[:] = [_Payload(str(marker))] * 4
    np.save(rows, payload, allow_pickle=True)
    with pytest.raises(OmniError, match="Python objects"):
        ArrayCache(tmp_path, "pixels", key, rows=4, shape=(3, 2, 2), dtype="uint8")
    assert not marker.exists()
    np.save(rows, np.zeros((4, 3, 5, 5), dtype=np.uint8))
    with pytest.raises(OmniError, match="not the expected"):
        ArrayCache(tmp_path, "pixels", key, rows=4, shape=(3, 2, 2), dtype="uint8")
    rows.write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(OmniError, match="damaged"):
        ArrayCache(tmp_path, "pixels", key, rows=4, shape=(3, 2, 2), dtype="uint8")
