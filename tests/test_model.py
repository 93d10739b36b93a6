import pytest
import torch

from omni_gpt2o.model import LossWeights, OmniOutput, compute_losses

from .numerics import FLOAT64_ATOL, assert_same_math


def _batch(model, prompts, seed=0):
    """Tokens, mask, a seeded noise draft and full strength, in the model's dtype (float64 where a test compares
    two computations of the same math: see tests/numerics.py)."""
    dtype = next(model.decoder.parameters()).dtype
    g = torch.Generator().manual_seed(seed)
    ids, mask = model.tokenize(prompts)
    size = model.config.image_size
    draft = torch.randn(len(prompts), 3, size, size, generator=g, dtype=dtype)
    return ids, mask, draft, torch.ones(len(prompts), dtype=dtype)


def test_output_shapes(micro_model):
    m = micro_model
    ids, mask, draft, t = _batch(m, ["a red circle on the left", "a blue square"])
    out = m(ids, mask, draft, t)
    p = m.image_encoder.num_patches
    assert out.image.shape == (2, 3, 32, 32)
    assert out.mean.shape == out.logvar.shape == (2, p, m.config.latent_dim)
    assert out.patch_embeds.shape == (2, p, m.image_encoder.width)


def test_gpt2_reads_text_and_draft_in_one_batched_pass(micro_model):
    m = micro_model
    calls = []
    hook = m.text_encoder.model.register_forward_hook(lambda mod, args, kwargs, out: calls.append(kwargs),
                                                      with_kwargs=True)
    ids, mask, draft, t = _batch(m, ["a red circle on the left"] * 3)
    m(ids, mask, draft, t)
    hook.remove()
    assert len(calls) == 1
    seq = calls[0]["inputs_embeds"]
    assert seq.shape[:2] == (3, ids.shape[1] + 1 + m.image_encoder.num_patches)


def test_only_the_glue_gets_gradients(micro_model):
    m = micro_model
    ids, mask, draft, t = _batch(m, ["a red circle on the left", "a green triangle at the top"])
    out = m(ids, mask, draft, t, sample_latents=True)
    clean = torch.zeros_like(draft)
    losses = compute_losses(out, clean, m.image_encoder(clean), LossWeights(alignment=0.1))
    losses["loss"].backward()
    for name, p in m.named_parameters():
        if name.startswith(("text_encoder", "image_encoder")):
            assert not p.requires_grad and p.grad is None, name
    trained = dict(m.named_parameters())
    for name in ("separator", "draft_projection.proj.weight", "draft_projection.row", "latent_heads.mean.weight",
                 "latent_heads.logvar.weight", "alignment_head.weight", "decoder.conv_out.weight"):
        assert trained[name].grad is not None and trained[name].grad.abs().sum() > 0, name
    assert set(m.trainable_state_dict()) == {k for k in m.state_dict() if not k.startswith(m.FROZEN)}


def test_the_prompt_changes_the_picture(micro_model):
    m = micro_model
    torch.nn.init.normal_(m.decoder.conv_out.weight, std=0.5)  # an untrained decoder is nearly constant
    _, _, draft, t = _batch(m, ["x", "x"])
    ids, mask = m.tokenize(["a red circle on the left", "a blue square at the top"])
    out = m(ids, mask, draft[:1].repeat(2, 1, 1, 1), t)
    assert not torch.allclose(out.image[0], out.image[1], atol=1e-4)


@pytest.mark.numerics
def test_left_padding_does_not_change_a_prompt(micro_model):
    m = micro_model.double()  # batch of one against batch of two: other kernels, so float64
    ids, mask, draft, t = _batch(m, ["a red circle"])
    alone = m(ids, mask, draft, t).image
    ids2, mask2 = m.tokenize(["a red circle", "there is a large blue square to the left of a red circle"])
    assert mask2[0, 0] == 0  # the short prompt is padded on the left
    batched = m(ids2, mask2, draft.repeat(2, 1, 1, 1), t.repeat(2)).image
    assert torch.isfinite(batched).all()
    assert_same_math(batched[0], alone[0])


