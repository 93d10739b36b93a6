import pytest
import torch
from transformers import GPT2Model
from transformers.activations import NewGELUActivation

from omni_gpt2o.backbones import ModelLoadError, gpt2_tokenizer_offline, load_image_encoder, load_text_encoder
from omni_gpt2o.config import OmniConfig, get_preset

from .numerics import assert_same_math


def test_offline_tokenizer_is_gpt2s_real_bpe():
    tok = gpt2_tokenizer_offline()
    assert len(tok) == 50257
    assert tok("Hello world").input_ids == [15496, 995]  # GPT-2's own ids
    assert tok.decode(tok("Космический кот на Марсе").input_ids) == "Космический кот на Марсе"


def test_random_backbones_are_made_from_the_seed(micro_preset):
    a = load_text_encoder(micro_preset)
    b = load_text_encoder(micro_preset)
    c = load_text_encoder(micro_preset.replace(backbone_seed=1))
    wa, wb, wc = (e.model.h[0].attn.c_attn.weight for e in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)
    va, vb = load_image_encoder(micro_preset), load_image_encoder(micro_preset)
    assert torch.equal(va.model.patch_embed.proj.weight, vb.model.patch_embed.proj.weight)


def test_backbones_round_trip_through_from_pretrained_folders(micro_preset, tmp_path):
    text, image = load_text_encoder(micro_preset), load_image_encoder(micro_preset)
    text.save(tmp_path)
    image.save(tmp_path, micro_preset.image_model_kwargs)
    assert (tmp_path / "text_encoder" / "model.safetensors").is_file()
    assert (tmp_path / "image_encoder" / "model.safetensors").is_file()
    text2, image2 = load_text_encoder(micro_preset, tmp_path), load_image_encoder(micro_preset, tmp_path)
    for (k, v), (_, v2) in zip(text.state_dict().items(), text2.state_dict().items()):
        assert torch.equal(v, v2), k
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.equal(image(x), image2(x))
    assert text2.tokenize(["a red circle"])[0].tolist() == text.tokenize(["a red circle"])[0].tolist()
    # A user can point the config at such folders directly, as at a download.
    by_path = micro_preset.replace(text_model=str(tmp_path / "text_encoder"), text_model_config=None,
                                   image_model=str(tmp_path / "image_encoder"), image_model_pretrained=True)
    for f in (tmp_path / "tokenizer").iterdir():  # a hub GPT-2 folder holds model and tokenizer together
        (tmp_path / "text_encoder" / f.name).write_bytes(f.read_bytes())
    assert torch.equal(load_image_encoder(by_path)(x), image(x))
    assert torch.equal(load_text_encoder(by_path).model.wte.weight, text.model.wte.weight)


def _ours_against_published_gpt2(text, plain) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    """(ours, theirs) for the last states of our GPT-2 and of the published one, then for the gradient of a sum of
    squares through every layer. Both run in float64: the comparison is of the math, not of
    the order in which one CPU's kernels add (the same test in float32 differs by a rounding step or two on
    AVX-512/AMX CPUs)."""
    text, plain = text.double(), plain.double()
    ids, mask = text.tokenize(["a red circle above a blue square", "Космический кот на Марсе"])
    embeds = text.embed(ids).detach().requires_grad_()
    ours = text(embeds, mask)
    theirs = plain(inputs_embeds=embeds, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)
                   ).last_hidden_state
    g_ours, = torch.autograd.grad(ours.square().sum(), embeds)
    g_theirs, = torch.autograd.grad(theirs.square().sum(), embeds)
    return (ours, theirs), (g_ours, g_theirs)


@pytest.mark.numerics
def test_gpt2_runs_the_fused_gelu_and_computes_the_same_states(micro_preset, tmp_path):
    text = load_text_encoder(micro_preset)
    assert not any(isinstance(m, NewGELUActivation) for m in text.modules())
    assert all(isinstance(block.mlp.act, torch.nn.GELU) for block in text.model.h)
    text.save(tmp_path)  # the saved model is GPT-2 as published: its own activation, same weights
    plain = GPT2Model.from_pretrained(tmp_path / "text_encoder", use_safetensors=True).eval()
    assert plain.config.activation_function == "gelu_new"
    assert isinstance(plain.h[0].mlp.act, NewGELUActivation)
    for ours, theirs in _ours_against_published_gpt2(text, plain):
        assert_same_math(ours, theirs)  # float64: rounding budget from float64's eps (tests/numerics.py)

    # The check can fail: the exact GELU in place of the tanh one is a different function, and is caught.
    for block in text.model.h:
        block.mlp.act = torch.nn.GELU(approximate="none")
    (ours, theirs), (g_ours, g_theirs) = _ours_against_published_gpt2(text, plain)
    with pytest.raises(AssertionError):
        assert_same_math(ours, theirs)
    with pytest.raises(AssertionError):
        assert_same_math(g_ours, g_theirs)


def test_vit_gives_one_token_per_patch(micro_preset):
    vit = load_image_encoder(micro_preset)
    tokens = vit(torch.zeros(3, 3, 32, 32))
    assert tokens.shape == (3, 16, 64) and vit.grid_size == (4, 4)
    other_size = vit(torch.zeros(1, 3, 48, 48))  # resized to the ViT's input
    assert other_size.shape == (1, 16, 64)


@pytest.mark.parametrize("loader,field", [(load_text_encoder, "text_model"), (load_image_encoder, "image_model")])
def test_a_missing_hub_model_is_one_clear_error(loader, field, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    name = "omni-gpt2o-tests/no-such-model" if field == "text_model" else "hf-hub:omni-gpt2o-tests/no-such-vit"
    config = OmniConfig(**{field: name})
    with pytest.raises(ModelLoadError) as info:
        loader(config)
    message = str(info.value)
    assert name in message and "--preset tiny" in message and "HF_HUB_OFFLINE" in message
    assert "\n" not in message


def test_real_presets_name_hub_models():
    real = get_preset("gpt2-vit-b")
    assert real.text_model == "gpt2" and real.text_model_config is None
    assert real.image_model.startswith("vit_base_patch16_224") and real.image_model_pretrained
    assert not real.builds_backbones and get_preset("tiny").builds_backbones
    with pytest.raises(ValueError, match="unknown preset"):
        get_preset("nope")


def test_a_planted_pickle_is_never_opened(micro_model, tmp_path):
    import pickle

    from omni_gpt2o.checkpoint import load_checkpoint, save_checkpoint
    from omni_gpt2o.fileio import OmniError

    marker = tmp_path / "pwned"

    class Payload:  # unpickling it would create the marker file
        def __reduce__(self):
            return (open, (str(marker), "w"))

    ckpt = save_checkpoint(micro_model, tmp_path / "ckpt")
    for sub in ("image_encoder", "text_encoder"):
        folder = ckpt / sub
        for name in ("pytorch_model.bin", "model.bin", "model.pt", "open_clip_pytorch_model.bin"):
            (folder / name).write_bytes(pickle.dumps(Payload()))
        (folder / "model.safetensors").unlink()
        with pytest.raises(OmniError, match="read from safetensors only"):
            load_checkpoint(ckpt)
        save_checkpoint(micro_model, tmp_path / "fresh")
        (folder / "model.safetensors").write_bytes((tmp_path / "fresh" / sub / "model.safetensors").read_bytes())
    for name in ("pytorch_model.bin", "optimizer.pt", "training_state.pt"):
        (ckpt / name).write_bytes(pickle.dumps(Payload()))
    load_checkpoint(ckpt)  # loads from safetensors beside the planted files
    assert not marker.exists()
