"""What a frozen LM knows of the unseen words, before any training (a benchmark, not a test).

    .venv/bin/python bench/lm_probe.py --preset smollm2      # the pretrained LM
    .venv/bin/python bench/lm_probe.py --preset tiny         # the random GPT-2: the control, near chance
    .venv/bin/python bench/lm_probe.py --word --template "A picture of {}."   # words around every caption

For every test-only word of docs/shapes.md ("crimson", "ball", "beneath", "слева", ...), a caption is made in
the grammar's frame with that word in place of its meaning ("a crimson circle on the left"), and beside it the
same caption with each training word of its category ("a red / green / ... circle on the left"). Per layer of the
LM, the caption's states are mean-pooled over its tokens and each dimension z-scored with the statistics of
400 training captions; the probe is right when the nearest training-word caption (cosine) is the one of the
word's own meaning. Chance is 1 in the category's size (1/6 for colours, 1/3 shapes, 1/2 sizes, 1/5 positions,
1/4 relations). Nothing is trained: this bounds what a decoder can learn to draw through the LM's states.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import torch

from omni_gpt2o.compute import describe_machine, machine_info
from omni_gpt2o.config import get_preset
from omni_gpt2o.data.shapes import (
    COLOURS,
    POSITIONS,
    RELATIONS,
    SHAPES,
    SIZE_RANGES,
    _article,
    captions_for_scene,
    sample_scene,
)
from omni_gpt2o.data.wordings import (
    COLOUR_WORDS,
    POSITION_WORDS,
    RELATION_WORDS,
    RU_COLOURS,
    RU_POSITIONS,
    RU_SHAPES,
    SHAPE_WORDS,
    SIZE_WORDS,
)
from omni_gpt2o.model import build_model

# category -> (frame with {} for the word, {meaning: test words}); the training words are the meanings.
CATEGORIES = {
    "colour": ("{} circle on the left", {c: COLOUR_WORDS[c] for c in COLOURS}),
    "shape": ("red {} on the left", {s: SHAPE_WORDS[s] for s in SHAPES}),
    "size": ("{} red circle on the left", {s: SIZE_WORDS[s] for s in SIZE_RANGES}),
    "position": ("a red circle {}", {p: POSITION_WORDS[p] for p in POSITIONS}),
    "relation": ("a red circle {} a blue square", {r: RELATION_WORDS[r] for r in RELATIONS}),
    "russian colour": ("{} circle on the left", {c: (RU_COLOURS[c][0],) for c in COLOURS}),
    "russian shape": ("red {} on the left", {s: (RU_SHAPES[s][0],) for s in SHAPES}),
    "russian position": ("a red circle {}", {p: (RU_POSITIONS[p],) for p in POSITIONS}),
}


def caption(frame: str, word: str) -> str:
    text = frame.format(word)
    return text if frame.startswith("a ") else f"{_article(text)} {text}"


@torch.no_grad()
def pooled(model, captions: list[str], spans: list[tuple[int, int]] | None = None) -> torch.Tensor:
    """(layers, captions, width): each layer's states mean-pooled over each caption's tokens (in the model's
    prompt template, whose tokens count too), or with `spans` over the tokens of each caption's characters
    [start, end) (the word that differs)."""
    tokenizer, template = model.text_encoder.tokenizer, model.text_encoder.prompt_template
    shift = len(template.split("{}")[0])
    spans = None if spans is None else [(a + shift, b + shift) for a, b in spans]
    enc = tokenizer([template.replace("{}", c) for c in captions], padding=True, return_tensors="pt",
                    return_offsets_mapping=True)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    weights = mask.double()
    if spans is not None:
        starts, ends = enc["offset_mapping"][..., 0], enc["offset_mapping"][..., 1]
        inside = torch.stack([(ends[i] > a) & (starts[i] < b) for i, (a, b) in enumerate(spans)])
        weights = weights * inside
    weights = (weights / weights.sum(1, keepdim=True)).unsqueeze(-1)
    every = model.text_encoder(model.text_encoder.embed(ids), mask, all_layers=True)
    return torch.stack([(h.double() * weights).sum(1) for h in every])


def _span(frame: str, word: str) -> tuple[int, int]:
    """Where `word` sits in `caption(frame, word)` (an article may come before the frame)."""
    start = len(caption(frame, word)) - len(frame.format(word)) + len(frame.split("{}")[0])
    return start, start + len(word)


def training_statistics(model, n: int = 400) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std per layer and dimension of the pooled states of `n` training scenes' captions."""
    rng = random.Random(0)
    captions = [c for _ in range(n) for c in captions_for_scene(sample_scene(rng, "train", 64), rng, k=1)]
    states = torch.cat([pooled(model, captions[i: i + 64]) for i in range(0, len(captions), 64)], dim=1)
    return states.mean(1, keepdim=True), states.std(1, keepdim=True).clamp(min=1e-6)


def probe(model, word: bool = False) -> dict[str, list[float]]:
    """Per category, the share of test words whose nearest training-word caption means the same, per layer;
    `word`: pooled over the differing word's tokens only, else over the whole caption."""
    out = {}
    mean, std = training_statistics(model)
    for name, (frame, table) in CATEGORIES.items():
        meanings = list(table)
        tests = [(meanings.index(m), w) for m, words in table.items() for w in words]
        train = pooled(model, [caption(frame, m) for m in meanings],
                       [_span(frame, m) for m in meanings] if word else None)
        test = pooled(model, [caption(frame, w) for _, w in tests],
                      [_span(frame, w) for _, w in tests] if word else None)
        a = torch.nn.functional.normalize((test - mean) / std, dim=-1)
        b = torch.nn.functional.normalize((train - mean) / std, dim=-1)
        nearest = torch.einsum("ltd,lmd->ltm", a, b).argmax(-1)  # (layers, tests)
        truth = torch.tensor([i for i, _ in tests])
        out[name] = (nearest == truth).double().mean(1).tolist()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="smollm2")
    parser.add_argument("--out", default="runs/lm_probe.jsonl")
    parser.add_argument("--word", action="store_true", help="pool the differing word's tokens, not the caption")
    parser.add_argument("--template", default="{}", help="words around every caption, {} for it "
                        "(the model's text_prompt_template)")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = build_model(get_preset(args.preset).replace(text_prompt_template=args.template)).eval()
    result = probe(model, args.word)
    layers = len(next(iter(result.values())))
    pooling = "the word" if args.word else "the caption"
    print(f"{args.preset}, template {args.template!r}, pooled over {pooling}: {describe_machine(machine_info())}")
    print(f"{'category':<18}" + "".join(f"{i:>5}" for i in range(layers)) + "   best")
    for name, row in result.items():
        best = max(range(layers), key=lambda i: row[i])
        print(f"{name:<18}" + "".join(f"{100 * v:5.0f}" for v in row) + f"   layer {best}: {100 * row[best]:.0f}%")
    mean = [sum(r[i] for r in result.values()) / len(result) for i in range(layers)]
    print(f"{'mean':<18}" + "".join(f"{100 * v:5.0f}" for v in mean))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a") as f:
        f.write(json.dumps({"preset": args.preset, "word": args.word, "template": args.template, "probe": result,
                            "machine": machine_info()}) + "\n")


if __name__ == "__main__":
    main()