@pytest.mark.parametrize("prompt", ["Космический кот на Марсе", "", "word " * 500, "🐱 ∑ 中文"])
def test_any_text_is_read(micro_model, prompt):
    m = micro_model
    ids, mask, draft, t = _batch(m, [prompt])
    assert ids.shape[1] <= m.text_encoder.max_text_tokens
    assert torch.isfinite(m(ids, mask, draft, t).image).all()


@pytest.mark.numerics
def test_loss_terms():
    b, p, d = 2, 4, 3
    f64 = dict(dtype=torch.float64)  # the terms against their closed forms, in float64 (tests/numerics.py)
    clean = torch.rand(b, 3, 8, 8, **f64)
    tokens = torch.randn(b, p, 5, **f64)
    perfect = OmniOutput(image=clean.clone(), mean=torch.zeros(b, p, d, **f64), logvar=torch.zeros(b, p, d, **f64),
                         patch_embeds=tokens * 3)  # cosine ignores scale
    losses = compute_losses(perfect, clean, tokens, LossWeights(kl=1.0, alignment=1.0))
    assert losses["recon"].item() == 0
    assert losses["kl"].item() == 0  # posterior equals the N(0, 1) prior
    assert losses["alignment"].item() == pytest.approx(0, abs=FLOAT64_ATOL)
    off = OmniOutput(image=clean + 0.5, mean=torch.ones(b, p, d, **f64), logvar=torch.zeros(b, p, d, **f64),
                     patch_embeds=-tokens)
    losses = compute_losses(off, clean, tokens, LossWeights(kl=2.0, alignment=0.5))
    assert losses["recon"].item() == pytest.approx(0.25, abs=FLOAT64_ATOL)
    assert losses["kl"].item() == pytest.approx(0.5, abs=FLOAT64_ATOL)  # 0.5 * mean^2
    assert losses["alignment"].item() == pytest.approx(2.0, abs=FLOAT64_ATOL)  # cosine -1
    assert losses["loss"].item() == pytest.approx(0.25 + 2.0 * 0.5 + 0.5 * 2.0, abs=FLOAT64_ATOL)


def test_a_patched_decoder_still_draws_every_pixel():
    from omni_gpt2o.config import get_preset
    from omni_gpt2o.decoder import PixelDecoder

    torch.manual_seed(0)
    decoder = PixelDecoder(latent_dim=8, context_dim=16, channels=(16, 32), attention_levels=(1,), heads=2, patch=2)
    draft = torch.randn(2, 3, 32, 32, requires_grad=True)
    context, mask = torch.randn(2, 5, 16), torch.ones(2, 5)
    image = decoder(torch.randn(2, 8, 4, 4), draft, torch.rand(2), context, mask)
    assert image.shape == (2, 3, 32, 32)  # full resolution out, not a smaller picture
    # Each output pixel of a 2 x 2 block is its own prediction: the four differ.
    blocks = image[0, 0].unfold(0, 2, 2).unfold(1, 2, 2).reshape(-1, 4)
    assert (blocks.std(dim=1) > 0).float().mean() > 0.9
    image.sum().backward()
    assert draft.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="divisible by 6"):
        get_preset("tiny").replace(decoder_patch=3)  # 2 levels: 3 x 2 = 6 does not divide 64 px


