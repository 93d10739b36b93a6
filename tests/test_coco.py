import json

import pytest
from PIL import Image

from omni_gpt2o.cli import main
from omni_gpt2o.data.dataset import CaptionedImages


def _coco_fixture(tmp_path):
    images = tmp_path / "train2017"
    images.mkdir()
    for i, mode in enumerate(["RGB", "L", "RGBA", "CMYK"], start=1):
        Image.new(mode, (40 + 10 * i, 30), 120).save(images / f"{i:012d}.{'jpg' if mode == 'CMYK' else 'png'}")
    (images / "000000000005.png").write_bytes(b"\x89PNG broken")
    names = [f"{i:012d}.png" for i in range(1, 4)] + ["000000000004.jpg", "000000000005.png", "000000000006.png"]
    data = {
        "images": [{"id": i, "file_name": n, "width": 40, "height": 30} for i, n in enumerate(names, start=1)],
        "annotations": [{"id": 10 * i + k, "image_id": i, "caption": f"  picture {i}  caption {k} "}
                        for i in range(1, 7) for k in range(5)]
        + [{"id": 99, "image_id": 1, "caption": "   "}],
    }
    data["images"].append({"id": 7, "file_name": "no_captions.png"})
    ann = tmp_path / "captions_train2017.json"
    ann.write_text(json.dumps(data))
    return ann, images


def test_prepare_coco_indexes_in_place_and_loader_survives_bad_files(tmp_path, capsys):
    ann, images = _coco_fixture(tmp_path)
    out = tmp_path / "split"
    assert main(["prepare-coco", "--annotations", str(ann), "--images", str(images), "--out", str(out),
                 "--write-descriptions", str(tmp_path / "descriptions.txt")]) == 0
    index = json.loads((out / "captions.json").read_text())
    assert len(index["images"]) == 6  # the picture without captions is left out
    assert len(index["annotations"]) == 30  # the blank caption is dropped
    assert index["annotations"][0]["caption"] == "picture 1 caption 0"
    assert all(img["file_name"].startswith(str(images.resolve())) for img in index["images"])
    assert not (out / "images").exists()  # referenced in place, not copied

    data = CaptionedImages(out, image_size=32)
    loaded = [data[i][0] for i in range(len(data))]
    assert [x is None for x in loaded] == [False, False, False, False, True, True]  # broken and missing
    assert all(x.shape == (3, 32, 32) for x in loaded if x is not None)

    lines = (tmp_path / "descriptions.txt").read_text().splitlines()
    assert len(lines) == 30 and lines[0] == "000000000001.png|picture 1 caption 0"
    # The seed's descriptions.txt comes back in the same way.
    assert main(["prepare-coco", "--annotations", str(tmp_path / "descriptions.txt"), "--images", str(images),
                 "--out", str(tmp_path / "from_txt")]) == 0
    again = json.loads((tmp_path / "from_txt" / "captions.json").read_text())
    assert len(again["images"]) == 6 and len(again["annotations"]) == 30


def test_prepare_coco_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "bad.json").write_text("{not json")
    assert main(["prepare-coco", "--annotations", str(tmp_path / "bad.json"), "--images", str(tmp_path / "imgs"),
                 "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err.strip()
    assert "not valid JSON" in err and "\n" not in err


def test_real_photographs_go_through_the_coco_path(tmp_path, micro_preset):
    pytest.importorskip("skimage")
    from omni_gpt2o.data.photos import PHOTOS, make_photo_captions

    index, images = make_photo_captions(tmp_path / "photos")
    split, cache = tmp_path / "split", tmp_path / "cache"
    assert main(["prepare-coco", "--annotations", str(index), "--images", str(images), "--out", str(split)]) == 0
    assert main(["precompute", "--data", str(split), "--cache-dir", str(cache), "--preset", "micro"]) == 0
    out = tmp_path / "run"
    assert main(["train", "--data", str(split), "--out", str(out), "--preset", "micro", "--batch-size", "4",
                 "--max-steps", "3", "--cache-dir", str(cache), "--align-weight", "0.1", "--device", "cpu"]) == 0
    state = json.loads((out / "checkpoints" / "last" / "trainer_state.json").read_text())
    assert state["step"] == 3 and not state.get("skipped")  # grey, RGBA and colour photographs all read
    assert len(json.loads((split / "captions.json").read_text())["annotations"]) == 2 * len(PHOTOS)
