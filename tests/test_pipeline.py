import numpy as np
import pytest
import torch
from PIL import Image

from omni_gpt2o.checkpoint import save_checkpoint
from omni_gpt2o.pipeline import OmniGPT2oPipeline
from omni_gpt2o.scheduler import sampling_schedule


@pytest.fixture
def pipe(micro_model):
    torch.nn.init.normal_(micro_model.decoder.conv_out.weight, std=0.3)  # make untrained outputs vary
    return OmniGPT2oPipeline(micro_model, "cpu", precision="fp32")


def _arr(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.int16)


def test_images_are_pil_rgb_of_the_model_size(pipe):
    out = pipe(["a red circle on the left", "a blue square"], num_inference_steps=2)
    assert len(out.images) == 2
    assert all(im.mode == "RGB" and im.size == (32, 32) for im in out.images)


def test_same_seed_same_picture_other_seed_other_picture(pipe):
    g = lambda s: torch.Generator().manual_seed(s)  # noqa: E731
    a = pipe("a red circle on the left", num_inference_steps=3, generator=g(1)).images[0]
    b = pipe("a red circle on the left", num_inference_steps=3, generator=g(1)).images[0]
    c = pipe("a red circle on the left", num_inference_steps=3, generator=g(2)).images[0]
    assert np.array_equal(_arr(a), _arr(b))
    assert not np.array_equal(_arr(a), _arr(c))


@pytest.mark.numerics
def test_a_picture_does_not_depend_on_its_batch(pipe):
    gens = lambda: [torch.Generator().manual_seed(s) for s in (5, 6)]  # noqa: E731
    both = pipe(["a red circle on the left", "a green triangle at the top"], num_inference_steps=2,
                generator=gens()).images
    alone = pipe(["a green triangle at the top"], num_inference_steps=2,
                 generator=[torch.Generator().manual_seed(6)]).images
    # Float rounding (other kernels for a batch of two) can tip a pixel's 8-bit rounding by one level, no more.
    assert np.abs(_arr(both[1]) - _arr(alone[0])).max() <= 1


def test_guidance_and_russian_and_huge_prompts(pipe):
    prompts = ["Космический кот на Марсе", "a " * 2000, "a red circle on the left"]
    plain = pipe(prompts, num_inference_steps=2, guidance_scale=1.0, generator=torch.Generator().manual_seed(0)).images
    guided = pipe(prompts, num_inference_steps=2, guidance_scale=3.0, generator=torch.Generator().manual_seed(0)).images
    assert len(guided) == 3
    assert any(not np.array_equal(_arr(p), _arr(g)) for p, g in zip(plain, guided))


def test_starting_from_a_draft_picture(pipe):
    draft = Image.new("RGB", (50, 40), (255, 0, 0))  # any size: resized and centre-cropped
    seen = []
    hook = pipe.model.image_encoder.register_forward_pre_hook(lambda mod, args: seen.append(args[0].clone()))
    out = pipe("a red square", num_inference_steps=2, draft=draft, draft_strength=0.2,
               generator=torch.Generator().manual_seed(0), return_drafts=True)
    pipe("a red square", num_inference_steps=2, draft=draft, draft_strength=1.0,
         generator=torch.Generator().manual_seed(0))
    hook.remove()
    weak_first, strong_first = seen[0], seen[2]  # each call encodes 2 drafts (one per step)
    red = lambda x: (x[:, 0] - x[:, 1]).mean().item()  # noqa: E731
    assert red(weak_first) > 1.0 and abs(red(strong_first)) < 0.2  # a weak start keeps the draft's colour
    assert _arr(out.drafts[0])[..., 0].min() == 255  # the start picture comes back with return_drafts
    with pytest.raises(ValueError, match="draft must be"):
        pipe("a red square", draft="watercolour")


@pytest.mark.parametrize("power", [1.0, 1.5])
def test_the_sampler_visits_its_schedule(pipe, power):
    seen = []
    hook = pipe.model.register_forward_pre_hook(lambda mod, args: seen.append(round(float(args[3][0]), 6)))
    pipe("a red square", num_inference_steps=4, guidance_scale=1.0, schedule_power=power)
    hook.remove()
    assert seen == [round(t, 6) for t in sampling_schedule(4, power=power)]


def test_bad_calls_raise(pipe):
    with pytest.raises(TypeError, match="prompt must be"):
        pipe(None)
    with pytest.raises(TypeError, match="path must be"):
        OmniGPT2oPipeline.from_pretrained(None)
    with pytest.raises(ValueError, match="guidance_scale"):
        pipe("a red circle", guidance_scale=float("nan"))
    with pytest.raises(ValueError, match="eta"):
        pipe("a red circle", eta=5.0)
    with pytest.raises(ValueError):
        pipe([])
    with pytest.raises(ValueError):
        pipe("a red circle", num_inference_steps=0)
    with pytest.raises(ValueError):
        pipe(["a", "b"], generator=[torch.Generator()])


@pytest.mark.numerics
def test_from_pretrained_gives_the_same_pictures(micro_model, pipe, tmp_path):
    save_checkpoint(micro_model, tmp_path / "ckpt")
    loaded = OmniGPT2oPipeline.from_pretrained(tmp_path / "ckpt", device="cpu", precision="fp32")
    a = pipe("a red circle", num_inference_steps=2, generator=torch.Generator().manual_seed(3)).images[0]
    b = loaded("a red circle", num_inference_steps=2, generator=torch.Generator().manual_seed(3)).images[0]
    assert np.array_equal(_arr(a), _arr(b))