@pytest.mark.numerics
def test_edge_loss_sees_outlines_not_offsets():
    torch.manual_seed(0)
    f64 = dict(dtype=torch.float64)  # identities of the losses, in float64 (tests/numerics.py)
    clean = -torch.ones(2, 3, 16, 16, **f64)
    clean[:, :, 4:12, 4:12] = 1.0  # a square on black

    def out(image):
        b, p, d = 2, 4, 3
        return OmniOutput(image=image, mean=torch.zeros(b, p, d, **f64), logvar=torch.zeros(b, p, d, **f64),
                          patch_embeds=torch.zeros(b, p, 5, **f64))

    shifted = compute_losses(out(clean + 0.3), clean, None, LossWeights(edge=1.0))
    assert shifted["recon"] > 0 and shifted["edge"].item() == pytest.approx(0, abs=FLOAT64_ATOL)  # same outline
    blurred = torch.nn.functional.avg_pool2d(clean, 3, stride=1, padding=1, count_include_pad=False)
    soft = compute_losses(out(blurred), clean, None, LossWeights(edge=2.0))
    assert soft["edge"] > 0  # a blurred outline costs
    assert_same_math(soft["loss"], soft["recon"] + 2.0 * soft["edge"] + 1e-3 * soft["kl"])


def test_layer_mix_gives_the_decoder_every_gpt2_layer(micro_preset):
    from omni_gpt2o.model import build_model

    torch.manual_seed(0)
    m = build_model(micro_preset.replace(text_layer_mix=True))
    assert m.text_layer_mix.weights.numel() == m.text_encoder.model.config.n_layer + 1  # embeddings + layers
    ids, mask = m.tokenize(["a cyan circle"])
    embeds = m.text_encoder.embed(ids)
    layers = m.text_encoder(embeds, mask, all_layers=True)
    assert torch.equal(layers[-1], m.text_encoder(embeds, mask))  # the latents still read the last layer
    with torch.no_grad():  # as after some training: no zero-initialised layer hides the text
        for p in m.decoder.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    ids, mask, draft, t = _batch(m, ["a cyan circle on the left"])
    before = m(ids, mask, draft, t).image
    assert m.text_layer_mix.weights.softmax(0)[0] > 0.5  # it starts leaning on the input embeddings
    with torch.no_grad():
        m.text_layer_mix.weights.zero_()  # an even mix instead
    after = m(ids, mask, draft, t)
    assert not torch.allclose(before, after.image, atol=1e-5)
    after.image.sum().backward()
    assert m.text_layer_mix.weights.grad.abs().sum() > 0  # trained, with the glue
    assert "text_layer_mix.weights" in m.trainable_state_dict()


@pytest.mark.numerics
def test_cross_attention_can_read_values_other_than_its_keys():
    from omni_gpt2o.decoder import CrossAttention

    torch.manual_seed(0)
    attn = CrossAttention(channels=8, context_dim=6, heads=2).double()  # same-math checks in float64
    torch.nn.init.normal_(attn.out.weight, std=0.5)  # as after training: the zero start hides the read
    x, mask = torch.randn(1, 8, 3, 3, dtype=torch.float64), torch.ones(1, 4, dtype=torch.float64)
    keys, values = torch.randn(1, 4, 6, dtype=torch.float64), torch.randn(1, 4, 6, dtype=torch.float64)
    assert_same_math(attn(x, keys, mask, values=keys), attn(x, keys, mask))  # the same when both agree
    same_keys = torch.ones(1, 4, 6, dtype=torch.float64)  # tokens alike: attention is even, only values count
    even = attn(x, same_keys, mask, values=values)
    assert_same_math(attn(x, same_keys, mask, values=values.flip(1)), even)  # an even sum, in another order
    assert not torch.allclose(attn(x, same_keys, mask, values=values + 1), even, atol=1e-3)
    assert not torch.allclose(attn(x, keys, mask, values=values), even, atol=1e-3)  # keys choose what is read


