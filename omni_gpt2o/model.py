"""The model: frozen backbones, the trained glue between them, and the whole data flow in one place.

The whole data flow, in one place (the LM: a causal language model, GPT-2 by default):

    prompt ──tokenizer──> tokens ──LM embeddings──┐
    draft image ──ViT──> patch tokens ──projection──>├─ [text, SEP, draft patches] ──LM──> states
                                                     │
    states at draft patches ──heads──> VAE latent per patch (mean, log-variance) ──sample──> z grid
    z grid + draft + LM text states ──decoder──> image
    (text states: the LM's last layer, or with `text_layer_mix` a learned mix of its layers (`text_layers`);
     with `text_token_shift` each token also carries the word before it; with `decoder_shifted_keys`
     the decoder picks each token by the state before it)

With `lm_reads_draft=False` the LM reads the prompt alone (its states cacheable per caption) and a small
trained reader reads [text states, SEP, draft patches] in its place (reader.py):

    prompt ──LM (or the text cache)──> text states ──┐
    draft image ──ViT──> patch tokens ──projection──>├─ reader ──> states at draft patches ──heads──> ...

Frozen (never trained, no gradient to their weights): the LM, the ViT.
Trained (the glue): draft projection + separator, latent heads, alignment head, layer mix, token shift, reader,
decoder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from omni_gpt2o.backbones import FrozenLM, FrozenViT, load_image_encoder, load_text_encoder
from omni_gpt2o.config import OmniConfig
from omni_gpt2o.decoder import PixelDecoder
from omni_gpt2o.palette import Palette
from omni_gpt2o.reader import DraftReader, TextStandardizer


class DraftProjection(nn.Module):
    """ViT patch tokens -> the LM's (or the reader's) width, plus learned 2-D (row, column) positions."""

    def __init__(self, vit_width: int, gpt_width: int, grid: tuple[int, int]):
        super().__init__()
        self.proj = nn.Linear(vit_width, gpt_width)
        self.row = nn.Parameter(torch.randn(grid[0], 1, gpt_width) * 0.02)
        self.col = nn.Parameter(torch.randn(1, grid[1], gpt_width) * 0.02)

    def forward(self, patch_tokens: torch.Tensor) -> torch.Tensor:
        pos = (self.row + self.col).flatten(0, 1)  # (P, D), row-major like the ViT's patches
        return self.proj(patch_tokens) + pos


class LatentHeads(nn.Module):
    """The LM's (or reader's) state at each draft patch -> VAE posterior (mean, log-variance)."""

    def __init__(self, gpt_width: int, latent_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(gpt_width)
        self.mean = nn.Linear(gpt_width, latent_dim)
        self.logvar = nn.Linear(gpt_width, latent_dim)

    def forward(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.norm(states)
        return self.mean(h), self.logvar(h).clamp(-10.0, 10.0)


class LayerMix(nn.Module):
    """A learned softmax-weighted sum of GPT-2's layers (each normalised), as ELMo mixes its layers.

    It starts leaning on the input embeddings (`embedding_logit`: 2 gives them 65% of the mix at five
    layers), where each word is still itself: in later layers "square" carries the colour word before it,
    and a decoder reading those learns colour-shape pairs instead of shapes. The weights move slowly, so
    the start matters: at 60 TFLOP on the tuning split, 2 beat an even start by 9.7 and 12.7 points on
    single objects and 2.9 and 4.4 on pairs (bench/compute_to_bar.py, two seeds); 4 (93%) did not beat 2.
    """

    def __init__(self, layers: int, embedding_logit: float = 2.0):
        super().__init__()
        self.weights = nn.Parameter(torch.zeros(layers))
        with torch.no_grad():
            self.weights[0] = embedding_logit

    def forward(self, layers: Sequence[torch.Tensor]) -> torch.Tensor:
        w = self.weights.softmax(0).to(layers[0].dtype)
        return sum(w[i] * F.layer_norm(h, h.shape[-1:]) for i, h in enumerate(layers))


def state_before_each_token(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Token i gets token i - 1's state; the first real token (after left padding) gets zeros."""
    before = F.pad(states[:, :-1], (0, 0, 1, 0))
    real_before = F.pad(mask[:, :-1], (1, 0)).to(states.dtype).unsqueeze(-1)
    return before * real_before


