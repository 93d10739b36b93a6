"""A small COCO-layout split of real photographs: the sample pictures scikit-image ships, with captions written
here, as `captions_*.json` + a picture folder, the way COCO 2017 comes. For checks of the COCO path where COCO
cannot be downloaded (`scripts/gpu-check.sh`, tests):

    python -m omni_gpt2o.data.photos --out runs/photos   # then: omni-gpt2o prepare-coco --annotations
                                                         #   runs/photos/captions.json --images runs/photos/images
Needs scikit-image (`pip install scikit-image`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from omni_gpt2o.fileio import OmniError

# Colour, grey and RGBA pictures of different sizes and aspect ratios, as a real split has them.
PHOTOS = {
    "astronaut": ["an astronaut in a white suit in front of a flag", "a portrait of a smiling astronaut"],
    "chelsea": ["a ginger cat looking to the side", "a close up of a tabby cat's face"],
    "coffee": ["a cup of coffee on a saucer with a spoon", "a white coffee cup on a red table"],
    "rocket": ["a rocket on its launch pad under a blue sky", "a space rocket ready for take off"],
    "hubble_deep_field": ["thousands of galaxies in deep space", "a telescope picture of distant galaxies"],
    "immunohistochemistry": ["a stained tissue sample under a microscope", "brown and blue cells in a slide"],
    "colorwheel": ["a colour wheel with every hue", "a round rainbow of colours on white"],
    "logo": ["the logo of an image processing library", "a snake drawn in green and blue"],
    "camera": ["a black and white photo of a man with a camera", "a photographer on a lawn, in grey"],
    "coins": ["old coins on a dark background", "rows of grey coins seen from above"],
    "moon": ["the surface of the moon with craters", "a grey photograph of the moon's craters"],
    "clock": ["a clock face in black and white", "an analogue clock seen at an angle"],
}


def make_photo_captions(out: str | Path) -> tuple[Path, Path]:
    """Write `out/images/*.jpg|png` and `out/captions.json` (COCO's captions format); return both paths."""
    try:
        import skimage.data
    except ImportError as err:
        raise OmniError("the sample photographs come with scikit-image: pip install scikit-image") from err

    out = Path(out)
    images_dir = out / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for image_id, (name, captions) in enumerate(PHOTOS.items(), start=1):
        pixels = getattr(skimage.data, name)()
        picture = Image.fromarray(np.asarray(pixels))
        file_name = f"{image_id:012d}.png" if picture.mode == "RGBA" else f"{image_id:012d}.jpg"
        picture.save(images_dir / file_name)
        images.append({"id": image_id, "file_name": file_name, "width": picture.width, "height": picture.height})
        for caption in captions:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "caption": caption})
    index = out / "captions.json"
    index.write_text(json.dumps({"images": images, "annotations": annotations}, indent=1))
    return index, images_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/photos")
    args = parser.parse_args()
    index, images = make_photo_captions(args.out)
    print(f"wrote {len(PHOTOS)} photographs to {images} and their captions to {index}")


if __name__ == "__main__":
    main()