@pytest.mark.numerics
def test_word_values_read_gpt2s_input_embeddings(micro_preset):
    from omni_gpt2o.model import build_model

    torch.manual_seed(0)
    plain = build_model(micro_preset.replace(text_layer_mix=True)).double()  # float64: same-math checks below
    torch.manual_seed(0)
    words = build_model(micro_preset.replace(text_layer_mix=True, decoder_word_values=True)).double()
    assert plain.trainable_state_dict().keys() == words.trainable_state_dict().keys()  # checkpoints load alike
    words.load_state_dict(plain.state_dict())
    with torch.no_grad():  # as after some training: no zero-initialised layer hides the text
        for a, b in zip(plain.decoder.parameters(), words.decoder.parameters()):
            a.add_(torch.randn_like(a) * 0.05)
            b.copy_(a)
    ids, mask, draft, t = _batch(words, ["a cyan circle on the left"])
    assert not torch.allclose(plain(ids, mask, draft, t).image, words(ids, mask, draft, t).image, atol=1e-5)
    seen = {}
    words.decoder.register_forward_hook(lambda mod, args, kwargs, out: seen.update(kwargs), with_kwargs=True)
    words.text_encoder.register_forward_hook(lambda mod, args, out: seen.update(layers=out))
    out = words(ids, mask, draft, t)
    first = seen["layers"][0][:, : ids.shape[1] + 1]  # GPT-2's input embeddings of the text and separator
    assert_same_math(seen["values"], torch.nn.functional.layer_norm(first, first.shape[-1:]))
    out.image.sum().backward()
    assert words.text_layer_mix.weights.grad.abs().sum() > 0  # the keys still come from the trained mix


@pytest.mark.numerics
def test_token_shift_adds_the_word_before_each_token(micro_preset):
    from omni_gpt2o.model import build_model

    torch.manual_seed(0)
    plain = build_model(micro_preset.replace(text_layer_mix=True)).double()  # float64: same-math checks below
    torch.manual_seed(0)
    shift = build_model(micro_preset.replace(text_layer_mix=True, text_token_shift=True)).double()
    shift.load_state_dict(plain.state_dict(), strict=False)
    ids, mask, draft, t = _batch(shift, ["a cyan circle on the left", "a red square"])
    seen = {}
    shift.decoder.register_forward_hook(lambda mod, args, out: seen.update(context=args[3]))
    shift.text_encoder.register_forward_hook(lambda mod, args, out: seen.update(layers=out))
    with torch.no_grad():  # zero-initialised: a fresh model reads the plain context
        assert_same_math(shift(ids, mask, draft, t).image, plain(ids, mask, draft, t).image)
        shift.token_shift.weight.copy_(torch.randn_like(shift.token_shift.weight) * 0.1)
        shift(ids, mask, draft, t)
    words = seen["layers"][0][:, : ids.shape[1] + 1]
    words = torch.nn.functional.layer_norm(words, words.shape[-1:])
    mixed = shift.text_layer_mix([h[:, : ids.shape[1] + 1] for h in seen["layers"]])
    added = seen["context"] - mixed
    # token i carries word i - 1 (the first token nothing), through the learned projection
    assert_same_math(added[:, 1:], shift.token_shift(words[:, :-1]), scale=float(mixed.detach().abs().max()))
    assert_same_math(added[:, 0], torch.zeros_like(added[:, 0]), scale=float(mixed.detach().abs().max()))


def test_state_before_each_token_skips_left_padding():
    from omni_gpt2o.model import state_before_each_token

    states = torch.arange(1.0, 9.0).view(2, 4, 1)  # two prompts of 4 tokens, the second left-padded by 2
    mask = torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1]])
    before = state_before_each_token(states, mask)
    assert before[0, :, 0].tolist() == [0.0, 1.0, 2.0, 3.0]  # token i gets token i - 1; the first nothing
    assert before[1, 2:, 0].tolist() == [0.0, 7.0]  # the first real token sees no padding state