def test_guidance_runs_the_vit_once_per_step(pipe):
    calls = []
    hook = pipe.model.image_encoder.register_forward_hook(lambda mod, args, out: calls.append(args[0].shape[0]))
    pipe(["a red square", "a blue circle"], num_inference_steps=3, guidance_scale=1.5)
    hook.remove()
    assert calls == [2, 2, 2]  # the two prompts' drafts, once a step: both halves of guidance share them


def test_without_a_generator_each_call_draws_a_fresh_seed_and_reports_it(pipe):
    a = pipe("a red circle", num_inference_steps=2)
    b = pipe("a red circle", num_inference_steps=2)
    assert isinstance(a.seed, int) and a.seed != b.seed
    again = pipe("a red circle", num_inference_steps=2, generator=torch.Generator().manual_seed(a.seed))
    assert again.seed is None and np.array_equal(_arr(again.images[0]), _arr(a.images[0]))


@pytest.mark.numerics
def test_output_types_agree(pipe):
    g = lambda: torch.Generator().manual_seed(4)  # noqa: E731
    pil = pipe(["a red circle", "a blue square"], num_inference_steps=2, generator=g()).images
    arr = pipe(["a red circle", "a blue square"], num_inference_steps=2, generator=g(), output_type="np").images
    pt = pipe(["a red circle", "a blue square"], num_inference_steps=2, generator=g(), output_type="pt").images
    assert arr.shape == (2, 32, 32, 3) and arr.dtype == np.float32 and 0 <= arr.min() and arr.max() <= 1
    assert pt.shape == (2, 3, 32, 32) and torch.equal(pt.permute(0, 2, 3, 1), torch.from_numpy(arr))  # one run's
    assert np.abs(np.round(arr[0] * 255) - _arr(pil[0])).max() <= 1
    with pytest.raises(ValueError, match="output_type"):
        pipe("a red circle", output_type="latent")


def test_num_images_per_prompt_gives_different_pictures_per_prompt(pipe):
    out = pipe(["a red circle", "a blue square"], num_inference_steps=2, num_images_per_prompt=3,
               generator=torch.Generator().manual_seed(0))
    assert len(out.images) == 6
    assert not np.array_equal(_arr(out.images[0]), _arr(out.images[1]))
    with pytest.raises(ValueError, match="num_images_per_prompt"):
        pipe("a red circle", num_images_per_prompt=0)


def test_negative_prompt_replaces_the_empty_prompt_of_guidance(pipe, monkeypatch):
    tokenized = []
    tokenize = pipe.model.tokenize
    monkeypatch.setattr(pipe.model, "tokenize", lambda texts: tokenized.append(list(texts)) or tokenize(texts))
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    plain = pipe("a red circle", num_inference_steps=2, guidance_scale=3.0, generator=g()).images[0]
    negative = pipe("a red circle", num_inference_steps=2, guidance_scale=3.0, generator=g(),
                    negative_prompt="a blue square").images[0]
    assert tokenized == [["a red circle"], [""], ["a red circle"], ["a blue square"]]
    assert not np.array_equal(_arr(plain), _arr(negative))
    with pytest.raises(TypeError, match="negative_prompt"):
        pipe("a red circle", negative_prompt=5)


def test_the_step_callback_sees_every_step_and_may_change_the_draft(pipe):
    seen = []

    def callback(p, step, strength, tensors):
        seen.append((step, strength, tensors["prediction"].shape))
        return {"draft": torch.zeros_like(tensors["draft"])} if step == 0 else None

    g = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    changed = pipe("a red circle", num_inference_steps=3, generator=g(), callback_on_step_end=callback).images[0]
    plain = pipe("a red circle", num_inference_steps=3, generator=g()).images[0]
    assert [s for s, _, _ in seen] == [0, 1, 2] and seen[0][1] == 1.0 and seen[0][2] == (1, 3, 32, 32)
    assert seen[1][1] < seen[0][1]
    assert not np.array_equal(_arr(changed), _arr(plain))


def test_save_pretrained_round_trips_and_to_casts(pipe, tmp_path):
    g = lambda: torch.Generator().manual_seed(2)  # noqa: E731
    a = pipe("a red circle", num_inference_steps=2, generator=g(), output_type="np").images
    pipe.save_pretrained(tmp_path / "saved")
    loaded = OmniGPT2oPipeline.from_pretrained(tmp_path / "saved", device="cpu", precision="fp32")
    assert np.array_equal(loaded("a red circle", num_inference_steps=2, generator=g(), output_type="np").images, a)
    half = loaded.to("cpu", torch.bfloat16)
    assert half is loaded and half.dtype == torch.bfloat16
    b = half("a red circle", num_inference_steps=2, generator=g(), output_type="np").images
    assert np.abs(b - a).mean() < 0.05  # the same picture, computed in bf16
    with pytest.raises(TypeError, match="path"):
        pipe.save_pretrained(None)
    with pytest.raises(TypeError, match="prompt"):
        pipe(123)
