"""Property-based tests (hypothesis): whatever the prompt, captions file or number, never a traceback and never
a NaN in an output file."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from omni_gpt2o.checkpoint import save_checkpoint
from omni_gpt2o.cli import main
from omni_gpt2o.pipeline import OmniGPT2oPipeline

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def pipe():
    from omni_gpt2o.model import build_model
    from tests.conftest import MICRO

    torch.manual_seed(0)
    return OmniGPT2oPipeline(build_model(MICRO), "cpu", precision="fp32")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, pipe):
    return save_checkpoint(pipe.model, tmp_path_factory.mktemp("ckpt") / "ckpt")


@SETTINGS
@given(prompt=st.one_of(st.text(max_size=200), st.text(min_size=1, max_size=5).map(lambda t: t * 2000),
                        st.sampled_from(["Космический кот на Марсе", "🐱🚀", "\x00\n\t", " " * 500])))
def test_any_prompt_draws_a_finite_picture(pipe, prompt):
    image = pipe(prompt, num_inference_steps=1, guidance_scale=1.0).images[0]
    pixels = np.asarray(image)
    assert pixels.shape == (32, 32, 3) and np.isfinite(pixels).all()


NUMBERS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**6, 10**6),
                    st.sampled_from(["abc", "", "1e400", "-0", "nan"]))


@SETTINGS
@given(guidance=NUMBERS, steps=NUMBERS, strength=NUMBERS)
def test_generate_flags_never_traceback_nor_write_nan(ckpt, tmp_path_factory, capsys, guidance, steps, strength):
    out = tmp_path_factory.mktemp("pictures")
    try:
        code = main(["generate", "--checkpoint", str(ckpt), "--prompt", "a red circle", "--out-dir", str(out),
                     "--guidance", str(guidance), "--steps", str(steps), "--draft-strength", str(strength)])
    except SystemExit as exit_:  # argparse refuses a flag: one line, exit 2
        code = exit_.code
    err = capsys.readouterr().err
    assert "Traceback" not in err and code in (0, 1, 2)
    if code == 0:
        for line in (out / "manifest.jsonl").read_text().splitlines():
            record = json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} in the manifest"))
            assert all(math.isfinite(v) for v in record.values() if isinstance(v, float))


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=12)
COCO_LIKE = st.fixed_dictionaries({"images": st.lists(st.dictionaries(st.sampled_from(["id", "file_name"]), JSON),
                                                      max_size=3),
                                   "annotations": st.lists(st.dictionaries(
                                       st.sampled_from(["id", "image_id", "caption"]), JSON), max_size=3)})


@SETTINGS
@given(index=st.one_of(JSON, COCO_LIKE))
def test_any_captions_file_is_indexed_or_refused_in_one_line(tmp_path_factory, capsys, index):
    folder = tmp_path_factory.mktemp("coco")
    (folder / "captions.json").write_text(json.dumps(index))
    code = main(["prepare-coco", "--annotations", str(folder / "captions.json"), "--images", str(folder),
                 "--out", str(folder / "split")])
    err = capsys.readouterr().err.strip()
    assert code in (0, 1) and "Traceback" not in err and "\n" not in err


def _constants(text: str) -> list[str]:
    """The non-JSON constants (NaN, Infinity) a JSON text holds."""
    found: list[str] = []
    json.loads(text, parse_constant=found.append)
    return found


_POSITIVE = st.floats(min_value=1e-300, max_value=1e300)
_SHARE = st.floats(0, 1)
TRAIN_RANGES = {"--learning-rate": _POSITIVE, "--kl-weight": st.floats(0, 1e300), "--ema-decay": _SHARE,
                "--caption-dropout": _SHARE, "--pure-noise": _SHARE, "--gradient-clip": st.floats(0, 1e300),
                "--noise-skew": _POSITIVE}
# Numbers in range everywhere (extremes included), and now and then one flag given anything at all.
TRAIN_NUMBERS = st.tuples(st.fixed_dictionaries(TRAIN_RANGES),
                          st.none() | st.tuples(st.sampled_from(sorted(TRAIN_RANGES)), NUMBERS)).map(
    lambda drawn: drawn[0] | dict([drawn[1]] if drawn[1] else []))


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck),
          phases=[Phase.explicit, Phase.reuse, Phase.generate])  # shrinking a training run takes minutes
@given(numbers=TRAIN_NUMBERS)
@example(numbers={"--learning-rate": 16.0, "--caption-dropout": 1.0})  # NaN losses once reached the state file
@example(numbers={"--learning-rate": 1e41})  # one step to infinite weights, once saved with exit 0
def test_train_numbers_never_traceback_nor_write_nan(shapes_splits, tmp_path_factory, capsys, numbers):
    from safetensors.torch import load_file

    import tests.conftest  # noqa: F401  (registers the micro preset)

    train_dir, _ = shapes_splits
    out = tmp_path_factory.mktemp("run")
    flags = [str(x) for pair in numbers.items() for x in pair]
    try:
        code = main(["train", "--preset", "micro", "--data", str(train_dir), "--out", str(out), "--overwrite",
                     "--max-steps", "3", "--batch-size", "8", "--device", "cpu", "--precision", "fp32",
                     "--log-every", "1", *flags])
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err
    assert "Traceback" not in err and code in (0, 1, 2)
    for path in out.rglob("*.json"):
        assert not {"NaN", "Infinity", "-Infinity"} & set(_constants(path.read_text())), path
    if code == 0:
        for path in out.rglob("*.safetensors"):
            assert all(torch.isfinite(t).all() for t in load_file(path).values()), path