@pytest.mark.numerics
def test_shifted_keys_pick_each_word_by_the_state_before_it(micro_preset):
    from omni_gpt2o.model import build_model

    model = build_model(micro_preset.replace(text_layer_mix=True, decoder_shifted_keys=True)).double()  # float64
    with torch.no_grad():  # as after some training: no zero-initialised layer hides the text
        for p in model.decoder.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    seen = {}
    model.decoder.register_forward_hook(lambda mod, args, kwargs, out: seen.update(keys=args[3], **kwargs),
                                        with_kwargs=True)
    ids, mask, draft, t = _batch(model, ["a cyan circle on the left", "a cyan square on the left"])
    out = model(ids, mask, draft, t)
    keys, values = seen["keys"], seen["values"]
    assert_same_math(keys[:, 1:], values[:, :-1])
    assert keys[:, 0].abs().max() == 0
    # "circle" and "square" differ in what is read there, never in how the word is found: GPT-2 is causal
    shape = (ids[0] != ids[1]).nonzero().item()
    assert_same_math(keys[0, : shape + 1], keys[1, : shape + 1])
    assert not torch.allclose(values[0, shape], values[1, shape], atol=1e-3)
    assert not torch.allclose(out.image[0], out.image[1], atol=1e-4)  # the shape word still reaches the picture
    out.image.sum().backward()
    assert model.text_layer_mix.weights.grad.abs().sum() > 0


@pytest.mark.numerics
def test_shifted_keys_with_word_values_read_each_word_itself(micro_preset):
    """Both options: a word is found by the mixed state before it and read as its own input embedding, so
    neither the key nor the value of "circle" after "cyan" is a state that a held-out pair makes new."""
    from omni_gpt2o.model import build_model

    model = build_model(micro_preset.replace(text_layer_mix=True, decoder_shifted_keys=True,
                                             decoder_word_values=True)).double()  # float64: same-math checks
    with torch.no_grad():
        for p in model.decoder.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    seen = {}
    model.decoder.register_forward_hook(lambda mod, args, kwargs, out: seen.update(keys=args[3], **kwargs),
                                        with_kwargs=True)
    model.text_encoder.register_forward_hook(lambda mod, args, out: seen.update(layers=out))
    prompts = ["a red square to the left of a cyan circle", "a red circle to the left of a cyan square"]
    ids, mask, draft, t = _batch(model, prompts)
    out = model(ids, mask, draft, t)
    text = [h[:, : ids.shape[1] + 1] for h in seen["layers"]]
    mixed = model.text_layer_mix(text)
    assert_same_math(seen["keys"][:, 1:], mixed[:, :-1])  # keys: the mix, one token late
    words = torch.nn.functional.layer_norm(text[0], text[0].shape[-1:])
    assert_same_math(seen["values"], words)  # values: each word itself
    last = ids.shape[1] - 1  # "circle" / "square": read as themselves, found by a key that saw the first object
    assert not torch.allclose(seen["values"][0, last], seen["values"][1, last], atol=1e-3)
    assert not torch.allclose(seen["keys"][0, last], seen["keys"][1, last], atol=1e-3)
    assert not torch.allclose(out.image[0], out.image[1], atol=1e-4)
    out.image.sum().backward()
    assert model.text_layer_mix.weights.grad.abs().sum() > 0  # the keys still train the mix


def test_without_the_text_pool_the_prompt_reaches_the_decoder_only_through_its_attention(micro_preset):
    """`decoder_text_pool=False`: every block's FiLM sees the draft strength alone, the same for any prompt, and
    the prompt still changes the picture (through cross-attention, which still trains)."""
    from omni_gpt2o.decoder import ResBlock
    from omni_gpt2o.model import build_model

    torch.manual_seed(0)
    model = build_model(micro_preset.replace(decoder_text_pool=False))
    assert model.decoder.text_pool is None
    assert not any("text_pool" in k for k in model.trainable_state_dict())
    with torch.no_grad():
        for p in model.decoder.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    def record_films(m) -> list:  # what each decoder block's FiLM is given, block by block
        films = []
        for block in m.decoder.modules():
            if isinstance(block, ResBlock):
                block.register_forward_pre_hook(lambda mod, args: films.append(args[1]))
        return films

    films = record_films(model)
    prompts = ["a red square to the left of a cyan circle", "a blue triangle at the top"]
    ids, mask, draft, t = _batch(model, prompts)
    draft = draft[:1].expand(2, -1, -1, -1)  # one draft for both: only the prompts differ
    out = model(ids, mask, draft, t)
    assert films and all(torch.equal(emb[0], emb[1]) for emb in films)  # FiLM: no word of the prompt
    assert not torch.allclose(out.image[0], out.image[1], atol=1e-4)  # the words still reach the picture
    out.image.sum().backward()
    assert model.decoder.down[0].attns[0].to_kv.weight.grad.abs().sum() > 0
    # With the pool (the default) the same prompts give the blocks different FiLM inputs.
    pooled = build_model(micro_preset)
    films = record_films(pooled)
    pooled(ids, mask, draft, t)
    assert films and not torch.equal(films[0][0], films[0][1])