def word_starts(tokenizer) -> torch.Tensor:
    """For each token id: does it begin a word (a leading space, GPT-2's "Ġ")? A word's other pieces do not."""
    pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    return torch.tensor([p.startswith("Ġ") for p in pieces])


def whole_words(starts: torch.Tensor, mask: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                shift_keys: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keys, values and mask over the words of a (left-padded) sequence instead of its pieces. `starts` (b, t):
    the token begins a word (the first real token and any token after padding always do). Each piece's value
    becomes the mean of its word's pieces so far, so a word's last piece holds the whole word; with
    `shift_keys` its key is the state before the word's first piece. Only last pieces stay in the mask."""
    real = mask.bool()
    real_before = F.pad(real[:, :-1], (1, 0))
    first = starts | ~real_before | ~real  # (b, t): this position begins a unit
    last = F.pad(first[:, 1:], (0, 1), value=True)  # the next position begins one, or this is the end
    position = torch.arange(first.shape[1], device=first.device).expand_as(first)
    start = torch.where(first, position, torch.zeros_like(position)).cummax(dim=1).values  # the unit's first piece
    summed = at_least_float32(values).cumsum(dim=1)
    before_start = (summed - at_least_float32(values)).gather(1, start.unsqueeze(-1).expand_as(summed))
    count = (position - start + 1).unsqueeze(-1).to(summed.dtype)
    values = ((summed - before_start) / count).to(values.dtype)
    if shift_keys:
        keys = state_before_each_token(keys, mask).gather(1, start.unsqueeze(-1).expand_as(keys))
    return keys, values, mask * last.to(mask.dtype)


@dataclass
class OmniOutput:
    image: torch.Tensor  # (B, 3, H, W), predicted clean picture in [-1, 1] (unclamped)
    mean: torch.Tensor  # (B, P, latent_dim)
    logvar: torch.Tensor  # (B, P, latent_dim)
    patch_embeds: torch.Tensor  # (B, P, vit_width): predicted ViT embedding of the clean picture
    palette_logits: torch.Tensor | None = None  # (B, K, H, W) with a palette; `image` is then their expected colour


class OmniGPT2o(nn.Module):
    def __init__(self, config: OmniConfig, text_encoder: FrozenLM, image_encoder: FrozenViT):
        super().__init__()
        self.config = config
        # Frozen.
        self.text_encoder = text_encoder.requires_grad_(False)
        self.image_encoder = image_encoder.requires_grad_(False)
        gpt_w, vit_w, grid = text_encoder.width, image_encoder.width, image_encoder.grid_size
        reads_draft = config.lm_reads_draft
        if reads_draft and text_encoder.max_text_tokens + 1 + image_encoder.num_patches > text_encoder.max_positions:
            raise ValueError("the LM has too few positions for max_text_tokens + 1 + the ViT's patches")
        self.read_layers = config.text_layers or tuple(range(text_encoder.num_layers + 1))
        if self.read_layers[-1] > text_encoder.num_layers:
            raise ValueError(f"text_layers {self.read_layers} past the LM's {text_encoder.num_layers} layers")
        state_w = gpt_w if reads_draft else config.reader_width  # the states the latent heads read
        # Trained.
        self.draft_projection = DraftProjection(vit_w, state_w, grid)
        self.separator = nn.Parameter(torch.randn(gpt_w) * 0.02)
        self.text_standardizer = TextStandardizer(len(self.read_layers), gpt_w) if config.text_standardize else None
        self.reader = None if reads_draft else DraftReader(gpt_w, config.reader_width, config.reader_layers,
                                                             config.reader_heads)
        self.latent_heads = LatentHeads(state_w, config.latent_dim)
        self.alignment_head = nn.Linear(state_w, vit_w)
        self.text_layer_mix = LayerMix(len(self.read_layers)) if config.text_layer_mix else None
        self.token_shift = nn.Linear(gpt_w, gpt_w, bias=False) if config.text_token_shift else None
        if self.token_shift is not None:
            nn.init.zeros_(self.token_shift.weight)  # starts as the plain context
        if config.decoder_whole_words:  # not saved: it comes with the tokenizer
            self.register_buffer("word_starts", word_starts(text_encoder.tokenizer), persistent=False)
        self.decoder = PixelDecoder(
            config.latent_dim, gpt_w, config.decoder_channels, config.decoder_attention_levels,
            config.decoder_blocks, config.decoder_heads, config.decoder_patch, config.decoder_pixel_channels,
            config.decoder_text_pool, config.decoder_palette,
        )
        self.palette = Palette(config.decoder_palette) if config.decoder_palette else None

    FROZEN = ("text_encoder", "image_encoder")

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The trained glue only: what a checkpoint's model.safetensors holds."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith(self.FROZEN)}

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def tokenize(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask = self.text_encoder.tokenize(prompts)
        device = self.separator.device
        return ids.to(device), mask.to(device)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[torch.Tensor]:
        """The frozen LM's states of the prompt alone, one (B, T, D) per layer read (`text_layers`; 0 is the
        input embeddings). They do not depend on the draft: what the text cache stores per caption."""
        layers = self.text_encoder(self.text_encoder.embed(input_ids), attention_mask, all_layers=True)
        return [layers[i] for i in self.read_layers]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, draft: torch.Tensor,
                strength: torch.Tensor, sample_latents: bool = False, draft_tokens: torch.Tensor | None = None,
                latent_noise: torch.Tensor | None = None, text_states: Sequence[torch.Tensor] | None = None,
                ) -> OmniOutput:
        """`sample_latents`: sample the VAE latent (with `latent_noise` as given, else fresh noise) instead of
        taking its mean. `draft_tokens`: the frozen ViT's view of `draft` when it is already at hand (guidance
        shares one ViT pass between its two halves). `text_states`: `encode_text`'s output when it is already at
        hand (the text cache; only with `lm_reads_draft=False`)."""
        b, t = input_ids.shape
        # 1. Frozen encoders read the prompt and the draft.
        if draft_tokens is None:
            draft_tokens = self.image_encoder(draft)
        read_words = self.config.decoder_word_values or self.token_shift is not None  # the input embeddings too
        mask = torch.cat([attention_mask, attention_mask.new_ones(b, 1 + draft_tokens.shape[1])], dim=1)
        if self.reader is None:
            # 2. Trained projection puts draft patches into the LM's input space, after a separator.
            text_embeds = self.text_encoder.embed(input_ids)
            draft_embeds = self.draft_projection(draft_tokens.to(text_embeds.dtype))
            sep = self.separator.to(text_embeds.dtype).expand(b, 1, -1)
            sequence = torch.cat([text_embeds, sep, draft_embeds], dim=1)
            # 3. The frozen LM reads text, separator and draft in one pass (gradients flow through it).
            if self.text_layer_mix is None and not read_words and self.config.text_layers is None:
                every = layers = (self.text_encoder(sequence, mask),)  # the last layer is all the decoder reads
            else:
                every = self.text_encoder(sequence, mask, all_layers=True)
                layers = [every[i] for i in self.read_layers]
            patch_states = every[-1][:, t + 1:]  # the last layer at the draft's patches: the latents' input
            text = [h[:, : t + 1] for h in layers]  # text + separator
        else:
            # 2-3. The frozen LM (or the cache) read the prompt alone; the separator follows it in every layer.
            states = self.encode_text(input_ids, attention_mask) if text_states is None else text_states
            sep = self.separator.to(states[0].dtype).expand(b, 1, -1)
            text = [torch.cat([h, sep], dim=1) for h in states]
        if self.text_standardizer is not None:
            text = self.text_standardizer(text)
        if self.training and self.config.text_noise > 0:  # no exact state of a training word to key on
            text = [h + self.config.text_noise * torch.randn_like(h) for h in text]
        context = text[-1] if self.text_layer_mix is None else self.text_layer_mix(text)
        # The words themselves (GPT-2's input embeddings): the attention's values, or added one token later.
        words = F.layer_norm(text[0], text[0].shape[-1:]) if read_words else None
        if self.token_shift is not None:  # each token plus the word before it
            context = context + self.token_shift(F.pad(words[:, :-1], (0, 0, 1, 0)))
        context_mask = mask[:, : t + 1]
        if self.reader is not None:  # the trained reader reads the draft beside the prompt
            patch_states = self.reader(context, context_mask, self.draft_projection(draft_tokens.to(context.dtype)))
        # 4. Trained heads: a VAE latent per patch, and the predicted ViT embedding (alignment).
        mean, logvar = self.latent_heads(patch_states)
        z = mean
        if sample_latents or latent_noise is not None:
            eps = latent_noise if latent_noise is not None else torch.randn(mean.shape, device=mean.device)
            z = mean + eps.to(mean.dtype) * torch.exp(0.5 * logvar)
        gh, gw = self.image_encoder.grid_size
        z_grid = z.transpose(1, 2).reshape(b, -1, gh, gw)
        # 5. Trained decoder draws the picture.
        keys, values = context, (words if self.config.decoder_word_values else None)
        if self.config.decoder_whole_words:  # " mag" + "enta" read as one word, found as one
            starts = F.pad(self.word_starts[input_ids], (0, 1), value=True)  # the separator is a word of its own
            keys, values, context_mask = whole_words(starts, context_mask, keys, context if values is None else values,
                                                     self.config.decoder_shifted_keys)
        elif self.config.decoder_shifted_keys:  # each word is picked by what came before it
            keys, values = state_before_each_token(context, context_mask), (context if values is None else values)
        image = logits = self.decoder(z_grid, draft, strength, keys, context_mask, values=values)
        if self.palette is not None:  # a score per palette colour at each pixel: the picture is their expectation
            image = self.palette.expected(logits)
        return OmniOutput(image=image, mean=mean, logvar=logvar, patch_embeds=self.alignment_head(patch_states),
                          palette_logits=logits if self.palette is not None else None)


@dataclass
class LossWeights:
    kl: float = 1e-3
    alignment: float = 0.0
    edge: float = 1.0
    palette: float = 1.0  # the cross-entropy of the palette's scores (only with a palette)


def at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """bf16/fp16 activations up to float32 for sums that must not round coarsely; float64 stays float64."""
    return x if x.dtype == torch.float64 else x.float()


def compute_losses(out: OmniOutput, clean: torch.Tensor, clean_tokens: torch.Tensor | None,
                   weights: LossWeights, palette: Palette | None = None) -> dict[str, torch.Tensor]:
    """Reconstruction (MSE) + edge x MSE of the pixel differences + kl x KL + alignment x (1 - cosine) with
    the frozen ViT's view of the clean picture (`clean_tokens`; None when the alignment weight is 0, so the
    ViT need not look at the clean picture) + palette x cross-entropy of the palette scores (with `palette`)."""
    image, clean = at_least_float32(out.image), at_least_float32(clean)
    recon = F.mse_loss(image, clean)
    # Outlines: the picture's horizontal and vertical differences. A square and a circle of the same colour
    # differ in few pixels, so plain MSE learns colour and place long before shape.
    edge = F.mse_loss(image.diff(dim=-1), clean.diff(dim=-1)) + F.mse_loss(image.diff(dim=-2), clean.diff(dim=-2))
    mean, logvar = at_least_float32(out.mean), at_least_float32(out.logvar)
    kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).mean()
    if clean_tokens is None:
        alignment = recon.new_zeros(())
    else:
        alignment = 1.0 - F.cosine_similarity(at_least_float32(out.patch_embeds), at_least_float32(clean_tokens),
                                              dim=-1).mean()
    total = recon + weights.edge * edge + weights.kl * kl + weights.alignment * alignment
    losses = {"loss": total, "recon": recon, "edge": edge, "kl": kl, "alignment": alignment}
    if palette is not None and out.palette_logits is not None:
        losses["palette"] = palette.loss(out.palette_logits, clean)
        losses["loss"] = total + weights.palette * losses["palette"]
    return losses


def build_model(config: OmniConfig, ckpt_dir: Path | None = None) -> OmniGPT2o:
    """Frozen backbones (from the checkpoint, the hub or a seed) plus fresh trained glue."""
    return OmniGPT2o(config, load_text_encoder(config, ckpt_dir), load_image_encoder(config, ckpt_dir))