@pytest.mark.numerics
def test_whole_words_read_a_two_piece_colour_as_one_word(micro_preset):
    """`decoder_whole_words`: GPT-2 cuts "magenta" into " mag" + "enta". The decoder reads it once, at "enta",
    as the mean of both pieces, found by the state before " mag"; prompts of one-piece words are read as before."""
    from omni_gpt2o.model import build_model

    config = micro_preset.replace(text_layer_mix=True, decoder_shifted_keys=True, decoder_word_values=True)
    torch.manual_seed(0)
    pieces = build_model(config).double()  # float64: same-math checks below
    whole = build_model(config.replace(decoder_whole_words=True)).double()
    whole.load_state_dict(pieces.state_dict())  # the same weights: the buffer is not part of a checkpoint
    assert whole.trainable_state_dict().keys() == pieces.trainable_state_dict().keys()
    with torch.no_grad():
        for a, b in zip(pieces.decoder.parameters(), whole.decoder.parameters()):
            a.add_(torch.randn_like(a) * 0.05)
            b.copy_(a)
    seen = {}
    whole.decoder.register_forward_hook(lambda mod, args, kwargs, out: seen.update(keys=args[3], mask=args[4],
                                                                                     **kwargs), with_kwargs=True)
    whole.text_encoder.register_forward_hook(lambda mod, args, out: seen.update(layers=out))
    prompts = ["a magenta triangle on the left", "a cyan circle on the right"]
    ids, mask, draft, t = _batch(whole, prompts)
    tokens = [whole.text_encoder.tokenizer.convert_ids_to_tokens(row) for row in ids.tolist()]
    mag, enta = tokens[0].index("Ġmag"), tokens[0].index("enta")
    assert enta == mag + 1
    out = whole(ids, mask, draft, t)
    text = [h[:, : ids.shape[1] + 1] for h in seen["layers"]]
    words = torch.nn.functional.layer_norm(text[0], text[0].shape[-1:])
    mixed = whole.text_layer_mix(text)
    assert seen["mask"][0, mag] == 0 and seen["mask"][0, enta] == 1  # one word, read once
    assert seen["mask"][0].sum() == mask[0].sum()  # 7 pieces + separator - " mag"
    assert_same_math(seen["values"][0, enta], (words[0, mag] + words[0, enta]) / 2)
    assert_same_math(seen["keys"][0, enta], mixed[0, mag - 1])  # the state at "a"
    assert_same_math(seen["keys"][0, enta + 1], mixed[0, enta])  # "triangle": after the word
    # One-piece words only: the same keys, values and picture as reading pieces.
    cyan = whole(ids[1:], mask[1:], draft[1:], t[1:]).image
    assert_same_math(cyan, pieces(ids[1:], mask[1:], draft[1:], t[1:]).image)
    assert not torch.allclose(out.image[:1], pieces(ids[:1], mask[:1], draft[:1], t[:1]).image, atol=1e-5)
    out.image.sum().backward()
    assert whole.text_layer_mix.weights.grad.abs().sum() > 0
